"""The per-row step contract every simple stage follows (datatrove's small step, typed).

A step is a plain object: `setup()` loads what it needs once per worker (a tokenizer, a
model; an optional `teardown()` releases it); calling it with a `Sample` returns the sample (scores added, text normalised...)
or a `Rejected` row saying why not. Steps never raise on bad data. `pipelines.common.
ApplyStep` runs any step as a Beam stage with counters; tests call steps directly.
"""
from __future__ import annotations

from typing import Protocol, Union

from schemas.reasons import Reason, Stage
from schemas.rejected import Rejected, reject
from schemas.sample import Sample

StepResult = Union[Sample, Rejected]


class Step(Protocol):
    stage: Stage

    def setup(self) -> None: ...

    def __call__(self, sample: Sample) -> StepResult: ...


def reject_sample(sample: Sample, stage: Stage, reason: Reason, detail: str = "", *,
                  dup_of: str | None = None) -> Rejected:
    """A Rejected row for a sample that got past ingest; its payload is the row's JSON."""
    payload = sample.to_json()
    return reject(stage, reason, sample.source, sample.source_ref, detail, id=sample.id,
                  dup_of=dup_of, payload=payload)
