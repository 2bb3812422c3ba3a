"""`python -m bench.pipeline`: the demo corpus end to end, and what Beam costs on top.

In one run: the `curate` pipeline on the synthetic corpus (DirectRunner in-process,
and multi-processing at the largest scale), against the very same stage functions called in
a plain Python loop over the same rows (read -> validate -> text -> media -> exact dedupe ->
tokens -> write the same shards). The ratio pipeline / loop is Beam's overhead here; timing
two corpus scales splits it into a fixed start-up cost and a per-row (marginal) ratio.

It also measures what crosses each shuffle per row: in the Beam run, bytes into every
GroupByKey as the runner counted them (manifest.json `shuffles`, the stages this benchmark runs);
in the loop, the encoded size (pickle, as Beam's fallback coder writes a Sample) of the element
each shuffle of the full pipeline moves, split into media bytes
(`Sample.blobs`: sampled JPEG frames, re-encoded images) and the rest (the row's metadata,
scores, in-flight vectors), and the row as it travels with its media in the blob store
(references only). SHUFFLES lists which shuffles move whole rows.

`media_paths` (`--paths_scales`, default 1,8): the full demo recipe (every stage on) in child
processes, once with media in the rows (`output.blob_store=false`, the engine before the blob
store) and once with the blob store, at each scale: bytes per input row into every shuffle, each
child's peak RSS, the marginal memory per input row between the scales, and a check that both
paths wrote the same shard bytes.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import tempfile

from bench.common import best_of, emit, peak_rss_mb, ratio


# The loop below runs the per-row stages; the shuffle-heavy dedupe stages after exact dedupe and
# CLIP scoring are off in both runs so they do the same work (bench.dedupe and bench.score
# measure those stages).
SAME_STAGES = ["dedupe.near.enabled=false", "dedupe.semantic.enabled=false", "decontaminate.enabled=false",
               "score.enabled=false"]


# Shuffles of the curate pipeline and what each moves per row (pipelines/*.py): "raw" the input
# row, "row" the whole Sample (blobs included when the media stage has run), "key" a small key.
SHUFFLES = [("ingest/SpreadRows", "raw"), ("media/Spread (before decoding)", "row_before_media"),
            ("exact_dedupe/GroupByContent", "row"), ("near_dedupe/JoinById", "row"),
            ("near_dedupe/GroupBuckets", "key"), ("semantic_dedupe/JoinById", "row"),
            ("write/GroupBucket", "row")]


def shuffle_bytes(raw_sizes: list[int], before_sizes: list[int], after: list) -> dict:
    """Mean bytes per row each shuffle moves, and the media share of them; `lean_row_bytes` is the
    row as it crosses the shuffles with a blob store (its media replaced by references)."""
    import copy
    import pickle

    from pipelines.blobstore import BlobStore
    from schemas.blobs import StoredBlobs

    def mean(xs):
        return round(sum(xs) / max(1, len(xs)), 1)

    def lean(s):
        s = copy.copy(s)
        s.blobs = StoredBlobs(BlobStore("/tmp/keye-bench/_blobs"),
                              {n: (hashlib.sha256(b).digest(), len(b)) for n, b in s.blobs.items()})
        return s

    row = [len(pickle.dumps(s, protocol=pickle.HIGHEST_PROTOCOL)) for s in after]
    lean_row = [len(pickle.dumps(lean(s), protocol=pickle.HIGHEST_PROTOCOL)) for s in after]
    blobs = [sum(len(b) for b in s.blobs.values()) for s in after]
    sizes = {"raw": mean(raw_sizes), "row_before_media": mean(before_sizes),
             "row": mean(row), "key": 64.0}
    per = {name: sizes[kind] for name, kind in SHUFFLES}
    whole_rows = sum(1 for _, kind in SHUFFLES if kind == "row")
    return {"per_shuffle": per, "row_bytes": mean(row), "row_media_bytes": mean(blobs),
            "row_metadata_bytes": round(mean(row) - mean(blobs), 1), "lean_row_bytes": mean(lean_row),
            "total_per_row": round(sum(per.values()), 1),
            "total_per_row_with_blob_store": round(sum(per.values()) - (mean(row) - mean(lean_row)) * whole_rows, 1)}


def child_curate(corpus: str, out: str, blob_store: bool) -> dict:
    """The full demo recipe on `corpus` in a child process: its manifest, peak RSS and seconds."""
    import subprocess
    import sys
    import time

    from schemas.config import CONFIG_DIR
    from synthetic.corpus import corpus_media_root

    bench = os.path.join(corpus, "benchmark", "bench.jsonl")
    cmd = [sys.executable, "-m", "pipelines.curate", "--config", os.path.join(CONFIG_DIR, "demo.yaml"),
           "--input", os.path.join(corpus, "manifests"), "--output", out, "--overwrite", "--progress_s", "0",
           "--set", f"ingest.media_roots={json.dumps([corpus_media_root(corpus)])}",
           "--set", f"decontaminate.benchmarks=[{{name: synthbench, path: {bench}}}]",
           "--set", f"output.blob_store={'true' if blob_store else 'false'}"]
    t0 = time.perf_counter()
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(os.path.join(os.path.dirname(out), "child.log"), "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=log)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}); see {log.name}")
    with open(os.path.join(out, "manifest.json")) as f:
        manifest = json.load(f)
    import pyarrow.parquet as pq

    shards = {r["path"]: r["sha256"] for r in pq.read_table(os.path.join(out, "shards.parquet")).to_pylist()}
    return {"manifest": manifest, "peak_rss_mb": usage.ru_maxrss / 1024.0,
            "seconds": time.perf_counter() - t0, "shards": shards}


def short_shuffle_name(name: str) -> str:
    """'Curate/NearDedupe/Apply/JoinById/CoGroupByKeyImpl/GroupByKey' -> 'NearDedupe/JoinById'; the
    24 connected-component rounds of a stage fold into one 'Components' entry."""
    parts = [p for p in name.split("/") if p not in ("Curate", "Apply", "Shard", "Edges", "CoGroupByKeyImpl",
                                                     "GroupByKey", "ReshufflePerKey")]
    if len(parts) > 1 and parts[1] == "Components":
        return f"{parts[0]}/Components"
    return "/".join(parts[:2])


def media_paths(work: str, scales: list[int]) -> dict:
    """Both media paths at each scale (see the module docstring)."""
    from synthetic.corpus import generate

    out: dict = {"scales": {}}
    for scale in scales:
        corpus = os.path.join(work, f"paths_corpus_{scale}")
        generate(corpus, scale=scale)
        point = {}
        runs = {}
        for label, on in (("media_in_rows", False), ("blob_store", True)):
            r = child_curate(corpus, os.path.join(work, f"paths_{scale}_{label}", "out"), on)
            runs[label] = r
            rows = r["manifest"]["totals"]["input_rows"]
            per: dict[str, float] = {}
            for name, v in r["manifest"]["shuffles"].items():
                key = short_shuffle_name(name)
                per[key] = per.get(key, 0.0) + v["bytes"] / rows
            point[label] = {"input_rows": rows, "kept": r["manifest"]["totals"]["kept"],
                            "seconds": round(r["seconds"], 2), "peak_rss_mb": round(r["peak_rss_mb"], 1),
                            "shuffle_bytes_per_input_row": {k: round(v) for k, v in sorted(per.items())},
                            "shuffle_bytes_per_input_row_total": round(sum(per.values()))}
        point["same_shard_bytes"] = runs["media_in_rows"]["shards"] == runs["blob_store"]["shards"]
        point["shuffle_ratio_blob_store_vs_in_rows"] = ratio(point["blob_store"]["shuffle_bytes_per_input_row_total"],
                                                             point["media_in_rows"]["shuffle_bytes_per_input_row_total"])
        out["scales"][scale] = point
    if len(scales) >= 2:
        a, b = out["scales"][scales[0]], out["scales"][scales[-1]]
        for label in ("media_in_rows", "blob_store"):
            extra_rows = b[label]["input_rows"] - a[label]["input_rows"]
            out[f"marginal_kb_per_input_row_{label}"] = round(
                1024 * (b[label]["peak_rss_mb"] - a[label]["peak_rss_mb"]) / max(1, extra_rows), 1)
    return out


def plain_loop(cfg, out_dir: str) -> dict:
    """The curation stages with no Beam: same functions, one process, one bucket."""
    from filters.exact import content_key
    from filters.text import TextFilter
    from filters.tokens import TokenAccounting
    from ingest.readers import read_file
    from ingest.validate import ValidateRows
    from filters.media import MediaFilter
    from ingest.inputs import file_tasks
    from filters.base import reject_sample
    from schemas.reasons import Reason, Stage
    from schemas.rejected import REJECTED_SCHEMA, Rejected
    from schemas.sample import SAMPLE_SCHEMA
    from shards.writer import atomic_write, cut, parquet_writer, payload_bytes, shard_name, wds_writer

    steps = [ValidateRows(cfg), TextFilter(cfg), MediaFilter(cfg)]
    tokens = TokenAccounting(cfg)
    for s in steps + [tokens]:
        s.setup()
    import pickle

    rows, rejected, by_key = 0, [], {}
    raw_sizes, before_media = [], []
    for spec in cfg.inputs:
        for task in file_tasks(spec, cfg):
            for raw in read_file(task):
                rows += 1
                raw_sizes.append(len(pickle.dumps(raw, protocol=5)))
                item = raw
                for step in steps:
                    if isinstance(step, MediaFilter):
                        before_media.append(len(pickle.dumps(item, protocol=5)))   # the step may fill it in place
                    item = step(item)
                    if isinstance(item, Rejected):
                        rejected.append(item)
                        break
                else:
                    by_key.setdefault(content_key(item), []).append(item)
    kept = []
    for group in by_key.values():
        group.sort(key=lambda s: s.id)
        kept.append(group[0])
        rejected.extend(reject_sample(s, Stage.EXACT_DEDUPE, Reason.EXACT_DUPLICATE, dup_of=group[0].id)
                        for s in group[1:])
    final = []
    for s in kept:
        out = tokens(s)
        (rejected if isinstance(out, Rejected) else final).append(out)
    final.sort(key=lambda s: s.id)
    o = cfg.output
    for n, piece in enumerate(cut(final, payload_bytes, o.shard_max_rows, o.shard_max_bytes)):
        atomic_write(out_dir, f"parquet/{shard_name(0, n)}.parquet", "parquet", len(piece),
                     parquet_writer([s.to_row() for s in piece], SAMPLE_SCHEMA, o.parquet_compression,
                                    o.parquet_row_group_rows))
        atomic_write(out_dir, f"wds/{shard_name(0, n)}.tar", "wds", len(piece), wds_writer(piece))
    rej_rows = [r.to_row() for r in rejected]
    atomic_write(out_dir, "rejected/part-00000-000.parquet", "rejected", len(rej_rows),
                 parquet_writer(rej_rows, REJECTED_SCHEMA, o.parquet_compression, o.parquet_row_group_rows))
    return {"input_rows": rows, "kept": len(final), "rejected": rows - len(final),
            "shuffle_bytes": shuffle_bytes(raw_sizes, before_media, final)}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--scales", default="1,8",
                    help="synthetic corpus scales; two or more separate fixed from per-row cost")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2,
                    help="also time multi_processing with N workers at the largest scale (0: skip)")
    ap.add_argument("--paths_scales", default="1,8",
                    help="scales for the media-in-rows vs blob-store comparison (full demo recipe; '' skips it)")
    ap.add_argument("--skip_timing", action="store_true", help="only the media-path comparison")
    args = ap.parse_args(argv)

    from pipelines.curate import build_curate
    from pipelines.launch import run
    from schemas.config import CONFIG_DIR, load_config
    from synthetic.corpus import corpus_media_root, corpus_recipe, generate

    recipe = os.path.join(CONFIG_DIR, "demo.yaml")
    work = tempfile.mkdtemp(prefix="bench_pipeline_")
    points = []
    try:
        for scale in [] if args.skip_timing else [int(x) for x in args.scales.split(",")]:
            corpus = os.path.join(work, f"corpus_{scale}")
            generate(corpus, scale=scale)
            inp = os.path.join(corpus, "manifests")

            def beam_run(extra, inp=inp, corpus=corpus):
                out = os.path.join(work, "beam_out")
                sets = [x for o in SAME_STAGES + [f"ingest.media_roots={json.dumps([corpus_media_root(corpus)])}"]
                        for x in ("--set", o)]
                return run("curate", build_curate, ["--config", recipe, "--input", inp, "--output", out,
                                                     "--overwrite", "--progress_s", "0", *sets, *extra])

            def loop_run(corpus=corpus):
                out = os.path.join(work, "loop_out")
                shutil.rmtree(out, ignore_errors=True)
                cfg = corpus_recipe(load_config(recipe, SAME_STAGES), corpus)
                return plain_loop(cfg, out)

            loop_s, loop = best_of(loop_run, args.repeat)
            beam_s, manifest = best_of(lambda: beam_run([]), args.repeat)
            assert loop["kept"] == manifest.totals.kept and loop["input_rows"] == manifest.totals.input_rows, \
                (loop, manifest.totals)
            point = {"scale": scale, "input_rows": loop["input_rows"], "kept": loop["kept"],
                     "plain_loop_s": round(loop_s, 3), "direct_in_process_s": round(beam_s, 3),
                     "samples_per_s": round(loop["input_rows"] / beam_s, 1),
                     "beam_overhead_ratio": ratio(beam_s, loop_s), "shuffle_bytes_per_row": loop["shuffle_bytes"],
                     "beam_shuffle_bytes_per_input_row": {
                         name: round(v["bytes"] / max(1, manifest.totals.input_rows), 1)
                         for name, v in manifest.shuffles.items()}}
            if args.workers and scale == max(int(x) for x in args.scales.split(",")):
                mp_s, _ = best_of(lambda: beam_run(["--direct_running_mode=multi_processing",
                                                    f"--direct_num_workers={args.workers}"]), args.repeat)
                point[f"multi_processing_{args.workers}_s"] = round(mp_s, 3)
                point[f"multi_processing_{args.workers}_overhead_ratio"] = ratio(mp_s, loop_s)
            points.append(point)
        results = {"points": points}
        if len(points) >= 2:
            a, b = points[0], points[-1]
            rows = b["input_rows"] - a["input_rows"]
            beam_per_row = (b["direct_in_process_s"] - a["direct_in_process_s"]) / rows
            loop_per_row = (b["plain_loop_s"] - a["plain_loop_s"]) / rows
            results["per_row_ms"] = {"direct_in_process": round(1e3 * beam_per_row, 3),
                                     "plain_loop": round(1e3 * loop_per_row, 3)}
            results["beam_fixed_cost_s"] = round(a["direct_in_process_s"] - beam_per_row * a["input_rows"], 3)
            results["marginal_overhead_ratio"] = ratio(beam_per_row, loop_per_row)
        if args.paths_scales:
            results["media_paths"] = media_paths(work, [int(x) for x in args.paths_scales.split(",")])
        results["peak_rss_mb"] = round(peak_rss_mb(), 1)
        return emit("pipeline", results)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
