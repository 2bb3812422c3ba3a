"""The hostile-input corpus (tests/hostile_corpus.py) through `curate`, end to end: the run
finishes, every row gets its planned outcome, the manifest adds up, the input it could not
read is reported as unread (so the run is not balanced), and nothing outside the allowed
media roots, nor the corpus's absolute location, reaches an output."""
from __future__ import annotations

import json
import os

import pyarrow.parquet as pq
import pytest

from pipelines.curate import build_curate
from pipelines.launch import run
from tests.hostile_corpus import build

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    plan = build(root)
    out = root / "out"
    manifest = run("curate", build_curate, [
        "--input", str(root / "in"), "--output", str(out), "--progress_s", "0",
        "--set", f"ingest.media_roots={json.dumps([str(root / 'media')])}",
        "--set", "dedupe.semantic.enabled=false", "--set", "media.decode.timeout_s=20"])
    kept = pq.read_table(str(out / "parquet")).to_pylist()
    rejected = pq.read_table(str(out / "rejected")).to_pylist()
    return root, plan, manifest, kept, rejected


def test_every_row_gets_its_planned_outcome(hostile_run):
    _, plan, _, kept, rejected = hostile_run
    got = {r["source_ref"]: None for r in kept}
    got.update({r["source_ref"]: (r["stage"], r["reason"]) for r in rejected})
    partial = {ref: v for ref, v in got.items() if ref.split(":", 1)[0] in plan.partial}
    planned = {ref: v for ref, v in got.items() if ref not in partial}
    assert planned == plan.expect
    for name, at_least in plan.partial.items():
        assert partial.pop(f"{name}:rest") == ("ingest", "unreadable_file")
        assert len(partial) >= at_least, "rows before the corruption are read"


def test_manifest_adds_up_and_says_what_was_not_read(hostile_run):
    root, plan, manifest, kept, rejected = hostile_run
    t = manifest.totals
    assert t.rows_add_up and t.input_rows == len(kept) + len(rejected)
    assert t.unread_files == len(plan.unread_files) and t.unread_bytes > 0
    assert not t.balanced      # input was left unread: never reported balanced
    on_disk = json.loads((root / "out" / "manifest.json").read_text())["totals"]
    assert on_disk["balanced"] is False and on_disk["unread_bytes"] == t.unread_bytes
    unread = {r["source_ref"].split(":")[0] for r in rejected
              if "not read" in r["detail"] or r["source_ref"].endswith(":rest")}
    assert plan.unread_files <= unread


def test_no_outside_bytes_and_no_absolute_location_in_outputs(hostile_run):
    root, _, _, kept, _ = hostile_run
    secret = (root / "outside" / "secret.png").read_bytes()
    location = str(root).encode()
    for folder in ("parquet", "wds", "rejected"):
        for name in os.listdir(root / "out" / folder):
            data = (root / "out" / folder / name).read_bytes()
            assert location not in data, f"{folder}/{name} names the corpus's absolute location"
            assert secret[:64] not in data
    uris = sorted(m["uri"] for r in kept for m in r["media"])
    assert "../media/ok.png" in uris and "../media/inside_link.png" in uris and "odd/dir\\xfe/img.png" in uris
    assert all(not u.startswith("/") for u in uris), uris
