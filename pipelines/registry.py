"""Pipelines by name, for `python beam_runner.py NAME` and `python -m pipelines.NAME`."""
from __future__ import annotations

from pipelines.build_mixture import build_mixture
from pipelines.curate import build_curate

PIPELINES = {
    "curate": build_curate,
    "build_mixture": build_mixture,
}
