"""The per-row step contract every simple stage follows (datatrove's small step, typed).

A step is a plain object: `setup()` loads what it needs once per worker (a tokenizer, a
model; an optional `teardown()` releases it); calling it with a `Sample` returns the sample (scores added, text normalised...)
or a `Rejected` row saying why not. Steps never raise on bad data. `pipelines.common.
ApplyStep` runs any step as a Beam stage with counters; tests call steps directly.
"""
from __future__ import annotations

from typing import Protocol

from schemas.reasons import Stage
from schemas.rejected import StepResult, reject_sample  # noqa: F401 - the contract's names, where steps look
from schemas.sample import Sample


class Step(Protocol):
    stage: Stage

    def setup(self) -> None: ...

    def __call__(self, sample: Sample) -> StepResult: ...
