"""The demo as a user runs it (`--demo --output A`, then `--output B`): the corpus is generated
under each output folder, yet every shard is byte-for-byte the same. Media uris are stored
relative to the input root and the recipe hash leaves data locations out."""
from __future__ import annotations

import hashlib
import os

import pytest

from pipelines.build_mixture import build_mixture
from pipelines.launch import run

pytestmark = pytest.mark.slow


def shard_bytes(out) -> dict[str, str]:
    digests = {}
    for kind in ("parquet", "wds", "rejected", "embeddings"):
        folder = os.path.join(out, kind)
        for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
            with open(os.path.join(folder, name), "rb") as f:
                digests[f"{kind}/{name}"] = hashlib.sha256(f.read()).hexdigest()
    return digests


def test_demo_is_byte_identical_across_output_folders(tmp_path):
    """...and whether media bytes wait in the blob store (A, the default) or travel in the rows (B)."""
    a, b = tmp_path / "A", tmp_path / "deeper" / "folder B"
    manifests = {}
    for out, extra in ((a, []), (b, ["--set", "output.blob_store=false"])):
        m = run("build_mixture", build_mixture, ["--demo", "--output", str(out), "--progress_s", "0", *extra])
        assert m.totals.balanced
        manifests[out] = m
    assert not (a / "_blobs").exists()              # the store is gone once the manifest is written
    # the writer's shuffle moved rows without their frames in A (0.4-0.65x on the demo's tiny media;
    # sampled sizes vary by +-10%)
    write_a, write_b = (manifests[o].shuffles["WriteSamples/Shard/GroupBucket"]["bytes"] for o in (a, b))
    assert write_a < 0.75 * write_b, (write_a, write_b)
    first, second = shard_bytes(a), shard_bytes(b)
    assert first and {k.split("/")[0] for k in first} >= {"parquet", "wds", "rejected"}
    assert first == second
    for kind_name in first:       # and no shard names where its corpus sits
        data = (a / kind_name).read_bytes()
        assert str(a).encode() not in data, kind_name
