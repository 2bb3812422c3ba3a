"""Beam-free readers that turn manifest files into raw rows, one per input row."""
