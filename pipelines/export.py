"""`python -m pipelines.export --format swift|llava OUT_DIR`: the kept rows of a pipeline's output
as messages JSONL in a trainer's layout (mixture/export.py), with the images and frames beside it.

    OUT_DIR/shards.parquet --list shards--> (parquet n, wds n) pairs --Reshuffle--> ExportShard
        --> DEST/part-BBBBB-PPP.jsonl + DEST/media/<id>/... --> DEST/export.json (parts, rows, sha256)
            (a partitioned run's shards sit under their pass: DEST/global/part-BBBBB-PPP.jsonl)

Parquet shard n and WebDataset shard n hold the same rows in the same order, so one worker
exports one shard pair, streaming the tar one row's members at a time: a worker holds one row.
DEST defaults to OUT_DIR/export/<format>. Records name media by paths relative to DEST (ms-swift:
run from DEST; LLaVA: `--image_folder DEST --video_folder DEST`). Other flags go to Beam.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tarfile
from typing import Iterator, Optional, Sequence

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from mixture.export import FORMATS, export_row
from pipelines.common import stage_counter
from schemas.manifest import Manifest
from schemas.sample import Sample, canonical_json


def tar_rows(path: str) -> Iterator[tuple[dict, dict[str, bytes]]]:
    """(row, {member name: bytes}) per sample of a shard tar, one sample in memory at a time."""
    key, row, members = None, None, {}
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f, \
            tarfile.open(fileobj=f, mode="r|") as tar:
        for info in tar:
            if not info.isfile():
                continue
            name = info.name
            data = tar.extractfile(info).read()
            if name.endswith(".json") and name.count(".") == 1:       # KEY.json: ids hold no "."
                if row is not None:
                    yield row, members
                key, row, members = name[:-len(".json")], json.loads(data), {}
            elif key is not None and name.startswith(key + "."):
                members[name] = data
    if row is not None:
        yield row, members


def _write(path: str, data: bytes) -> None:
    with FileSystems.create(path) as f:
        f.write(data)


class _ExportShard(beam.DoFn):
    def __init__(self, out_dir: str, dest: str, fmt: str) -> None:
        self.out_dir, self.dest, self.fmt = out_dir, dest, fmt

    def process(self, tar_path: str):
        # wds/part-0.tar -> part-0.jsonl; a partitioned run's global/wds/part-0.tar -> global/part-0.jsonl
        folder, _, name = tar_path[:-len(".tar")].rpartition("wds/")
        stem = folder + name
        lines, rows, skipped = [], 0, 0
        for row, members in tar_rows(FileSystems.join(self.out_dir, tar_path)):
            record, files = export_row(Sample.from_row(row), members, self.fmt)
            if record is None:
                skipped += 1
                stage_counter("export", f"{self.fmt}/skipped").inc()
                continue
            for rel, data in sorted(files.items()):
                _write(FileSystems.join(self.dest, rel), data)
            lines.append(canonical_json(record) + b"\n")
            rows += 1
        blob = b"".join(lines)
        _write(FileSystems.join(self.dest, stem + ".jsonl"), blob)
        stage_counter("export", f"{self.fmt}/rows").inc(rows)
        yield {"path": stem + ".jsonl", "rows": rows, "skipped": skipped, "bytes": len(blob),
               "sha256": hashlib.sha256(blob).hexdigest()}


def _write_summary(parts: list, dest: str, fmt: str, source_rows: int) -> str:
    parts = sorted(parts, key=lambda p: p["path"])
    summary = {"format": fmt, "rows": sum(p["rows"] for p in parts), "skipped": sum(p["skipped"] for p in parts),
               "source_rows": source_rows, "parts": parts}
    if summary["rows"] + summary["skipped"] != source_rows:
        raise RuntimeError(f"export lost rows: {summary['rows']} + {summary['skipped']} skipped != {source_rows}")
    path = FileSystems.join(dest, "export.json")
    _write(path, (json.dumps(summary, indent=2, sort_keys=True) + "\n").encode("utf-8"))
    return path


def build_export(p: beam.Pipeline, out_dir: str, fmt: str, dest: Optional[str] = None):
    """Export the kept rows of out_dir (a finished run: its manifest lists the shards)."""
    manifest = Manifest.load(out_dir)        # the shard list is DIR/shards.parquet
    if not manifest.shards.get("wds"):
        raise SystemExit(f"{out_dir}: no WebDataset shards (output.write_wds is off); media cannot be exported")
    tars = sorted(s.path for s in manifest.shards["wds"])    # relative to out_dir
    source_rows = sum(s.rows for s in manifest.shards["wds"])
    dest = dest or FileSystems.join(out_dir, "export", fmt)
    return (p
            | "Shards" >> beam.Create(tars)
            | "Spread" >> beam.Reshuffle()
            | "ExportShard" >> beam.ParDo(_ExportShard(out_dir, dest, fmt))
            | "Parts" >> beam.combiners.ToList()
            | "Summary" >> beam.Map(_write_summary, dest, fmt, source_rows))


def main(argv: Optional[Sequence[str]] = None) -> int:
    from apache_beam.options.pipeline_options import PipelineOptions

    ap = argparse.ArgumentParser(prog="python -m pipelines.export", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--format", required=True, choices=FORMATS)
    ap.add_argument("--dest", help="export folder (default OUT_DIR/export/FORMAT)")
    ap.add_argument("out_dir", help="the output folder of build_mixture (or curate)")
    args, beam_argv = ap.parse_known_args(sys.argv[1:] if argv is None else list(argv))
    out_dir = args.out_dir.rstrip("/")
    dest = args.dest or FileSystems.join(out_dir, "export", args.format)
    if FileSystems.exists(dest):
        FileSystems.delete([dest])
    with beam.Pipeline(options=PipelineOptions(beam_argv)) as p:
        build_export(p, out_dir, args.format, dest)
    with FileSystems.open(FileSystems.join(dest, "export.json")) as f:
        summary = json.loads(f.read())
    print(f"export {args.format}: {summary['rows']} rows ({summary['skipped']} skipped) in "
          f"{len(summary['parts'])} parts -> {dest}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
