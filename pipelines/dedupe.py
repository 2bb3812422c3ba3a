"""Exact-duplicate removal: group by content key, keep the smallest id (filters/exact.py).

One shuffle keyed by the SHA-256 content key; no worker holds more than one key's rows,
and the representative is chosen without materialising the group twice in memory. The rows
cross it without their media bytes (they wait in the blob store, pipelines/blobstore.py): a
keys-only grouping would need a second shuffle to join the decision back, which moves as much.
"""
from __future__ import annotations

import apache_beam as beam

from filters.base import reject_sample
from filters.exact import content_key, pick_representative
from pipelines.common import KEPT, REJECTED, count_kept, rejected_output
from schemas.config import Config
from schemas.reasons import Reason, Stage


class _KeepOne(beam.DoFn):
    def process(self, element):
        key, samples = element
        keep = pick_representative([s.id for s in samples])
        kept = False
        for s in samples:
            if s.id == keep and not kept:
                kept = True
                count_kept(Stage.EXACT_DEDUPE.value)
                yield s
            else:
                r = reject_sample(s, Stage.EXACT_DEDUPE, Reason.EXACT_DUPLICATE,
                                  f"content key {key[:16]}", dup_of=keep)
                yield rejected_output(r)


class ExactDedupe(beam.PTransform):
    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.cfg = cfg

    def expand(self, samples):
        out = (samples
               | "KeyByContent" >> beam.Map(lambda s: (content_key(s), s))
               | "GroupByContent" >> beam.GroupByKey()
               | "KeepOne" >> beam.ParDo(_KeepOne()).with_outputs(REJECTED, main=KEPT))
        return {KEPT: out[KEPT], REJECTED: out[REJECTED]}
