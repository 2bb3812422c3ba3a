"""Beam-free measurements and decisions: each filter computes stats, then decides by threshold."""
