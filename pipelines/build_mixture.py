"""`python -m pipelines.build_mixture`: Keye-VL's Phase II cold-start mixture from raw sources.

    ingest -> the curation stages (pipelines/curate.py) -> Mixture (pipelines/mixture.py: mode
    builders, video variants at 16 and 32 frames, quality gates, shares) -> write

Every kept row is a `task: cold_start` sample with its `mode`; the manifest balances input rows
(`input == kept + rejected`, an input row being kept when one of its derived rows is), balances
derived rows (`derived.made == kept + rejected`), and reports target and achieved shares per
category (`mixture`). `python -m pipelines.export --format swift|llava OUT_DIR` turns the
output into trainer layouts.
"""
from __future__ import annotations

import sys

from pipelines.common import KEPT, REJECTED
from pipelines.curate import curate, write_outputs
from pipelines.manifest import Fanout
from pipelines.mixture import KEPT_INPUTS, MADE, SHARES, Mixture


def build_mixture(p, cfg, out_dir, pipeline_name: str = "build_mixture"):
    import apache_beam as beam

    raw, curated, curation_rejected = curate(p, cfg, out_dir)
    mixed = curated | "Mixture" >> Mixture(cfg)
    rejected = (curation_rejected, mixed[REJECTED]) | "AllRejected" >> beam.Flatten()
    fanout = Fanout(kept_inputs=mixed[KEPT_INPUTS], made=mixed[MADE], shares=mixed[SHARES])
    return write_outputs(raw, mixed[KEPT], rejected, cfg, out_dir, pipeline_name, fanout=fanout)


if __name__ == "__main__":
    from pipelines.launch import main

    sys.exit(main("build_mixture"))
