"""Reading a pipeline output folder as the manifest accounted it: shard list, sha256, rows.

    OUT/manifest.json (or OUT/shards.parquet) ─▶ ShardInfo(path, rows, bytes, sha256)
    read_verified(shard) ─▶ bytes, checked against sha256 (ShardMismatch names the shard)
    wds_rows(bytes)      ─▶ Sample + blobs per tar key      (the `webdataset` library's tar iterator)
    parquet_rows(bytes, tar bytes) ─▶ the same from a Parquet shard and its tar's members

The chat layout and system prompt the pipeline counted tokens with come from the manifest's
recipe (`tokens`), so the trainer renders each folder exactly as its counts were made.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass
from typing import Iterator, Optional

from schemas.manifest import SHARD_INDEX_FILE, ShardInfo, read_shard_index
from schemas.sample import Sample


class ShardMismatch(ValueError):
    """A shard whose bytes do not match the manifest (changed, truncated or missing)."""


@dataclass
class OutputFolder:
    root: str
    shards: dict[str, list[ShardInfo]]     # kind (wds | parquet) -> shards, in path order
    layout: str
    system_prompt: Optional[str]
    tokenizer: str
    rows: int            # rows in the kept shards (a mixture writes derived rows: more than totals.kept)
    media: dict          # the pipeline recipe's `media` section (sampling bounds: what generation reproduces)

    @classmethod
    def open(cls, root: str) -> "OutputFolder":
        with open(os.path.join(root, "manifest.json"), encoding="utf-8") as f:
            manifest = json.load(f)
        shards = _shard_index(root) or {k: [ShardInfo(**s) for s in v]
                                         for k, v in (manifest.get("shards") or {}).items()}
        tokens = (manifest.get("config") or {}).get("tokens") or {}
        return cls(root=root, shards={k: sorted(v, key=lambda s: s.path) for k, v in shards.items()},
                   layout=tokens.get("chat_layout", "keye_preview"), system_prompt=tokens.get("system_prompt"),
                   tokenizer=tokens.get("tokenizer", "builtin:qwen3"),
                   rows=sum(s.rows for s in shards.get("wds") or shards.get("parquet") or []),
                   media=(manifest.get("config") or {}).get("media") or {})

    def render_info(self) -> dict:
        return {"chat_layout": self.layout, "system_prompt": self.system_prompt, "media": self.media}

    @property
    def stored_kind(self) -> str:
        """The shard kind that holds every row with its media: Parquet (with paired tars) where listed."""
        return "parquet" if self.shards.get("parquet") else "wds"

    def list(self, kind: str) -> list[ShardInfo]:
        if not self.shards.get(kind):
            raise ShardMismatch(f"{self.root}: the manifest lists no {kind} shards")
        return self.shards[kind]


def _shard_index(root: str) -> Optional[dict[str, list[ShardInfo]]]:
    """`shards.parquet` (kind, path, rows, bytes, sha256), where the writer keeps the list there."""
    if not os.path.exists(os.path.join(root, SHARD_INDEX_FILE)):
        return None
    return read_shard_index(root)


def read_verified(root: str, shard: ShardInfo, verify: bool = True) -> bytes:
    path = os.path.join(root, shard.path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise ShardMismatch(f"{path}: listed in the manifest but missing") from None
    if verify:
        digest = hashlib.sha256(data).hexdigest()
        if len(data) != shard.bytes or digest != shard.sha256:
            raise ShardMismatch(f"{path}: {len(data)} bytes sha256 {digest[:16]}..., the manifest says "
                                f"{shard.bytes} bytes sha256 {shard.sha256[:16]}...")
    return data


def tar_members(data: bytes, url: str = "") -> Iterator[dict]:
    """Samples of a WebDataset tar as the `webdataset` library groups them: {"__key__", ext: bytes}."""
    from webdataset.tariterators import group_by_keys, tar_file_iterator

    yield from group_by_keys({**f, "__url__": url} for f in tar_file_iterator(io.BytesIO(data)))


def wds_rows(data: bytes) -> Iterator[Sample]:
    for d in tar_members(data):
        key = d["__key__"]
        sample = Sample.from_row(json.loads(d["json"]))
        sample.blobs = {f"{key}.{ext}": v for ext, v in d.items()
                        if not ext.startswith("__") and ext != "json" and isinstance(v, bytes)}
        yield sample


def parquet_rows(data: bytes, tar: Optional[bytes], need_media: bool = True) -> Iterator[Sample]:
    """Rows of a Parquet shard; their media members come from the shard's tar (same part name)."""
    import pyarrow.parquet as pq

    blobs: dict[str, bytes] = {}
    if tar is not None:
        for d in tar_members(tar):
            blobs.update({f"{d['__key__']}.{ext}": v for ext, v in d.items()
                          if not ext.startswith("__") and ext != "json" and isinstance(v, bytes)})
    for row in pq.read_table(io.BytesIO(data)).to_pylist():
        sample = Sample.from_row(row)
        if not need_media:
            yield sample
            continue
        names = [m for item in sample.media for m in item.members]
        missing = [m for m in names if m not in blobs]
        if missing:
            raise ShardMismatch(f"row {sample.id}: media members {missing[:3]} are not in the shard's tar")
        sample.blobs = {m: blobs[m] for m in names}
        yield sample


def paired_tar(folder: OutputFolder, parquet_shard: ShardInfo) -> Optional[ShardInfo]:
    name = os.path.splitext(os.path.basename(parquet_shard.path))[0]
    for s in folder.shards.get("wds") or []:
        if os.path.splitext(os.path.basename(s.path))[0] == name:
            return s
    return None


def shard_rows(folder: OutputFolder, shard: ShardInfo, kind: str, verify: bool = True) -> Iterator[Sample]:
    """The rows of one listed shard ("wds" or "parquet", whose media come from its paired tar), verified."""
    data = read_verified(folder.root, shard, verify)
    if kind == "parquet":
        tar = paired_tar(folder, shard)
        return parquet_rows(data, read_verified(folder.root, tar, verify) if tar else None)
    return wds_rows(data)


def folder_samples(folder: OutputFolder, verify: bool = True) -> Iterator[Sample]:
    """Every row of a folder's stored shards, in path order (small folders and tools; training streams
    rows through trainer.data instead)."""
    for shard in folder.list(folder.stored_kind):
        yield from shard_rows(folder, shard, folder.stored_kind, verify)
