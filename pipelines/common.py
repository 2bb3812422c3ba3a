"""What every stage shares: the kept/rejected output pair and running a Beam-free step.

Each stage is a composite PTransform that returns `{KEPT: samples, REJECTED: rejected}`;
`pipelines.curate` threads KEPT from stage to stage and flattens every REJECTED, so no row
can leave the pipeline without landing in one of the two.
"""
from __future__ import annotations

import traceback
from typing import Callable, Optional, TypeVar, Union

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.pvalue import TaggedOutput

from filters.base import Step
from pipelines import progress
from schemas.blobs import BlobUnreadable
from schemas.reasons import Reason
from schemas.rejected import Rejected, reject
from schemas.sample import Sample

KEPT = "kept"
REJECTED = "rejected"
METRICS_NAMESPACE = "keye"


def count_kept(stage: str, n: int = 1) -> None:
    Metrics.counter(METRICS_NAMESPACE, f"{stage}/kept").inc(n)
    progress.count(stage, "kept", n)


def count_rejected(rejected: Rejected) -> None:
    Metrics.counter(METRICS_NAMESPACE, f"{rejected.stage}/rejected/{rejected.reason}").inc()
    progress.count(rejected.stage, rejected.reason)


def rejected_output(rejected: Rejected) -> TaggedOutput:
    """Count a rejected row and tag it for the stage's REJECTED output: `yield rejected_output(r)`."""
    count_rejected(rejected)
    return TaggedOutput(REJECTED, rejected)


def stage_counter(stage: str, name: str):
    """A stage's own Beam counter, `keye:<stage>/<name>` (beside its kept/rejected counts)."""
    return Metrics.counter(METRICS_NAMESPACE, f"{stage}/{name}")


def step_error(stage: str, element, exc: BaseException) -> Rejected:
    """A dead-letter row: the stage's code raised on this element. The run goes on; the row,
    the exception and the innermost frames are kept so the bug can be found and the row rerun.
    A stored media member that cannot be read back (schemas/blobs.py) is no bug of the stage:
    `blob_unreadable`, with what was wrong."""
    if isinstance(exc, BlobUnreadable):
        return reject(stage, Reason.BLOB_UNREADABLE, getattr(element, "source", "?"), getattr(element, "source_ref", "?"),
                      f"media member unreadable: {exc}", id=getattr(element, "id", None),
                      payload=element.to_json() if isinstance(element, Sample) else None)
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__, limit=-3))
    source = getattr(element, "source", "?")
    ref = getattr(element, "source_ref", "?")
    try:
        payload = element.to_json() if isinstance(element, Sample) else getattr(element, "raw", None)
    except Exception:  # noqa: BLE001 - the row itself may be what is broken
        payload = None
    return reject(stage, Reason.STEP_ERROR, source, ref, f"{type(exc).__name__}: {exc}\n{tb}",
                  id=getattr(element, "id", None), payload=payload)


T = TypeVar("T")


def dead_letter(stage: str, element, work: Callable[[], T]) -> Union[T, Rejected]:
    """`work()`, or the element's step_error row if it raises: the one dead-letter behaviour of
    every stage (a bug on one odd row costs that row, never the job). Callers that yield make
    `work` return a list, so a row is never both emitted and rejected."""
    try:
        return work()
    except Exception as e:  # noqa: BLE001 - dead-letter: one odd row must not fail the job
        return step_error(stage, element, e)


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
        out = dead_letter(self.step.stage.value, element, lambda: self.step(element))
        if isinstance(out, Rejected):
            yield rejected_output(out)
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


def sum_tuples(tuples) -> tuple:
    """Element-wise sum of equal-length tuples of counts: a combiner for several counts at once
    (`CombinePerKey(sum_tuples)`); () for no input."""
    total: list = []
    for t in tuples:
        total = [a + b for a, b in zip(total, t)] if total else list(t)
    return tuple(total)
