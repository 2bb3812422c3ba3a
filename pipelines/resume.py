"""Resumable runs: input files in partitions, a completion marker per finished partition, and a
final manifest merged from the markers (datatrove's `completions/` markers are the model).

    driver: list input files (metadata only, no rows) -> plan: P partitions of
            output.partition_files files each -> DIR/run.json (recipe + plan)
    for each partition without a marker (one Beam pipeline each, on any runner):
        curate its files -> DIR/partitions/pNNNNNN/ {parquet, wds, rejected, embeddings,
                            manifest.json, shards.parquet}   (every shard renamed into place)
        pipeline DONE    -> DIR/completions/pNNNNNN.json (files, totals, counters, shards),
                            written under a temporary name and renamed: the partition's commit
    a pipeline with a global pass (build_mixture: one mixture over the whole input), once every
    partition has its marker:
        every partition's staged/ -> the global pass -> DIR/global/ (its shards and manifest)
        pipeline DONE    -> DIR/completions/global.json; then every partition's staged/ is deleted
    merge every marker -> DIR/shards.parquet (paths relative to DIR) + DIR/manifest.json

The driver holds the file list and one marker at a time, never rows. `--resume` reads run.json,
refuses a changed recipe or input plan (naming what changed), deletes the output of any partition
without a marker (a killed partition may have left finished shards and `.tmp-*` files, never a
partial shard under its final name) and runs only those partitions.

Semantics of the global stages: each partition is curated on its own, so exact, near and
semantic dedupe, percentile CLIP thresholds and shard bucketing hold within a partition. A
partitioned run and its resumed twin give the same bytes; a partitioned run differs from a
one-pass run (`partition_files: 0`) by the duplicates that sit in different partitions. Cross-
partition dedupe is a later pass over the output (or a one-pass run), as in datatrove and
NeMo Curator, whose dedupe steps are separate jobs. The mixture's shares are the exception: they are
targets for the whole run, so build_mixture's global pass chooses them over every partition's
candidates (pipelines/build_mixture.py), and the merged manifest's `derived` and `mixture` blocks are
that pass's.
"""
from __future__ import annotations

import dataclasses
import json
import sys
import threading
import time
import uuid
from typing import Any, Callable, Optional

from apache_beam.io.filesystems import FileSystems

from schemas.config import Config
from schemas.manifest import Derived, Manifest, ShardInfo, Totals

RUN_STATE_FILE = "run.json"
PARTITIONS_DIR = "partitions"
COMPLETIONS_DIR = "completions"
GLOBAL_PASS = "global"      # DIR/global/ and completions/global.json: the pass after every partition
STAGED_DIR = "staged"       # DIR/partitions/pNNNNNN/staged/: what a partition hands to the global pass
# Recipe keys that say where a service runs, not what the run does (as in Config.hash): a model
# endpoint restarted on another address (the demo's reasoner takes any free port) may resume.
NOT_RULES = ("base_url",)


@dataclasses.dataclass(frozen=True)
class Partition:
    name: str                             # pNNNNNN: sorts past a million partitions
    files: tuple[tuple[int, str], ...]    # (input index, full path), in the order ingest reads them

    @property
    def paths(self) -> list[str]:
        return [path for _, path in self.files]


def list_input_files(cfg: Config) -> list[tuple[int, str]]:
    """(input index, file path) of every file ingest would read, in the order it reads them."""
    from ingest.inputs import file_tasks

    return [(i, task.path) for i, spec in enumerate(cfg.inputs) for task in file_tasks(spec, cfg)]


def plan(cfg: Config) -> list[Partition]:
    files = list_input_files(cfg)
    n = cfg.output.partition_files
    return [Partition(name=f"p{k // n:06d}", files=tuple(files[k:k + n])) for k in range(0, len(files), n)]


def partition_config(cfg: Config, part: Partition) -> Config:
    """The recipe restricted to one partition's files; sources and source_refs stay those of the
    whole input (a folder input still names rows after its top-level entries)."""
    by_spec: dict[int, list[str]] = {}
    for spec_index, path in part.files:
        by_spec.setdefault(spec_index, []).append(path)
    return cfg.with_inputs([dataclasses.replace(cfg.inputs[k], files=tuple(paths))
                            for k, paths in sorted(by_spec.items())])


def run_state(pipeline: str, cfg: Config, parts: list[Partition]) -> dict[str, Any]:
    from schemas.version import PIPELINE_VERSION

    return {"pipeline": pipeline, "pipeline_version": PIPELINE_VERSION, "config_hash": cfg.hash(),
            "config": {k: v for k, v in json.loads(json.dumps(cfg.to_dict())).items() if k != "inputs"},
            "partitions": [{"name": p.name, "files": p.paths} for p in parts]}


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: d}


def differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What changed between two run states, one line per recipe key, input file or version."""
    lines = []
    if old.get("pipeline") != new["pipeline"]:
        lines.append(f"pipeline: {old.get('pipeline')!r} -> {new['pipeline']!r}")
    if old.get("pipeline_version") != new["pipeline_version"]:
        lines.append(f"pipeline_version: {old.get('pipeline_version')!r} -> {new['pipeline_version']!r}")
    a, b = _flatten(old.get("config", {})), _flatten(new["config"])
    for key in sorted(set(a) | set(b)):
        if key.rsplit(".", 1)[-1] in NOT_RULES:
            continue
        if a.get(key, "<unset>") != b.get(key, "<unset>"):
            lines.append(f"{key}: {a.get(key, '<unset>')!r} -> {b.get(key, '<unset>')!r}")
    old_files = [f for p in old.get("partitions", []) for f in p["files"]]
    new_files = [f for p in new["partitions"] for f in p["files"]]
    if old_files != new_files:
        added = sorted(set(new_files) - set(old_files))
        gone = sorted(set(old_files) - set(new_files))
        lines.append(f"input files: {len(added)} added {added[:3]}, {len(gone)} gone {gone[:3]}"
                     if added or gone else "input files: same files, different order or partitioning")
    return lines


def _join(*parts: str) -> str:
    return FileSystems.join(*parts)


def delete_tree(path: str) -> None:
    """Delete a folder and everything below it, on any filesystem (object stores have no folders:
    every object under the prefix goes)."""
    if "://" not in path:
        import shutil

        shutil.rmtree(path, ignore_errors=True)
        return
    found = [m.path for m in FileSystems.match([_join(path, "**")])[0].metadata_list]
    if found:
        FileSystems.delete(found)


def write_json(path: str, obj: Any) -> None:
    """Write JSON under a temporary name beside `path`, then rename: readers see all or nothing."""
    folder, name = path.rsplit("/", 1)
    tmp = _join(folder, f".tmp-{name}-{uuid.uuid4().hex}")
    with FileSystems.create(tmp) as f:
        f.write((json.dumps(obj, indent=1, sort_keys=True) + "\n").encode("utf-8"))
    if FileSystems.exists(path):
        FileSystems.delete([path])
    FileSystems.rename([tmp], [path])


def read_json(path: str) -> Any:
    with FileSystems.open(path) as f:
        return json.loads(f.read().decode("utf-8"))


def completed(out_dir: str) -> dict[str, dict]:
    """Markers of finished partitions, by name (temporary files are ignored)."""
    folder = _join(out_dir, COMPLETIONS_DIR)
    if not FileSystems.exists(folder):
        return {}
    found = FileSystems.match([_join(folder, "p*.json")])[0].metadata_list
    return {m["name"]: m for m in (read_json(meta.path) for meta in found)}


def _marker_path(out_dir: str, name: str) -> str:
    return _join(out_dir, COMPLETIONS_DIR, f"{name}.json")


def marker(name: str, files: list[str], cfg: Config, manifest: Manifest, folder: str) -> dict[str, Any]:
    """A completion marker: what a finished pass wrote (`folder`, relative to DIR) and counted."""
    return {"name": name, "dir": folder, "files": files, "config_hash": cfg.hash(),
            "totals": dataclasses.asdict(manifest.totals), "counters": manifest.counters,
            "distributions": manifest.distributions, "shuffles": manifest.shuffles,
            "derived": dataclasses.asdict(manifest.derived) if manifest.derived is not None else None,
            "mixture": manifest.mixture,
            "shards": [dataclasses.asdict(s) for v in manifest.shards.values() for s in v]}


def _add(a: Any, b: Any) -> Any:
    """Counts of two partitions together: numbers add, maps merge key by key (nested too)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return {k: _add(a[k], b[k]) if k in a and k in b else (a[k] if k in a else b[k])
                for k in sorted(set(a) | set(b))}
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return a + b
    raise ValueError(f"cannot add partition totals {a!r} and {b!r}")


def _add_all(values: list[Any]) -> Any:
    acc = values[0] if values else {}
    for v in values[1:]:
        acc = _add(acc, v)
    return acc


def merge_totals(parts: list[dict]) -> Totals:
    """Sum every count of Totals, whatever fields it grows (numbers and maps of them, nested)."""
    merged: dict[str, Any] = {}
    for f in dataclasses.fields(Totals):
        values = [p[f.name] for p in parts if f.name in p]
        if values:
            merged[f.name] = _add_all(values)
    return Totals(**merged)


def merge_distributions(parts: list[dict]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for d in parts:
        for name, v in d.items():
            acc = out.setdefault(name, {"count": 0, "sum": 0, "min": v["min"], "max": v["max"]})
            acc["count"] += v["count"]
            acc["sum"] += v["sum"]
            acc["min"] = min(acc["min"], v["min"])
            acc["max"] = max(acc["max"], v["max"])
    return dict(sorted(out.items()))


def merge_derived(parts: list[dict]) -> Optional[Derived]:
    """Derived-row counts of every marker that has them, summed (only the global pass has them when
    partitions hand their rows on; a sum keeps `made == kept + rejected + replaced` either way)."""
    blocks = [d for d in parts if d is not None]
    return Derived(**_add_all(blocks)) if blocks else None


def merge_mixture(parts: list[dict]) -> Optional[dict]:
    """The share report: one pass chose the whole mixture (the global pass), so it is taken whole;
    reports of several passes cannot be added (each chose to its own quotas) and are refused."""
    blocks = [m for m in parts if m is not None]
    if len(blocks) > 1:
        raise ValueError(f"{len(blocks)} passes each mixed to their own shares; a run has one mixture")
    return blocks[0] if blocks else None


def settle_pending(global_totals: dict) -> dict:
    """The global pass's totals as they add to the partitions': its input rows are the rows the
    partitions left pending (read and counted there), so they resolve `pending` instead of adding
    to `input_rows`."""
    return {**global_totals, "input_rows": 0,
            "pending": global_totals.get("pending", 0) - global_totals["input_rows"]}


def merge(out_dir: str, pipeline: str, cfg: Config, markers: list[dict]) -> Manifest:
    """One manifest over every partition's marker (and the global pass's, last); shard paths become
    relative to DIR."""
    from schemas.manifest import library_versions
    from schemas.version import PIPELINE_VERSION

    shards: dict[str, list[ShardInfo]] = {}
    counters: dict[str, int] = {}
    for m in markers:
        folder = m.get("dir") or f"{PARTITIONS_DIR}/{m['name']}"
        for s in m["shards"]:
            info = ShardInfo(**{**s, "path": f"{folder}/{s['path']}"})
            shards.setdefault(info.kind, []).append(info)
        for k, v in m["counters"].items():
            counters[k] = counters.get(k, 0) + v
    totals = merge_totals([settle_pending(m["totals"]) if m["name"] == GLOBAL_PASS else m["totals"] for m in markers])
    return Manifest(
        pipeline=pipeline, pipeline_version=PIPELINE_VERSION, config_name=cfg.name, config_hash=cfg.hash(),
        config=cfg.to_dict(), inputs=[{"path": i.path, "source": i.source, "format": i.format} for i in cfg.inputs],
        totals=totals, shards={k: sorted(v, key=ShardInfo.sort_key) for k, v in sorted(shards.items())},
        versions=library_versions(), counters=dict(sorted(counters.items())),
        shuffles=_add_all([m.get("shuffles", {}) for m in markers]),
        distributions=merge_distributions([m.get("distributions", {}) for m in markers]),
        partitions={"count": sum(m["name"] != GLOBAL_PASS for m in markers),
                    "files_per_partition": cfg.output.partition_files,
                    **({"global_pass": True} if any(m["name"] == GLOBAL_PASS for m in markers) else {})},
        derived=merge_derived([m.get("derived") for m in markers]),
        mixture=merge_mixture([m.get("mixture") for m in markers]))


def run_partitions(pipeline: str, cfg: Config, out_dir: str, resume: bool,
                   run_one: Callable[[Config, str], Manifest], say: Callable[[str], None],
                   in_flight: int = 1,
                   global_pass: Optional[Callable[[Config, str, list[str]], Manifest]] = None) -> Manifest:
    """Run every partition that has no completion marker (`in_flight` pipelines at a time: on
    Dataflow or Flink each is a job of its own), then, for a pipeline with a global pass (the
    mixture's shares), that pass over every partition's output unless its marker exists, then
    merge all markers."""
    parts = plan(cfg)
    state = run_state(pipeline, cfg, parts)
    state_path = _join(out_dir, RUN_STATE_FILE)
    if resume:
        if not FileSystems.exists(state_path):
            raise SystemExit(f"--resume: {out_dir} holds no {RUN_STATE_FILE}; start the run without --resume")
        changed = differences(read_json(state_path), state)
        if changed:
            raise SystemExit("--resume refused: the recipe or inputs changed since the run started "
                             f"({out_dir}/{RUN_STATE_FILE}):\n  " + "\n  ".join(changed)
                             + "\nrerun with the original recipe, or start a new run with --overwrite")
    else:
        write_json(state_path, state)
    done = completed(out_dir)
    todo = [p for p in parts if p.name not in done]
    global_marker = _marker_path(out_dir, GLOBAL_PASS)
    if todo and global_pass is not None and FileSystems.exists(global_marker):
        # the engine writes the global marker only after every partition's: one went missing since
        raise SystemExit(f"{global_marker} exists but partitions {[p.name for p in todo][:5]} have no marker: "
                         "the global pass was made from other partition output; start the run again with --overwrite")
    say(f"{len(parts)} partitions of up to {cfg.output.partition_files} files: "
        f"{len(parts) - len(todo)} already complete, {len(todo)} to run")
    started = time.time()
    finished = []

    def run_partition(part: Partition) -> Manifest:
        part_dir = _join(out_dir, PARTITIONS_DIR, part.name)
        delete_tree(part_dir)   # what a partition that did not finish left: it starts again
        manifest = run_one(partition_config(cfg, part), part_dir)
        write_json(_marker_path(out_dir, part.name),
                   marker(part.name, part.paths, cfg, manifest, f"{PARTITIONS_DIR}/{part.name}"))
        finished.append(part.name)
        elapsed = time.time() - started
        eta = elapsed / len(finished) * (len(todo) - len(finished))
        say(f"partition {part.name} done ({len(finished)}/{len(todo)}): {manifest.totals.input_rows:,} rows in, "
            f"{manifest.totals.kept:,} kept; {elapsed:.0f} s so far, about {eta:.0f} s left")
        return manifest

    if in_flight <= 1:
        for part in todo:
            run_partition(part)
    else:   # every partition runs to its end (and marker) even when another one fails
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=in_flight, thread_name_prefix="partition") as pool:
            futures = [pool.submit(run_partition, part) for part in todo]
        for f in futures:
            f.result()
    done = completed(out_dir)
    markers = [done[p.name] for p in parts]
    if global_pass is not None:
        markers.append(run_global_pass(cfg, out_dir, parts, global_pass, say))
    return merge(out_dir, pipeline, cfg, markers)


def run_global_pass(cfg: Config, out_dir: str, parts: list[Partition],
                    global_pass: Callable[[Config, str, list[str]], Manifest], say: Callable[[str], None]) -> dict:
    """The pass over every partition's output (DIR/global/), committed by completions/global.json like
    a partition; a pass that did not finish is deleted and run again. Its marker is returned."""
    path = _marker_path(out_dir, GLOBAL_PASS)
    staged = [_join(out_dir, PARTITIONS_DIR, p.name, STAGED_DIR) for p in parts]
    if not FileSystems.exists(path):
        folder = _join(out_dir, GLOBAL_PASS)
        delete_tree(folder)
        started = time.time()
        manifest = global_pass(cfg, folder, [_join(out_dir, PARTITIONS_DIR, p.name) for p in parts])
        write_json(path, marker(GLOBAL_PASS, [], cfg, manifest, GLOBAL_PASS))
        staged_bytes = sum(m.size_in_bytes for r in FileSystems.match([_join(d, "*") for d in staged])
                           for m in r.metadata_list)
        say(f"global pass done: {manifest.totals.input_rows:,} rows from the partitions ({staged_bytes / 1e6:,.1f} MB "
            f"staged), {manifest.totals.kept:,} kept; {time.time() - started:.0f} s")
    else:
        say("global pass already complete")
    for folder in staged:     # committed: the staged rows (as large as the candidates' media) are not needed again
        delete_tree(folder)   # (also when a run was killed between the commit and this cleanup)
    return read_json(path)


_SAY = threading.Lock()


def stderr_say(text: str) -> None:
    with _SAY:   # partitions in flight report from their own threads: one whole line at a time
        sys.stderr.write(f"[resume] {text}\n")
        sys.stderr.flush()
