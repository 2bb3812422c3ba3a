"""Manifest stage: exact totals from Beam combiners, written once as DIR/manifest.json, with the
shard list in DIR/shards.parquet.

Input rows are counted where ingest emits them, kept and rejected rows where they are
written, so `input_rows == kept + rejected` checks the whole pipeline. A run whose counts
do not add up fails here instead of writing a manifest that hides lost rows. Bytes that a
reader left undelimited (`RawRow.unread_bytes`) are summed too: such a run finishes, but
its manifest says `balanced: false` (schemas/manifest.py).
"""
from __future__ import annotations

import collections

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from pipelines.write import sum_pairs
from schemas.config import Config
from schemas.manifest import (MANIFEST_FILE, SHARD_INDEX_FILE, Manifest, ShardInfo, Totals, library_versions,
                              shard_index_table)
from schemas.version import PIPELINE_VERSION
from shards.writer import atomic_write, write_table


class _KeptTotals(beam.CombineFn):
    # [rows, text tokens, visual tokens, rows by task, rows by source, tokens by task, tokens by mode]
    def create_accumulator(self):
        return [0, 0, 0] + [collections.Counter() for _ in range(4)]

    def add_input(self, acc, s):
        acc[0] += 1
        acc[1] += s.text_tokens
        acc[2] += s.visual_tokens
        acc[3][s.task] += 1
        acc[4][s.source] += 1
        acc[5][s.task] += s.text_tokens + s.visual_tokens
        acc[6][s.mode or "none"] += s.text_tokens + s.visual_tokens
        return acc

    def merge_accumulators(self, accs):
        out = self.create_accumulator()
        for a in accs:
            for i in range(3):
                out[i] += a[i]
            for i in range(3, 7):
                out[i].update(a[i])
        return out

    def extract_output(self, acc):
        by = lambda c: dict(sorted(c.items()))
        return {"kept": acc[0], "text_tokens": acc[1], "visual_tokens": acc[2], "kept_by_task": by(acc[3]),
                "kept_by_source": by(acc[4]), "tokens_by_task": by(acc[5]), "tokens_by_mode": by(acc[6])}


class _CountBy(beam.CombineFn):
    """Counter of keys: small (reasons, not rows), so one accumulator is fine."""

    def create_accumulator(self):
        return collections.Counter()

    def add_input(self, acc, key):
        acc[key] += 1
        return acc

    def merge_accumulators(self, accs):
        out = collections.Counter()
        for a in accs:
            out.update(a)
        return out

    def extract_output(self, acc):
        return dict(sorted(acc.items()))


class _WriteManifest(beam.DoFn):
    def __init__(self, out_dir: str, pipeline_name: str, cfg: Config) -> None:
        self.out_dir, self.pipeline_name, self.cfg = out_dir, pipeline_name, cfg

    def process(self, _, input_rows, kept, rejected_by_reason, shards, unread):
        totals = Totals(input_rows=input_rows, kept=kept["kept"],
                        rejected=sum(rejected_by_reason.values()), rejected_by_reason=rejected_by_reason,
                        kept_by_task=kept["kept_by_task"], kept_by_source=kept["kept_by_source"],
                        tokens_by_task=kept["tokens_by_task"], tokens_by_mode=kept["tokens_by_mode"],
                        text_tokens=kept["text_tokens"], visual_tokens=kept["visual_tokens"],
                        unread_bytes=unread[0], unread_files=unread[1])
        by_kind: dict[str, list[ShardInfo]] = {"parquet": [], "wds": [], "rejected": []}
        for s in sorted(shards, key=ShardInfo.sort_key):
            by_kind.setdefault(s.kind, []).append(s)
        written = sum(s.rows for s in by_kind["parquet"])
        rejected_written = sum(s.rows for s in by_kind["rejected"])
        if not totals.rows_add_up or written != totals.kept or rejected_written != totals.rejected:
            raise RuntimeError(
                f"row accounting does not add up: input {totals.input_rows}, kept {totals.kept} "
                f"(written {written}), rejected {totals.rejected} (written {rejected_written})")
        manifest = Manifest(
            pipeline=self.pipeline_name, pipeline_version=PIPELINE_VERSION, config_name=self.cfg.name,
            config_hash=self.cfg.hash(), config=self.cfg.to_dict(),
            inputs=[{"path": i.path, "source": i.source, "format": i.format} for i in self.cfg.inputs],
            totals=totals, shards=by_kind, versions=library_versions())
        yield write_manifest(self.out_dir, manifest)


def write_manifest(out_dir: str, manifest: Manifest) -> str:
    """DIR/shards.parquet (the shard list) then DIR/manifest.json, each renamed into place."""
    atomic_write(out_dir, SHARD_INDEX_FILE, "index", 0,
                 lambda f: write_table(shard_index_table([s for v in manifest.shards.values() for s in v]),
                                       f, "zstd", 100_000))
    atomic_write(out_dir, MANIFEST_FILE, "manifest", 0, lambda f: f.write(manifest.to_json().encode("utf-8")))
    return FileSystems.join(out_dir, MANIFEST_FILE)


class WriteManifest(beam.PTransform):
    """(raw rows, kept samples, rejected rows, shard infos) -> DIR/manifest.json."""

    def __init__(self, out_dir: str, pipeline_name: str, cfg: Config) -> None:
        super().__init__()
        self.out_dir, self.pipeline_name, self.cfg = out_dir, pipeline_name, cfg

    def expand(self, pcolls):
        raw_rows, kept, rejected, shards = pcolls
        AS = beam.pvalue.AsSingleton
        input_rows = raw_rows | "CountInput" >> beam.combiners.Count.Globally()
        kept_totals = kept | "KeptTotals" >> beam.CombineGlobally(_KeptTotals())
        by_reason = (rejected
                     | "ReasonKey" >> beam.Map(lambda r: f"{r.stage}/{r.reason}")
                     | "CountReasons" >> beam.CombineGlobally(_CountBy()))
        shard_list = shards | "ListShards" >> beam.combiners.ToList()
        unread = (raw_rows
                  | "Unread" >> beam.Map(lambda r: (r.unread_bytes, 1 if r.unread_bytes else 0))
                  | "SumUnread" >> beam.CombineGlobally(sum_pairs))
        return (raw_rows.pipeline
                | "Once" >> beam.Create([None])
                | "Write" >> beam.ParDo(_WriteManifest(self.out_dir, self.pipeline_name, self.cfg),
                                        AS(input_rows), AS(kept_totals), AS(by_reason), AS(shard_list),
                                        AS(unread)))
