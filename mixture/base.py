"""The contract between the per-mode builders (Beam-free) and `pipelines/mixture.py`.

A builder is a step that may fan out: `setup()` once per worker (a generator client, the
sandbox), `wants(sample)` says whether the row is material for this mode (a pure function of
the row, so routing is deterministic on any runner), and calling it returns the derived rows
(zero or more, each with its own stable id from `derived_id`) or one `Rejected` row saying why
the input yields nothing. Builders never raise on bad data.
"""
from __future__ import annotations

from typing import Protocol, Union

from schemas.rejected import Rejected
from schemas.sample import CATEGORIES, Sample

__all__ = ["CATEGORIES", "BuildResult", "ModeBuilder", "derived_id"]

BuildResult = Union[list[Sample], Rejected]


class ModeBuilder(Protocol):
    category: str                     # one of CATEGORIES

    def setup(self) -> None: ...

    def wants(self, sample: Sample) -> bool: ...

    def __call__(self, sample: Sample) -> BuildResult: ...


def derived_id(parent_id: str, tag: str) -> str:
    """A derived row's id: stable, distinct per tag (`<id>@32f`, `<id>@think`)."""
    if not tag or "@" in tag:
        raise ValueError(f"bad derived-id tag {tag!r}")
    return f"{parent_id}@{tag}"
