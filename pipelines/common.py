"""What every stage shares: the kept/rejected output pair and running a Beam-free step.

Each stage is a composite PTransform that returns `{KEPT: samples, REJECTED: rejected}`;
`pipelines.curate` threads KEPT from stage to stage and flattens every REJECTED, so no row
can leave the pipeline without landing in one of the two.
"""
from __future__ import annotations

from typing import Optional

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.pvalue import TaggedOutput

from filters.base import Step
from pipelines import progress
from schemas.rejected import Rejected

KEPT = "kept"
REJECTED = "rejected"
METRICS_NAMESPACE = "keye"


def count_kept(stage: str, n: int = 1) -> None:
    Metrics.counter(METRICS_NAMESPACE, f"{stage}/kept").inc(n)
    progress.count(stage, "kept", n)


def count_rejected(rejected: Rejected) -> None:
    Metrics.counter(METRICS_NAMESPACE, f"{rejected.stage}/rejected/{rejected.reason}").inc()
    progress.count(rejected.stage, rejected.reason)


class _StepDoFn(beam.DoFn):
    def __init__(self, step: Step) -> None:
        self.step = step

    def setup(self) -> None:
        self.step.setup()

    def teardown(self) -> None:
        teardown = getattr(self.step, "teardown", None)
        if teardown is not None:
            teardown()

    def process(self, element):
        out = self.step(element)
        if isinstance(out, Rejected):
            count_rejected(out)
            yield TaggedOutput(REJECTED, out)
        else:
            count_kept(self.step.stage.value)
            yield out


class ApplyStep(beam.PTransform):
    """Run a per-row step as a stage; optional Reshuffle first and resource hints."""

    def __init__(self, step: Step, reshuffle: bool = False, hints: Optional[dict] = None) -> None:
        super().__init__()
        self.step = step
        self.reshuffle = reshuffle
        self.hints = hints or {}

    def expand(self, pcoll):
        if self.reshuffle:
            pcoll = pcoll | "Spread" >> beam.Reshuffle()
        pardo = beam.ParDo(_StepDoFn(self.step))
        if self.hints:
            pardo = pardo.with_resource_hints(**self.hints)
        out = pcoll | "Apply" >> pardo.with_outputs(REJECTED, main=KEPT)
        return {KEPT: out[KEPT], REJECTED: out[REJECTED]}
