"""Manifest stage: exact totals from Beam combiners, written once as DIR/manifest.json, with the
shard list in DIR/shards.parquet.

Input rows are counted where ingest emits them, kept and rejected rows where they are
written, so `input_rows == kept + rejected` checks the whole pipeline. A run whose counts
do not add up fails here instead of writing a manifest that hides lost rows. Bytes that a
reader left undelimited (`RawRow.unread_bytes`) are summed too: such a run finishes, but
its manifest says `balanced: false` (schemas/manifest.py).

Pipelines that fan rows out (build_mixture) also pass a `Fanout`: which input rows were kept
(an input row is kept when one of its derived rows is), what each builder made, and the share
report. Rejected rows whose id is a derived id (`<id>@<tag>`) are then counted as derived
rejections, the rest as input rejections; both balances must hold.
"""
from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import Optional

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from mixture.mixing import is_derived
from pipelines.common import sum_tuples
from pipelines.write import sum_pairs
from schemas.config import Config
from schemas.manifest import (MANIFEST_FILE, Derived, SHARD_INDEX_FILE, Manifest, ShardInfo, Totals, library_versions,
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


@dataclass
class Fanout:
    """The PCollections of a stage that makes several rows from one (pipelines/mixture.py)."""

    kept_inputs: beam.PCollection      # one element per input row with a kept derived row
    made: beam.PCollection             # (builder, (inputs, rows made, rejected at birth, replaced)) records
    shares: beam.PCollection           # one dict: target and achieved shares (mixture/mixing.py)


DERIVED = "derived:"


def _derived_key(r) -> str:
    return (DERIVED if is_derived(r.id) else "") + f"{r.stage}/{r.reason}"


def _made_by(totals: dict) -> dict:
    keys = ("inputs", "rows", "rejected", "replaced")
    return {f"mixture/{label}": dict(zip(keys, counts)) for label, counts in sorted(totals.items())}


class _WriteManifest(beam.DoFn):
    def __init__(self, out_dir: str, pipeline_name: str, cfg: Config) -> None:
        self.out_dir, self.pipeline_name, self.cfg = out_dir, pipeline_name, cfg

    def process(self, _, input_rows, kept, rejected_by_reason, shards, unread, fanout=None, pending=0):
        derived = None
        kept_rows = kept["kept"]
        if fanout is not None:
            derived_reasons = {k.split(":", 1)[1]: v for k, v in rejected_by_reason.items() if k.startswith(DERIVED)}
            rejected_by_reason = {k: v for k, v in rejected_by_reason.items() if not k.startswith(DERIVED)}
            made_by = fanout["made_by"]
            derived = Derived(made=sum(v["rows"] + v["rejected"] for v in made_by.values()), kept=kept_rows,
                              rejected=sum(derived_reasons.values()),
                              replaced=sum(v["replaced"] for v in made_by.values()),
                              rejected_by_reason=derived_reasons, made_by=made_by)
            kept_rows = fanout["kept_inputs"]
            if not derived.balanced:
                raise RuntimeError(f"derived row accounting does not add up: {derived}")
        totals = Totals(input_rows=input_rows, kept=kept_rows,
                        rejected=sum(rejected_by_reason.values()), rejected_by_reason=rejected_by_reason,
                        kept_by_task=kept["kept_by_task"], kept_by_source=kept["kept_by_source"],
                        tokens_by_task=kept["tokens_by_task"], tokens_by_mode=kept["tokens_by_mode"],
                        text_tokens=kept["text_tokens"], visual_tokens=kept["visual_tokens"],
                        unread_bytes=unread[0], unread_files=unread[1], pending=pending)
        by_kind: dict[str, list[ShardInfo]] = {"parquet": [], "wds": [], "rejected": []}
        for s in sorted(shards, key=ShardInfo.sort_key):
            by_kind.setdefault(s.kind, []).append(s)
        written = sum(s.rows for s in by_kind["parquet"])
        rejected_written = sum(s.rows for s in by_kind["rejected"])
        rows_kept = kept["kept"]                       # rows written: input rows, or derived rows
        rows_rejected = totals.rejected + (derived.rejected if derived else 0)
        if not totals.rows_add_up or written != rows_kept or rejected_written != rows_rejected:
            raise RuntimeError(
                f"row accounting does not add up: input {totals.input_rows}, kept {totals.kept} "
                f"(rows written {written} of {rows_kept}), rejected {rows_rejected} (written {rejected_written})")
        manifest = Manifest(
            pipeline=self.pipeline_name, pipeline_version=PIPELINE_VERSION, config_name=self.cfg.name,
            config_hash=self.cfg.hash(), config=self.cfg.to_dict(),
            inputs=[{"path": i.path, "source": i.source, "format": i.format} for i in self.cfg.inputs],
            totals=totals, shards=by_kind, versions=library_versions(), derived=derived,
            mixture=fanout["shares"] if fanout is not None else None)
        yield write_manifest(self.out_dir, manifest)


def write_manifest(out_dir: str, manifest: Manifest) -> str:
    """DIR/shards.parquet (the shard list) then DIR/manifest.json, each renamed into place."""
    atomic_write(out_dir, SHARD_INDEX_FILE, "index", 0,
                 lambda f: write_table(shard_index_table([s for v in manifest.shards.values() for s in v]),
                                       f, "zstd", 100_000))
    atomic_write(out_dir, MANIFEST_FILE, "manifest", 0, lambda f: f.write(manifest.to_json().encode("utf-8")))
    return FileSystems.join(out_dir, MANIFEST_FILE)


class WriteManifest(beam.PTransform):
    """(raw rows, kept samples, rejected rows, shard infos) -> DIR/manifest.json. `pending`: one element
    per input row handed on to a later pass of the run (a partition's rows that wait for the global
    mix), counted as neither kept nor rejected here."""

    def __init__(self, out_dir: str, pipeline_name: str, cfg: Config, fanout: Optional[Fanout] = None,
                 pending: Optional[beam.PCollection] = None) -> None:
        super().__init__()
        self.out_dir, self.pipeline_name, self.cfg = out_dir, pipeline_name, cfg
        self.fanout, self.pending = fanout, pending

    def expand(self, pcolls):
        raw_rows, kept, rejected, shards = pcolls
        AS = beam.pvalue.AsSingleton
        input_rows = raw_rows | "CountInput" >> beam.combiners.Count.Globally()
        kept_totals = kept | "KeptTotals" >> beam.CombineGlobally(_KeptTotals())
        by_reason = (rejected
                     | "ReasonKey" >> beam.Map(_derived_key)
                     | "CountReasons" >> beam.CombineGlobally(_CountBy()))
        shard_list = shards | "ListShards" >> beam.combiners.ToList()
        unread = (raw_rows
                  | "Unread" >> beam.Map(lambda r: (r.unread_bytes, 1 if r.unread_bytes else 0))
                  | "SumUnread" >> beam.CombineGlobally(sum_pairs))
        side = [AS(input_rows), AS(kept_totals), AS(by_reason), AS(shard_list), AS(unread)]
        if self.fanout is not None:
            f = self.fanout
            kept_inputs = f.kept_inputs | "CountKeptInputs" >> beam.combiners.Count.Globally()
            made_by = (f.made
                       | "MadeBy" >> beam.CombinePerKey(sum_tuples)
                       | "MadeByDict" >> beam.combiners.ToDict()
                       | "MadeByLabel" >> beam.Map(_made_by))
            summary = (f.shares
                       | "Fanout" >> beam.Map(lambda shares, k, m: {"kept_inputs": k, "made_by": m, "shares": shares},
                                              AS(kept_inputs), AS(made_by)))
            side.append(AS(summary))
        named = {}
        if self.pending is not None:
            named["pending"] = AS(self.pending | "CountPending" >> beam.combiners.Count.Globally())
        return (raw_rows.pipeline
                | "Once" >> beam.Create([None])
                | "Write" >> beam.ParDo(_WriteManifest(self.out_dir, self.pipeline_name, self.cfg), *side, **named))
