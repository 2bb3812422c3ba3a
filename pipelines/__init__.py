"""Beam pipelines: thin composite PTransforms, one per stage, over the Beam-free packages."""
