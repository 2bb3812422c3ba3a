"""`python -m pipelines.build_mixture`: curate the inputs into Keye-VL training shards.

Today this runs the curation stages (pipelines/curate.py) and writes the shards; the
five-mode cold-start mixture (thinking, non-thinking, auto-think, think-with-image and
video, mixed to token ratios) is added to this pipeline between curation and writing.
"""
from __future__ import annotations

import sys

from pipelines.curate import build_curate


def build_mixture(p, cfg, out_dir):
    return build_curate(p, cfg, out_dir, pipeline_name="build_mixture")


if __name__ == "__main__":
    from pipelines.launch import main

    sys.exit(main("build_mixture"))
