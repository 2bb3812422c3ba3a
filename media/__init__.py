"""Beam-free media handling: fetching bytes (decoding and Keye frame sampling build on it)."""
