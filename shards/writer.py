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

from schemas.blobs import total_blob_bytes
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
    return (len(sample.to_json()) + total_blob_bytes(sample.blobs)     # stored members are not read
            + TAR_HEADER_BYTES * (2 + len(sample.blobs)))


# Buckets are sized to hold BUCKET_FILL of a shard on average: a hash spreads rows over buckets
# unevenly (binomially), and a bucket just over the limit would otherwise be cut into a full shard
# and a sliver. With the slack, nearly every bucket is one shard; one that is not is cut into
# equal pieces, so nearly all shards hold between half and all of the limit.
BUCKET_FILL = 0.75


def num_buckets(total_rows: int, total_bytes: int, max_rows: int, max_bytes: int) -> int:
    """Enough buckets that an average bucket fills BUCKET_FILL of one shard."""
    return max(1, math.ceil(total_rows / max(1.0, BUCKET_FILL * max_rows)),
               math.ceil(total_bytes / max(1.0, BUCKET_FILL * max_bytes)))


def bucket_of(key: str, buckets: int) -> int:
    return int.from_bytes(hashlib.sha1(key.encode("utf-8")).digest()[:8], "big") % buckets


def cut(items: Iterable, size: Callable[[object], int], max_rows: int, max_bytes: int) -> list[list]:
    """Cut an ordered sequence into consecutive pieces within both limits, of about equal rows and
    bytes: the fewest pieces the limits allow, each item placed by its share of rows and bytes
    before it (one item may exceed max_bytes on its own)."""
    items = list(items)
    sizes = [size(x) for x in items]
    if not items:
        return []
    # pieces by rows and by bytes, each balanced on its own; a piece's bytes are at most bytes_per
    # plus its last item, hence the slack of one (not huge) item under the limit
    slack = min(max(sizes), max_bytes // 2)
    k_rows = max(1, math.ceil(len(items) / max(1, max_rows)))
    k_bytes = max(1, math.ceil(sum(sizes) / max(1, max_bytes - slack)))
    rows_per, bytes_per = len(items) / k_rows, max(1.0, sum(sizes) / k_bytes)
    balanced: list[list[int]] = []
    before, piece_of_last = 0, -1
    for j, b in enumerate(sizes):
        piece = int(max(j / rows_per, before / bytes_per))
        if not balanced or piece > piece_of_last:
            balanced.append([])
            piece_of_last = piece
        balanced[-1].append(j)
        before += b
    pieces = []
    for idx in balanced:   # the limits hold whatever the balance: split a piece that breaks one
        current, current_bytes = [], 0
        for j in idx:
            if current and (len(current) >= max_rows or current_bytes + sizes[j] > max_bytes):
                pieces.append(current)
                current, current_bytes = [], 0
            current.append(items[j])
            current_bytes += sizes[j]
        pieces.append(current)
    return pieces


def shard_name(bucket: int, piece: int, buckets: int = 0) -> str:
    """part-BBBBB-PPP; the bucket number is as wide as the largest one needs (at least 5 digits),
    so names sort in bucket order at any bucket count."""
    width = max(5, len(str(max(0, buckets - 1))))
    return f"part-{bucket:0{width}d}-{piece:03d}"
