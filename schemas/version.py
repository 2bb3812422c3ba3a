"""The pipeline version recorded in every row's provenance and in the manifest."""
PIPELINE_VERSION = "0.1.0"
