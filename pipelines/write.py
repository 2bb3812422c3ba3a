"""Write stage: kept samples to Parquet + WebDataset shards, rejected rows to Parquet shards, and
the CLIP embeddings of kept samples to a Parquet sidecar.

Sharding is deterministic and needs no single-worker pass over the data: one global
combine counts rows and bytes, which fixes the number of buckets; each row's bucket is a
hash of its key; each bucket is grouped, sorted and cut into shards by the row and byte
limits (shards/writer.py). A bucket holds about one shard of data, so workers stay bounded.
With a blob store the bucket's rows hold references to their media: the shuffle moves metadata,
and the tar writer reads each member from the store as it copies it (one member in memory).
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import apache_beam as beam
import numpy as np
import pyarrow as pa

from pipelines.common import stage_counter
from schemas.config import OutputConfig
from schemas.rejected import REJECTED_SCHEMA, Rejected
from schemas.sample import SAMPLE_SCHEMA, Sample
from shards.writer import (atomic_write, bucket_of, cut, num_buckets, parquet_writer, payload_bytes,
                           shard_name, wds_writer, write_table)


def sum_pairs(pairs):
    """Element-wise sum of (a, b) pairs: a CombineGlobally function."""
    rows = total = 0
    for r, b in pairs:
        rows += r
        total += b
    return rows, total


class _ShardedWrite(beam.PTransform):
    """Bucket, sort and cut a PCollection into shards; `write_piece` writes one shard's files."""

    def __init__(self, key: Callable, sort_key: Callable, size: Callable, max_rows: int,
                 max_bytes: int, write_piece: Callable) -> None:
        super().__init__()
        self.key, self.sort_key, self.size = key, sort_key, size
        self.max_rows, self.max_bytes, self.write_piece = max_rows, max_bytes, write_piece

    def expand(self, pcoll):
        size, max_rows, max_bytes = self.size, self.max_rows, self.max_bytes
        key, sort_key, write_piece = self.key, self.sort_key, self.write_piece
        sized = pcoll | "Size" >> beam.Map(lambda x: (x, size(x)))
        buckets = (sized
                   | "RowsAndBytes" >> beam.Map(lambda xs: (1, xs[1]))
                   | "Total" >> beam.CombineGlobally(sum_pairs)
                   | "Buckets" >> beam.Map(lambda t: num_buckets(t[0], t[1], max_rows, max_bytes)))

        def write_bucket(element, n):
            bucket, items = element
            ordered = sorted(items, key=lambda xs: sort_key(xs[0]))
            for piece_no, piece in enumerate(cut(ordered, lambda xs: xs[1], max_rows, max_bytes)):
                yield from write_piece(shard_name(bucket, piece_no, n), [x for x, _ in piece])

        n = beam.pvalue.AsSingleton(buckets)
        return (sized
                | "Bucket" >> beam.Map(lambda xs, n: (bucket_of(key(xs[0]), n), xs), n=n)
                | "GroupBucket" >> beam.GroupByKey()
                | "WriteBucket" >> beam.FlatMap(write_bucket, n=n))


class WriteSamples(beam.PTransform):
    """Kept samples -> DIR/parquet/part-*.parquet and DIR/wds/part-*.tar; emits ShardInfo."""

    def __init__(self, out_dir: str, cfg: OutputConfig) -> None:
        super().__init__()
        self.out_dir, self.cfg = out_dir, cfg

    def expand(self, samples):
        out_dir, cfg = self.out_dir, self.cfg

        def write_piece(name: str, piece: list[Sample]):
            stage_counter("write", "shards").inc()
            yield atomic_write(out_dir, f"parquet/{name}.parquet", "parquet", len(piece),
                               parquet_writer([s.to_row() for s in piece], SAMPLE_SCHEMA,
                                              cfg.parquet_compression, cfg.parquet_row_group_rows))
            if cfg.write_wds:
                yield atomic_write(out_dir, f"wds/{name}.tar", "wds", len(piece), wds_writer(piece))

        return (samples
                | "WithoutVectors" >> beam.Map(_without_vectors)
                | "Shard" >> _ShardedWrite(
                    key=lambda s: s.id, sort_key=lambda s: s.id, size=payload_bytes,
                    max_rows=cfg.shard_max_rows, max_bytes=cfg.shard_max_bytes, write_piece=write_piece))


def _without_vectors(sample: Sample) -> Sample:
    """The row without its in-flight vectors (never written to its shards; WriteEmbeddings reads them
    from its own branch), so the bucket shuffle moves less. A copy: both branches see the same row."""
    return dataclasses.replace(sample, embeddings={}) if sample.embeddings else sample


class WriteRejected(beam.PTransform):
    """Rejected rows -> DIR/rejected/part-*.parquet; emits ShardInfo. Payloads over
    ingest.max_payload_bytes are dropped here, the one place that limit applies (their size stays)."""

    def __init__(self, out_dir: str, cfg: OutputConfig, max_payload_bytes: int) -> None:
        super().__init__()
        self.out_dir, self.cfg, self.max_payload_bytes = out_dir, cfg, max_payload_bytes

    def expand(self, rejected):
        out_dir, cfg, cap = self.out_dir, self.cfg, self.max_payload_bytes

        def write_piece(name: str, piece: list[Rejected]):
            yield atomic_write(out_dir, f"rejected/{name}.parquet", "rejected", len(piece),
                               parquet_writer([r.to_row() for r in piece], REJECTED_SCHEMA,
                                              cfg.parquet_compression, cfg.parquet_row_group_rows))

        return (rejected
                | "CapPayload" >> beam.Map(lambda r: r.capped(cap))
                | "Shard" >> _ShardedWrite(
                    key=lambda r: f"{r.source}\x1f{r.source_ref}", sort_key=Rejected.sort_key,
                    size=lambda r: 256 + len(r.detail) + len(r.payload or b""),
                    max_rows=cfg.rejected_shard_max_rows, max_bytes=cfg.shard_max_bytes, write_piece=write_piece))


EMBEDDING_KINDS = ("clip_image", "clip_text")


def embedding_rows(sample: Sample) -> list[dict]:
    """Sidecar rows of one sample: clip_image one per media item (item = media index), clip_text one."""
    rows = []
    for kind in EMBEDDING_KINDS:
        vec = sample.embeddings.get(kind)
        if vec is None:
            continue
        vec = np.asarray(vec, np.float32)
        if vec.ndim == 1:
            rows.append({"id": sample.id, "kind": kind, "item": None, "vector": vec})
        else:
            rows.extend({"id": sample.id, "kind": kind, "item": i, "vector": v} for i, v in enumerate(vec))
    return rows


def embedding_schema(dim: int) -> pa.Schema:
    return pa.schema([("id", pa.string()), ("kind", pa.string()), ("item", pa.int32()),
                      ("vector", pa.list_(pa.float32(), dim))])


def embeddings_writer(rows: list[dict], compression: str, row_group_rows: int) -> Callable:
    dim = len(rows[0]["vector"])

    def write(f) -> None:
        table = pa.table({
            "id": pa.array([r["id"] for r in rows], pa.string()),
            "kind": pa.array([r["kind"] for r in rows], pa.string()),
            "item": pa.array([r["item"] for r in rows], pa.int32()),
            "vector": pa.FixedSizeListArray.from_arrays(
                pa.array(np.concatenate([r["vector"] for r in rows]), pa.float32()), dim),
        }, schema=embedding_schema(dim))
        write_table(table, f, compression, row_group_rows)
    return write


class WriteEmbeddings(beam.PTransform):
    """Kept samples' vectors -> DIR/embeddings/part-*.parquet (id, kind, item, vector); emits ShardInfo.

    One row per vector, ordered by (id, kind, item), bucketed by a hash of the id like the
    samples, so the sidecar is deterministic too. The dedupe stages read the same vectors in flight from
    Sample.embeddings; the sidecar serves later runs (cross-dataset dedupe, decontamination,
    analysis). ShardInfo.rows counts vectors, not samples."""

    def __init__(self, out_dir: str, cfg: OutputConfig) -> None:
        super().__init__()
        self.out_dir, self.cfg = out_dir, cfg

    def expand(self, samples):
        out_dir, cfg = self.out_dir, self.cfg

        def write_piece(name: str, piece: list[list[dict]]):
            rows = sorted((r for rs in piece for r in rs),
                          key=lambda r: (r["id"], r["kind"], -1 if r["item"] is None else r["item"]))
            yield atomic_write(out_dir, f"embeddings/{name}.parquet", "embeddings", len(rows),
                               embeddings_writer(rows, cfg.parquet_compression, cfg.parquet_row_group_rows))

        return (samples
                | "Rows" >> beam.Map(embedding_rows)
                | "NonEmpty" >> beam.Filter(bool)
                | "Shard" >> _ShardedWrite(
                    key=lambda rs: rs[0]["id"], sort_key=lambda rs: rs[0]["id"],
                    size=lambda rs: sum(64 + 4 * len(r["vector"]) for r in rs),
                    max_rows=cfg.shard_max_rows, max_bytes=cfg.shard_max_bytes, write_piece=write_piece))
