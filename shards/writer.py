"""Deterministic, atomic shard writing: Parquet and WebDataset tars.

Which rows go to which shard is decided from the rows alone (a hash of the id picks a
bucket; a bucket is sorted by id and cut by the row and byte limits), so the same input
and recipe give the same shards byte for byte on any runner and any number of workers.
Each shard is written under a temporary name and renamed into place, so a reader never
sees a partial shard, and a retried bundle rewrites identical bytes.
"""
from __future__ import annotations

import hashlib
import io
import math
import posixpath
import tarfile
import uuid
from typing import Callable, Iterable, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from schemas.manifest import ShardInfo
from schemas.sample import Sample, member_order

TAR_HEADER_BYTES = 512


class HashingWriter(io.RawIOBase):
    """A write-only file that forwards bytes and keeps their SHA-256 and count."""

    def __init__(self, sink) -> None:
        super().__init__()
        self._sink = sink
        self._sha = hashlib.sha256()
        self.bytes_written = 0

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        mv = memoryview(b).cast("B")
        self._sink.write(mv)
        self._sha.update(mv)
        self.bytes_written += len(mv)
        return len(mv)

    def tell(self) -> int:
        return self.bytes_written

    def hexdigest(self) -> str:
        return self._sha.hexdigest()


def atomic_write(out_dir: str, relpath: str, kind: str, rows: int,
                 write: Callable[[HashingWriter], None]) -> ShardInfo:
    """Write through `write` to a temporary name, then rename to out_dir/relpath."""
    from apache_beam.io.filesystems import FileSystems

    final = FileSystems.join(out_dir, relpath)
    folder, name = posixpath.split(relpath)
    tmp = FileSystems.join(out_dir, folder, f".tmp-{name}-{uuid.uuid4().hex}")
    with FileSystems.create(tmp) as sink:
        hw = HashingWriter(sink)
        write(hw)
    if FileSystems.exists(final):  # a retried bundle: identical bytes by construction
        FileSystems.delete([final])
    FileSystems.rename([tmp], [final])
    return ShardInfo(kind=kind, path=relpath, rows=rows, bytes=hw.bytes_written, sha256=hw.hexdigest())


def parquet_writer(rows: Sequence[dict], schema: pa.Schema, compression: str,
                   row_group_rows: int) -> Callable[[HashingWriter], None]:
    def write(f: HashingWriter) -> None:
        write_table(pa.Table.from_pylist(list(rows), schema=schema), f, compression, row_group_rows)
    return write


def write_table(table: pa.Table, f, compression: str, row_group_rows: int) -> None:
    """One Parquet file with the recipe's compression ("none" for none) and row-group size."""
    pq.write_table(table, f, compression=None if compression == "none" else compression,
                   row_group_size=max(1, row_group_rows))


def wds_writer(samples: Sequence[Sample]) -> Callable[[HashingWriter], None]:
    """KEY.json (the row) then each blob (named KEY.<suffix>), with fixed tar metadata."""
    def write(f: HashingWriter) -> None:
        with tarfile.open(fileobj=f, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            for s in samples:
                _add_member(tar, f"{s.id}.json", s.to_json())
                for name in sorted(s.blobs, key=member_order):
                    _add_member(tar, name, s.blobs[name])
    return write


def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    info.mode = 0o444
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))


# --- sharding plan ---------------------------------------------------------------------------
def payload_bytes(sample: Sample) -> int:
    """Approximate WebDataset bytes of a sample: what the byte limit is applied to."""
    return (len(sample.to_json()) + sum(len(b) for b in sample.blobs.values())
            + TAR_HEADER_BYTES * (2 + len(sample.blobs)))


def num_buckets(total_rows: int, total_bytes: int, max_rows: int, max_bytes: int) -> int:
    """Enough buckets that an average bucket fits one shard."""
    return max(1, math.ceil(total_rows / max(1, max_rows)), math.ceil(total_bytes / max(1, max_bytes)))


def bucket_of(key: str, buckets: int) -> int:
    return int.from_bytes(hashlib.sha1(key.encode("utf-8")).digest()[:8], "big") % buckets


def cut(items: Iterable, size: Callable[[object], int], max_rows: int, max_bytes: int) -> list[list]:
    """Cut an ordered sequence into consecutive pieces within both limits (one item may exceed max_bytes)."""
    pieces, current, current_bytes = [], [], 0
    for item in items:
        b = size(item)
        if current and (len(current) >= max_rows or current_bytes + b > max_bytes):
            pieces.append(current)
            current, current_bytes = [], 0
        current.append(item)
        current_bytes += b
    if current:
        pieces.append(current)
    return pieces


def shard_name(bucket: int, piece: int) -> str:
    return f"part-{bucket:05d}-{piece:03d}"
