"""bench/gpu_check.sh in its CPU mode (what CI can run): every path's CPU side works and prints one
JSON line; the GPU sides are untested until a GPU machine runs the script (README)."""
from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow


def test_gpu_check_cpu_mode_prints_one_line_per_path():
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([os.path.join(ROOT, "bench", "gpu_check.sh"), "--cpu-only"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=400)
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    by_path = {r["path"]: r for r in lines}
    assert list(by_path) == ["decord_nvdec", "faiss_gpu", "clip_cuda", "recaption_cuda", "trainer_bf16",
                             "trainer_fsdp"], proc.stderr[-2000:]
    for name in ("decord_nvdec", "faiss_gpu", "clip_cuda", "recaption_cuda"):
        assert by_path[name]["ok"] is True and by_path[name]["device"] == "cpu", by_path[name]
        assert by_path[name]["cpu_seconds"] > 0
    assert by_path["trainer_bf16"]["ok"] is True and by_path["trainer_bf16"]["cpu_seconds"] > 0   # a real CPU run
    assert by_path["trainer_fsdp"]["ok"] is None and by_path["trainer_fsdp"]["skipped"]          # needs GPUs
    assert proc.returncode == 0
