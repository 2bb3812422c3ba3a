"""YAML recipes; a package so the recipes ship with the code to workers and installed copies."""
