"""A partitioned build_mixture run: partitions stage their candidates and one global pass chooses the
shares over the whole input. Killed with SIGKILL part-way (in a partition, then in the global pass)
and resumed, it gives what an uninterrupted partitioned run gives (rows, totals, derived and mixture
blocks, shard bytes), and it keeps the rows a one-pass run keeps; the merge rules themselves are
checked on hand-made markers."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import tarfile
import time

import pyarrow.parquet as pq
import pytest

from pipelines.build_mixture import build_mixture
from pipelines.launch import run
from pipelines.resume import GLOBAL_PASS, merge, settle_pending
from schemas.config import load_config
from schemas.manifest import Manifest
from tests.conftest import ROOT
from tests.test_resume import digests, rows

VOCAB = ("apple river stone cloud maple violet orange silver copper garden window bridge candle forest meadow harbor "
         "lantern marble pepper rocket saddle temple velvet walnut yellow zephyr anchor basket cactus dragon engine "
         "falcon glacier hammer island jungle kettle ladder magnet needle oyster parrot quartz ribbon").split()
# Two modes with no generator: traced QA rows make thinking and non-thinking rows, plain QA rows non-thinking.
# Near and semantic dedupe (tested with curate's resume and on their own) are off: they halve the runs' time.
RECIPE = ["mixture.builders.auto_think.enabled=false", "mixture.builders.think_with_image.enabled=false",
          "mixture.builders.video.enabled=false", "mixture.builders.thinking.generate=false",
          "dedupe.near.enabled=false", "dedupe.semantic.enabled=false", "output.shard_max_rows=16"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Four JSONL files, one kind of row each pair: partition p000000 holds only traced rows, p000001
    only plain ones, so mixing each partition to the shares on its own could not meet them."""
    folder = tmp_path_factory.mktemp("mixresume_in")
    rng = random.Random(13)
    for name, traced in (("a0", True), ("a1", True), ("b0", False), ("b1", False)):
        lines = []
        for i in range(10):
            answer = str(rng.randint(1, 999))
            row = {"question": " ".join(rng.choice(VOCAB) for _ in range(8)) + f" ({name} {i})?", "answer": answer}
            if traced:
                row["reasoning"] = " ".join(rng.choice(VOCAB) for _ in range(24)) + f", so the answer is {answer}."
            lines.append(json.dumps(row))
        lines.append("{not json")
        (folder / f"{name}.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def argv(inputs, out, *extra, partition_files=2):
    args = ["--input", str(inputs), "--output", str(out), "--progress_s", "0",
            "--set", f"output.partition_files={partition_files}", *extra]
    for o in RECIPE:
        args += ["--set", o]
    return args


@pytest.fixture(scope="module")
def whole(inputs, tmp_path_factory):
    """An uninterrupted partitioned run: (manifest, output folder)."""
    out = tmp_path_factory.mktemp("mixresume_whole")
    return run("build_mixture", build_mixture, argv(inputs, out)), out


def kill_when(args, out, marker: str, settle_s: float) -> None:
    """Start build_mixture in a subprocess and SIGKILL it `settle_s` after `completions/<marker>` appears."""
    env = {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.build_mixture", *args], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    path = out / "completions" / marker
    deadline = time.time() + 180
    while not path.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    time.sleep(settle_s)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert path.exists(), f"the run ended before {marker} was written"


def assert_final_names_whole(folder) -> None:
    """No partial shard is visible under its final name."""
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            if name.endswith(".parquet"):
                pq.read_table(path)
            elif name.endswith(".tar"):
                with tarfile.open(path) as tar:
                    for member in tar:
                        tar.extractfile(member).read()


@pytest.mark.slow
def test_killed_mixture_resumes_to_the_uninterrupted_result(inputs, whole, tmp_path):
    whole, whole_dir = whole
    assert whole.partitions == {"count": 2, "files_per_partition": 2, "global_pass": True}
    assert whole.totals.balanced and whole.derived.balanced and whole.totals.pending == 0

    killed = tmp_path / "killed"
    kill_when(argv(inputs, killed), killed, "p000000.json", 0.5)            # in partition p000001
    assert not (killed / "completions" / "p000001.json").exists(), "the run finished its partitions before the kill"
    assert_final_names_whole(killed / "partitions")
    kill_when(argv(inputs, killed, "--resume"), killed, "p000001.json", 0.5)  # in the global pass
    assert not (killed / "completions" / f"{GLOBAL_PASS}.json").exists(), "the global pass finished before the kill"
    assert not (killed / "manifest.json").exists()
    assert_final_names_whole(killed)

    # resumed as a user would: `python -m` (the builder module is __main__) on two worker processes,
    # so every element the global pass ships between processes must unpickle there
    env = {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "pipelines.build_mixture", *argv(inputs, killed, "--resume"),
                           "--direct_num_workers", "2", "--direct_running_mode", "multi_processing"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    resumed = Manifest.load(str(killed))
    assert resumed.totals == whole.totals and resumed.totals.balanced
    assert resumed.derived == whole.derived and resumed.derived.balanced
    assert resumed.mixture == whole.mixture
    assert resumed.summary() == whole.summary()
    assert digests(killed) == digests(whole_dir) and any(p.startswith(GLOBAL_PASS) for p in digests(killed))
    assert rows(killed, "parquet", ["id", "mode"]) == rows(whole_dir, "parquet", ["id", "mode"])
    assert (rows(killed, "rejected", ["id", "source_ref", "stage", "reason"])     # derived rejections too
            == rows(whole_dir, "rejected", ["id", "source_ref", "stage", "reason"]))
    assert resumed.counters["keye:ingest/rows"] == whole.totals.input_rows == 4 * 11
    assert resumed.counters == whole.counters          # each pass's counters, once, whichever process ran it
    assert ({k: v["elements"] for k, v in resumed.shuffles.items()} == {k: v["elements"] for k, v in whole.shuffles.items()}
            and any(k.startswith("Mixture/Mix/") for k in resumed.shuffles))
    assert not list(killed.glob("partitions/*/staged")), "staged candidates outlived the committed global pass"
    # the export reads the merged shard index: every kept row of the global pass, beside its folder
    from pipelines.export import main as export

    assert export(["--format", "swift", str(killed)]) == 0
    exported = json.loads((killed / "export" / "swift" / "export.json").read_text())
    assert exported["rows"] + exported["skipped"] == whole.derived.kept
    assert {p["path"].split("/")[0] for p in exported["parts"]} == {GLOBAL_PASS}
    # a partition's own manifest leaves the rows that entered the mixture pending: not balanced on its own
    part = json.loads((killed / "partitions" / "p000000" / "manifest.json").read_text())["totals"]
    assert part["pending"] > 0 and part["kept"] == 0 and not part["balanced"]


@pytest.mark.slow
def test_global_mix_meets_the_shares_and_keeps_what_one_pass_keeps(inputs, whole, tmp_path):
    """The shares hold for the whole run: p000001 alone has only non-thinking rows, yet the merged
    mixture is within one row of every target; and with no duplicates across partitions, the rows
    kept are the rows a one-pass run keeps."""
    whole, whole_dir = whole
    cats = whole.mixture["categories"]
    present = {c: v for c, v in cats.items() if not v["missing"] and v["target_weight"] > 0}
    assert set(present) == {"non_thinking", "thinking"}
    for c, v in present.items():
        assert abs(v["achieved_samples"] - v["target_samples"]) <= 1, (c, v)
    assert sum(v["achieved_samples"] for v in cats.values()) == whole.derived.kept
    assert 0 < whole.derived.rejected_by_reason["mixture/over_share"]

    one = tmp_path / "one"
    one_pass = run("build_mixture", build_mixture, argv(inputs, one, partition_files=0))
    assert one_pass.partitions is None
    assert rows(one, "parquet", ["id", "mode"]) == rows(whole_dir, "parquet", ["id", "mode"])
    assert one_pass.mixture == whole.mixture and one_pass.derived == whole.derived
    assert (one_pass.totals.input_rows, one_pass.totals.kept, one_pass.totals.rejected_by_reason) == \
        (whole.totals.input_rows, whole.totals.kept, whole.totals.rejected_by_reason)


@pytest.mark.slow
def test_mixture_resume_refuses_a_changed_recipe(inputs, whole, tmp_path):
    import shutil

    _, out = whole
    tampered = tmp_path / "tampered"     # a partition marker removed after the global pass was committed
    shutil.copytree(out, tampered)
    (tampered / "completions" / "p000001.json").unlink()
    with pytest.raises(SystemExit, match=r"global\.json exists but partitions \['p000001'\] have no marker"):
        run("build_mixture", build_mixture, argv(inputs, tampered, "--resume"))
    with pytest.raises(SystemExit, match=r"mixture\.shares\.unit: 'samples' -> 'tokens'"):
        run("build_mixture", build_mixture, argv(inputs, out, "--resume", "--set", "mixture.shares.unit=tokens"))
    with pytest.raises(SystemExit, match=r"mixture\.mixing\.seed: 0 -> 5"):
        run("build_mixture", build_mixture, argv(inputs, out, "--resume", "--set", "mixture.mixing.seed=5"))


# --- the merge rules, on hand-made markers (fast) -----------------------------------------------------------
def _marker(name, totals, derived=None, mixture=None):
    base = {"input_rows": 0, "kept": 0, "rejected": 0, "rejected_by_reason": {}}
    return {"name": name, "dir": name if name == GLOBAL_PASS else f"partitions/{name}", "files": [],
            "totals": {**base, **totals}, "counters": {"keye:ingest/rows": totals.get("input_rows", 0)},
            "distributions": {}, "shuffles": {}, "shards": [], "derived": derived, "mixture": mixture}


PARTS = [_marker("p000000", {"input_rows": 10, "rejected": 2, "rejected_by_reason": {"ingest/malformed_json": 2},
                             "pending": 8}),
         _marker("p000001", {"input_rows": 5, "rejected": 1, "rejected_by_reason": {"mixture/no_mode": 1},
                             "pending": 4})]
DERIVED = {"made": 20, "kept": 9, "rejected": 11, "replaced": 0, "rejected_by_reason": {"mixture/over_share": 11},
           "made_by": {"mixture/thinking": {"inputs": 12, "rows": 20, "rejected": 0, "replaced": 0}}}
GLOBAL = _marker(GLOBAL_PASS, {"input_rows": 12, "kept": 9, "rejected": 3,
                               "rejected_by_reason": {"mixture/over_share": 3}},
                 derived=DERIVED, mixture={"unit": "samples", "categories": {}})


def test_merge_resolves_pending_rows_with_the_global_pass(tmp_path):
    cfg = load_config(None, ["output.partition_files=1"])
    m = merge(str(tmp_path), "build_mixture", cfg, PARTS + [GLOBAL])
    t = m.totals
    assert (t.input_rows, t.kept, t.rejected, t.pending) == (15, 9, 6, 0) and t.balanced
    assert t.rejected_by_reason == {"ingest/malformed_json": 2, "mixture/no_mode": 1, "mixture/over_share": 3}
    assert m.derived.balanced and m.derived.made == 20 and m.mixture == GLOBAL["mixture"]
    assert m.partitions == {"count": 2, "files_per_partition": 1, "global_pass": True}
    assert m.counters["keye:ingest/rows"] == 27        # counters are what each pass counted, summed
    assert settle_pending(GLOBAL["totals"])["pending"] == -12

    without = merge(str(tmp_path), "build_mixture", cfg, PARTS)   # the global pass never ran
    assert without.partitions == {"count": 2, "files_per_partition": 1}
    assert without.totals.pending == 12 and without.totals.rows_add_up and not without.totals.balanced


def test_merged_run_is_not_balanced_when_input_went_unread(tmp_path):
    cfg = load_config(None, ["output.partition_files=1"])
    unread = _marker("p000002", {"input_rows": 0, "unread_bytes": 4096, "unread_files": 1})
    m = merge(str(tmp_path), "build_mixture", cfg, PARTS + [unread, GLOBAL])
    assert m.totals.rows_add_up and m.totals.unread_bytes == 4096 and not m.totals.balanced
    assert json.loads(m.to_json())["totals"]["balanced"] is False


def test_two_passes_that_each_mixed_cannot_be_merged(tmp_path):
    cfg = load_config(None, ["output.partition_files=1"])
    own_mix = [_marker(p["name"], p["totals"], mixture={"unit": "samples", "categories": {}}) for p in PARTS]
    with pytest.raises(ValueError, match="one mixture"):
        merge(str(tmp_path), "build_mixture", cfg, own_mix)


def test_build_mixture_builds_the_decontamination_index_once(inputs, tmp_path):
    """Curation and the mixture's gate on generated rows judge against one index (built once), and
    a partition pipeline holds one too; the global pass needs none."""
    import apache_beam as beam

    from pipelines.build_mixture import build_global, build_partition
    from schemas.config import InputConfig

    bench = tmp_path / "bench.jsonl"
    bench.write_text(json.dumps({"question": "what is shown?", "answer": "a cat"}) + "\n")
    cfg = load_config(None, [f"decontaminate.benchmarks=[{{name: b, path: {bench}}}]", *RECIPE]).with_inputs(
        [InputConfig(path=str(inputs), source=None, format="auto")])

    def transforms(build, *args) -> tuple[int, int]:
        """(stages that judge rows against benchmarks, index builds) in the pipeline graph."""
        p = beam.Pipeline()
        build(p, cfg, str(tmp_path / "out"), *args)
        names = [t.unique_name for t in p.to_runner_api().components.transforms.values()]
        return sum(n.endswith("/Judge") for n in names), sum(n.endswith("/BuildIndex") for n in names)

    assert transforms(build_mixture) == (2, 1)
    assert transforms(build_partition) == (2, 1)
    with pytest.raises(RuntimeError, match="no staged rows"):          # a partition's staged files are gone
        transforms(build_global, [str(tmp_path / "p")])
    (tmp_path / "p" / "staged").mkdir(parents=True)
    (tmp_path / "p" / "staged" / "part-00000-of-00001.avro").write_bytes(b"")
    assert transforms(build_global, [str(tmp_path / "p")]) == (0, 0)


def test_a_moved_model_endpoint_is_not_a_recipe_change():
    """A generator restarted on another port (the demo's reasoner takes a free one) may resume; its model may not change."""
    from pipelines.resume import differences, run_state

    def state(url, model):
        cfg = load_config(None, ["output.partition_files=1", f"mixture.builders.generator.openai.base_url={url}",
                                 f"mixture.builders.generator.openai.model={model}"])
        return run_state("build_mixture", cfg, [])

    assert differences(state("http://127.0.0.1:8001/v1", "m"), state("http://127.0.0.1:9999/v1", "m")) == []
    assert differences(state("http://a/v1", "m"), state("http://a/v1", "n")) == [
        "mixture.builders.generator.openai.model: 'm' -> 'n'"]


def test_staged_rows_come_back_whole(tmp_path):
    """What a partition stages is what the global pass reads: a candidate's frames (blobs) and vectors,
    which Parquet shards never hold, rejected rows, ids and made counts, each under its kind."""
    import apache_beam as beam
    import numpy as np

    from pipelines.build_mixture import STAGED_KINDS, ReadStaged, WriteStaged
    from pipelines.mixture import CANDIDATES, DERIVED_REJECTED, ENTERED, MADE
    from schemas.reasons import Reason, Stage
    from schemas.rejected import reject
    from tests.beam_util import run_collect
    from tests.test_shards import sample

    row = sample(3)
    row.embeddings = {"clip_image": np.arange(4, dtype=np.float32)}
    values = {CANDIDATES: [row], ENTERED: ["a", "b"], MADE: [("thinking", (1, 2, 0, 0))],
              DERIVED_REJECTED: [reject(Stage.MIXTURE, Reason.TOO_EASY, "s", "f:1", "solved 4/4", id="a@think")]}
    prefix = str(tmp_path / "p" / "staged" / "part")
    with beam.Pipeline() as p:
        _ = {k: p | f"Create{k}" >> beam.Create(v) for k, v in values.items()} | WriteStaged(prefix)
    back = run_collect([None], lambda pc: pc.pipeline | "ReadStaged" >> ReadStaged([prefix + "-*.avro"]))
    assert set(STAGED_KINDS) == set(values)
    got = back[CANDIDATES][0]
    assert got.blobs == row.blobs and got.to_json() == row.to_json()
    assert got.embeddings["clip_image"].tolist() == [0.0, 1.0, 2.0, 3.0]
    assert sorted(back[ENTERED]) == ["a", "b"] and back[MADE] == values[MADE]
    assert back[DERIVED_REJECTED][0].id == "a@think" and back[DERIVED_REJECTED][0].reason == Reason.TOO_EASY.value
