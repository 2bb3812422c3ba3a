"""The rejected row: every input row that is not kept ends here, with a stage and a reason."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Optional, Union

import pyarrow as pa

from schemas.reasons import Reason, Stage
from schemas.sample import Sample
from schemas.strings import display_text


@dataclass
class Rejected:
    stage: str                      # a schemas.reasons.Stage value
    reason: str                     # a schemas.reasons.Reason value
    source: str
    source_ref: str                 # relative file path and locator (line, row, member key)
    detail: str = ""                # human-readable specifics (field name, sizes, exception text)
    id: Optional[str] = None        # the sample id, once one was assigned
    dup_of: Optional[str] = None    # for duplicates: the id of the row that was kept
    payload: Optional[bytes] = None  # the original row; the writer drops it past ingest.max_payload_bytes
    payload_bytes: Optional[int] = None  # size of the original row, even when payload is dropped

    def to_row(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def capped(self, max_payload_bytes: int) -> "Rejected":
        """This row as written: the payload kept only when at most max_payload_bytes (its size stays)."""
        if self.payload is None or len(self.payload) <= max_payload_bytes:
            return self
        return dataclasses.replace(self, payload=None)

    def sort_key(self) -> tuple:
        """Shard order. One input row can have several rejected rows (derived rows of the mixture share
        its source_ref), so the id and detail break ties: the order never depends on arrival."""
        return (self.source, self.source_ref, self.stage, self.reason, self.id or "", self.detail)


def reject(stage: Union[Stage, str], reason: Union[Reason, str], source: str, source_ref: str,
           detail: str = "", *, id: Optional[str] = None, dup_of: Optional[str] = None,
           payload: Union[bytes, str, None] = None, payload_size: Optional[int] = None) -> Rejected:
    """Build a Rejected row. The payload travels whole (a row is never bigger in flight rejected than
    kept); the rejected writer applies ingest.max_payload_bytes, in one place (`Rejected.capped`).
    payload_size records the original size when the payload itself was already dropped (by a reader)."""
    if isinstance(payload, str):
        payload = payload.encode("utf-8", errors="surrogatepass")
    size = len(payload) if payload is not None else payload_size
    # Every string here reaches a UTF-8 writer: names and error texts are shown escaped
    # (schemas/strings.py), so a bad name costs nothing but its looks.
    return Rejected(stage=Stage(stage).value, reason=Reason(reason).value, source=display_text(source),
                    source_ref=display_text(source_ref), detail=display_text(detail[:2000]),
                    id=None if id is None else display_text(id),
                    dup_of=None if dup_of is None else display_text(dup_of),
                    payload=payload, payload_bytes=size)


# What a per-row step returns (filters/base.py: Step); here, below filters/ and media/, so both
# layers can reject a row without importing each other.
StepResult = Union[Sample, Rejected]


def reject_sample(sample: Sample, stage: Stage, reason: Reason, detail: str = "", *,
                  dup_of: str | None = None) -> Rejected:
    """A Rejected row for a sample that got past ingest; its payload is the row's JSON."""
    payload = sample.to_json()
    return reject(stage, reason, sample.source, sample.source_ref, detail, id=sample.id,
                  dup_of=dup_of, payload=payload)


REJECTED_SCHEMA = pa.schema([
    ("stage", pa.string()),
    ("reason", pa.string()),
    ("source", pa.string()),
    ("source_ref", pa.string()),
    ("detail", pa.string()),
    ("id", pa.string()),
    ("dup_of", pa.string()),
    ("payload", pa.large_binary()),
    ("payload_bytes", pa.int64()),
])
