"""Resumable runs: a run killed with SIGKILL part-way and resumed gives what an uninterrupted run
gives (rows, totals, shard bytes); a changed recipe is refused; the shard index reads with pyarrow."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import tarfile
import time

import pyarrow.parquet as pq
import pytest

from pipelines.curate import build_curate
from pipelines.launch import run
from schemas.manifest import Manifest, read_shard_index
from tests.conftest import ROOT

pytestmark = pytest.mark.slow
WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma".split()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Six JSONL files: distinct rows, a duplicate inside each file, a malformed line each."""
    folder = tmp_path_factory.mktemp("resume_in")
    for f in range(6):
        lines = [json.dumps({"text": " ".join(WORDS[(f * 7 + i * j) % len(WORDS)] for j in range(3 + i % 9))
                             + f" file {f} row {i}"}) for i in range(25)]
        lines += [lines[3], "{not json"]
        (folder / f"part{f}.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def argv(inputs, out, *extra):
    return ["--input", str(inputs), "--output", str(out), "--progress_s", "0",
            "--set", "output.partition_files=2", "--set", "output.shard_max_rows=10", *extra]


def digests(out) -> dict[str, str]:
    found = {}
    for folder, _, names in os.walk(out):      # partitions/ and, for build_mixture, global/
        for name in names:
            path = os.path.join(folder, name)
            if name.endswith((".parquet", ".tar")) and name != "shards.parquet":
                found[os.path.relpath(path, out)] = hashlib.sha256(open(path, "rb").read()).hexdigest()
    return found


def rows(out, kind: str, columns: list[str]) -> list[tuple]:
    index = read_shard_index(str(out))
    table = [pq.read_table(out / s.path, columns=columns).to_pylist() for s in index[kind]]
    return sorted((tuple(r[c] for c in columns) for t in table for r in t),   # an unparsable row has no id
                  key=lambda row: tuple((x is not None, x) for x in row))


@pytest.fixture(scope="module")
def whole(inputs, tmp_path_factory):
    """An uninterrupted partitioned run: (manifest, output folder)."""
    out = tmp_path_factory.mktemp("resume_whole")
    return run("curate", build_curate, argv(inputs, out)), out


def test_killed_run_resumes_to_the_uninterrupted_result(inputs, whole, tmp_path):
    whole, whole_dir = whole
    assert whole.partitions == {"count": 3, "files_per_partition": 2}

    killed = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.curate", *argv(inputs, killed)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    first = killed / "completions" / "p000000.json"
    deadline = time.time() + 120
    while not first.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)                       # into the next partition
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert first.exists(), "the run ended before its first partition completed"
    assert not (killed / "completions" / "p000002.json").exists(), "the run finished before it was killed"
    assert not (killed / "manifest.json").exists()
    for folder, _, names in os.walk(killed / "partitions"):   # whatever has its final name is whole
        for name in names:
            path = os.path.join(folder, name)
            if name.endswith(".parquet"):
                pq.read_table(path)
            elif name.endswith(".tar"):
                with tarfile.open(path) as tar:
                    for member in tar:
                        tar.extractfile(member).read()
            else:
                assert name.startswith(".tmp-") or name == "manifest.json", path

    resumed = run("curate", build_curate, argv(inputs, killed, "--resume", "--partitions_in_flight", "2"))
    assert resumed.totals == whole.totals and resumed.totals.balanced
    assert resumed.summary() == whole.summary()
    assert digests(killed) == digests(whole_dir) and digests(killed)
    assert rows(killed, "parquet", ["id", "source_ref"]) == rows(whole_dir, "parquet", ["id", "source_ref"])
    assert (rows(killed, "rejected", ["source_ref", "stage", "reason"])
            == rows(whole_dir, "rejected", ["source_ref", "stage", "reason"]))
    assert resumed.counters["keye:ingest/rows"] == whole.totals.input_rows == 6 * 27
    # bytes into each shuffle, summed over partitions; combines (lifted by runners) are not shuffles of rows
    assert resumed.shuffles["WriteSamples/Shard/GroupBucket"]["elements"] == whole.totals.kept
    assert resumed.shuffles["WriteSamples/Shard/GroupBucket"]["bytes"] > 100 * whole.totals.kept
    assert not any("CombinePerKey" in name for name in resumed.shuffles)
    # the index is plain Parquet, and manifest.json no longer lists shards
    index = pq.read_table(killed / "shards.parquet")
    assert index.column_names == ["kind", "path", "rows", "bytes", "sha256"]
    assert sum(r for k, r in zip(index["kind"].to_pylist(), index["rows"].to_pylist()) if k == "parquet") \
        == whole.totals.kept
    assert "shards" not in json.loads((killed / "manifest.json").read_text())
    assert Manifest.load(str(killed)).shards == resumed.shards


def test_resume_refuses_a_changed_recipe(inputs, whole):
    whole, out = whole
    with pytest.raises(SystemExit, match=r"text\.min_chars: 1 -> 40"):
        run("curate", build_curate, argv(inputs, out, "--resume", "--set", "text.min_chars=40"))
    (inputs / "part9.jsonl").write_text('{"text": "late"}\n')
    try:
        with pytest.raises(SystemExit, match=r"input files: 1 added .*part9\.jsonl"):
            run("curate", build_curate, argv(inputs, out, "--resume"))
    finally:
        (inputs / "part9.jsonl").unlink()
    with pytest.raises(SystemExit, match="already holds"):
        run("curate", build_curate, argv(inputs, out))
    # nothing left to do: resuming a finished run merges the markers again
    again = run("curate", build_curate, argv(inputs, out, "--resume"))
    assert again.totals == whole.totals and again.shards == whole.shards


def test_resume_needs_a_partitioned_run(inputs, tmp_path):
    with pytest.raises(SystemExit, match="partition_files"):
        run("curate", build_curate, ["--input", str(inputs), "--output", str(tmp_path / "o"), "--resume"])


def test_partition_totals_add_up_whatever_fields_they_grow():
    from pipelines.resume import merge_totals

    a = {"input_rows": 3, "kept": 2, "rejected": 1, "rejected_by_reason": {"text/empty_text": 1},
         "kept_by_task": {"caption": 2}}
    b = {"input_rows": 2, "kept": 2, "rejected": 0, "rejected_by_reason": {}, "kept_by_task": {"caption": 1, "vqa": 1}}
    t = merge_totals([a, b])
    assert (t.input_rows, t.kept, t.rejected) == (5, 4, 1) and t.balanced
    assert t.kept_by_task == {"caption": 3, "vqa": 1} and t.rejected_by_reason == {"text/empty_text": 1}


def test_manifest_written_before_the_index_still_loads(whole, tmp_path):
    """An output whose manifest.json lists its shards (before shards.parquet existed) loads the same."""
    import shutil

    manifest, out = whole
    old = tmp_path / "old"
    shutil.copytree(out, old)
    d = json.loads((old / "manifest.json").read_text())
    d.pop("shard_summary")
    d["shards"] = {k: [vars(s) for s in v] for k, v in manifest.shards.items()}
    (old / "manifest.json").write_text(json.dumps(d))
    (old / "shards.parquet").unlink()
    assert Manifest.load(str(old)).shards == manifest.shards
