"""Beam-free shard writing: deterministic bucketing, Parquet and WebDataset, atomic renames."""
