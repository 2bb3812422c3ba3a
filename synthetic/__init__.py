"""Deterministic synthetic input corpus (images, videos, captions, QA, text, planted defects) for testing the pipeline."""
