"""The evidence run split across machines: train on a GPU machine (no Beam, no PyAV), score elsewhere.

`trainer.evidence --phase train` keeps its recipe overrides in WORK/overrides.json, so `--phase score`
rebuilds the very untrained model instead of receiving it; `bench.evidence_gpu` fits stage 2's steps
to a time budget and packs each checkpoint into a tar small enough to copy back.
"""
from __future__ import annotations

import json
import os
import shutil
import tarfile
import time

import pytest
import torch
from safetensors.torch import load_file

from bench.evidence_gpu import fit_steps, pack
from trainer.evidence import recipe_overrides, train_all, trained
from trainer.motion_probe import probe
from trainer.train import resolve_device


def test_cuda_names_each_ranks_own_gpu():
    # torch.cuda.set_device("cuda") raises on torch 2.11 (seen on the first GPU run): the index is added
    assert resolve_device("cuda", 0) == "cuda:0"
    assert resolve_device("cuda", 3) == "cuda:3"
    assert resolve_device("cuda:1", 3) == "cuda:1"
    assert resolve_device("cpu", 3) == "cpu"


def test_fit_steps_ends_the_schedule_by_the_deadline(tmp_path):
    with open(tmp_path / "log.jsonl", "w", encoding="utf-8") as f:
        for i, s in enumerate([2.0, 1.5, 0.1, 0.1, 0.1, 0.1]):     # slow first steps: start-up, ignored
            f.write(json.dumps({"step": 5 * (i + 1), "loss": 1.0, "step_s": s}) + "\n")
    now = time.time()
    steps = fit_steps(str(tmp_path), now + 25 + 150)                # 150 s left after the save margin
    assert 900 <= steps <= 1000                                     # 150 s / (0.1 s x 1.5)
    assert fit_steps(str(tmp_path), now) == 50                      # never fewer than the floor
    assert fit_steps(str(tmp_path), now + 1e9) == 200_000           # nor more than the cap


@pytest.mark.slow
def test_train_on_one_machine_score_on_another(trainer_data, tmp_path, monkeypatch):
    import trainer.train

    data, _ = trainer_data
    work = str(tmp_path / "gpu" / "tiny")
    overrides = recipe_overrides(0, 1024, "cpu", ["run.log_every=1"])
    seen, inits, real = [], [], trainer.train.train
    monkeypatch.setattr(trainer.train, "train", lambda cfg, *a, **k: inits.append(cfg.model.init) or real(cfg, *a, **k))
    ckpts = train_all(work, str(data), overrides, 2, lambda s1: seen.append(s1) or 3, primer=(str(data), 2))
    assert seen == [os.path.join(work, "stage1")]                   # stage 2's steps chosen after stage 1
    assert ckpts["stage2"].endswith("step-000003") and ckpts["primer"].endswith("step-000002")
    assert inits == [None, ckpts["stage1"], ckpts["primer"]]        # the curriculum: stage 1, primer, stage 2
    assert json.load(open(os.path.join(work, "overrides.json"), encoding="utf-8")) == overrides
    want = load_file(os.path.join(ckpts["before"], "model.safetensors"))

    tars = pack(str(tmp_path / "gpu"), "tiny", str(tmp_path / "back"))   # what comes back from the GPU machine
    assert sorted(os.path.basename(t) for t in tars) == ["tiny-primer.tar", "tiny-stage1.tar", "tiny-stage2.tar"]
    here = tmp_path / "here"
    for t in tars:
        with tarfile.open(t) as tar:
            assert all(not m.name.startswith(("/", "..")) for m in tar.getmembers())
            tar.extractall(here, filter="data")
    assert not (here / "tiny" / "untrained").exists()               # the untrained model does not travel
    got = trained(str(here / "tiny"), str(data))
    rebuilt = load_file(os.path.join(got["before"], "model.safetensors"))
    assert rebuilt.keys() == want.keys() and all(torch.equal(rebuilt[k], want[k]) for k in want)
    assert got["stage2"].endswith("step-000003") and got["primer"].endswith("step-000002")
    motion = probe(got["stage2"], str(data), limit=4)["training"]       # a real checkpoint through the probe
    assert motion["clips"] + motion["skipped_mixed_sizes"] > 0
    assert sum(motion["picked"].values()) == motion["clips"]
    shutil.rmtree(here / "tiny" / "stage2")
    with pytest.raises(SystemExit, match="stage2"):
        trained(str(here / "tiny"), str(data))
