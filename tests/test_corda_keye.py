"""CorDA++ on the bundled Keye model (trainer/model.py:KeyeVL): vision encoder, projector and LLM layers
selected by the recipe's name patterns, calibrated on packed batches in the trainer's own layout."""
from __future__ import annotations

import copy

import pytest
import torch

from schemas.corda import corda_config
from trainer.corda.adapter import attach, find_targets, plan
from trainer.corda.keye import candidates, keye_forward

VISUAL = 90


def tiny_keye(seed: int = 0):
    from transformers import Qwen3Config, Qwen3ForCausalLM, SiglipVisionConfig, SiglipVisionModel

    from trainer.model import KeyeVL
    torch.manual_seed(seed)
    vision = SiglipVisionModel(SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                                  num_attention_heads=2, patch_size=14, image_size=56))
    llm_cfg = Qwen3Config(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                          num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=256)
    llm_cfg._attn_implementation = "sdpa"
    return KeyeVL(vision, Qwen3ForCausalLM(llm_cfg), 2, [VISUAL]).eval()


def packs(n: int, seed: int, length: int = 48, low: int = 0, high: int = 80, image: bool = True):
    """Packed batches as trainer.data builds them: two samples per pack (one with a 56x56 image: 4 visual
    tokens), positions restarting per sample, padding at the end, labels on the second half of each sample."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids, labels, pos, lens, pixels = [], [], [], [], []
        for k in range(2):
            m = int(torch.randint(12, 20, (1,), generator=g))
            s = torch.randint(low, high, (m,), generator=g)
            if k == 0 and image:
                s[2:6] = VISUAL
                pixels.append(torch.randn(3, 56, 56, generator=g))
            ids += s.tolist()
            labels += [-100] * (m // 2) + s[m // 2:].tolist()
            pos += range(m)
            lens.append(m)
        real = len(ids)
        ids += [0] * (length - real)
        labels += [-100] * (length - real)
        pos += range(length - real)
        lens.append(length - real)
        out.append({"input_ids": torch.tensor([ids]), "labels": torch.tensor([labels]),
                    "position_ids": torch.tensor([pos]), "seq_lens": [lens], "pixels": pixels,
                    "attention_mask": torch.arange(length)[None] < real})
    return out


def logits(model, batch):
    with torch.no_grad():
        return model.logits(batch["input_ids"], batch["position_ids"], batch["seq_lens"], batch["pixels"])


def test_corda_plus_plus_on_keye_vision_projector_and_llm():
    base = tiny_keye()
    model = copy.deepcopy(base)
    cfg = corda_config(rank=2, selection="modes", allocation="greedy", min_tokens_per_dim=0.5)
    targets = find_targets(model, cfg.target_modules)
    kinds = {n.split(".")[0] for n in targets}
    assert kinds == {"vision", "projector", "llm"}
    assert any(n.endswith("self_attn.out_proj") for n in targets) and "projector.fc1" in targets
    cands = {"think": lambda: iter(packs(6, 1)), "no_think": lambda: iter(packs(6, 2, low=40, high=VISUAL)),
             "text": lambda: iter(packs(6, 3, image=False))}       # never reaches the vision tower
    p = plan(model, cfg, cands, forward=keye_forward)
    pm = attach(model, p)
    probe = packs(1, 9)[0]
    ref = logits(base, probe)
    out = logits(pm, probe)
    assert float((out - ref).norm() / ref.norm()) <= 1e-5
    layers = p.report["layers"]
    assert {v["candidate"] for v in layers.values()} <= {"think", "no_think", "text"}
    for name, v in layers.items():
        reached = {"think", "no_think"} if name.startswith(("vision", "projector")) else {"think", "no_think", "text"}
        assert set(v["scores"]) == reached, name
        eligible = {k: x for k, x in v["scores"].items() if v["tokens"][k] >= 0.5 * v["d_in"]}
        if eligible:
            assert v["candidate"] == max(eligible, key=eligible.get) and not v["fallback"]
        else:                               # projector.fc1 sees 24 merged tokens < 0.5 * 128: most tokens wins
            assert v["fallback"] and v["tokens"][v["candidate"]] == max(v["tokens"].values())
    assert layers["projector.fc1"]["fallback"]
    # vision inputs count every patch (6 packs x one 4x4-patch frame); LLM inputs only supervised positions
    vis = layers["vision.encoder.layers.0.mlp.fc1"]["tokens"]
    assert vis == {"think": 6 * 16, "no_think": 6 * 16}
    llm_tokens = layers["llm.model.layers.0.mlp.down_proj"]["tokens"]["think"]
    supervised = sum(int((b["labels"][0, 1:] != -100).sum()) for b in packs(6, 1))
    assert llm_tokens == supervised
    assert p.report["realised_params"] == p.report["trainable_params"] <= p.report["budget"]
    # training moves only the adapters, and the trainer's loss path runs through them
    batch = probe
    loss, n = pm(batch["input_ids"], batch["labels"], batch["position_ids"], batch["seq_lens"], batch["pixels"])
    loss.backward()
    grads = {n for n, q in pm.named_parameters() if q.grad is not None}
    assert grads and all("lora_" in n for n in grads)
    # a trained checkpoint folds back into the plain model (what load_trained reads)
    from trainer.corda.keye import fold_adapters, lora_scaling
    with torch.no_grad():
        for n, q in pm.named_parameters():
            if "lora_" in n:
                q.add_(0.05 * torch.randn_like(q))
    plain = tiny_keye(seed=1)
    plain.load_state_dict(fold_adapters(pm.state_dict(), lora_scaling(pm)))
    trained = logits(pm, probe)
    assert float((logits(plain, probe) - trained).norm() / trained.norm()) <= 1e-5


def test_candidates_by_mode_subsets_and_static():
    from types import SimpleNamespace as NS
    rows = [(0, NS(mode="think", media=[])), (0, NS(mode=None, media=[NS(kind="video")])),
            (0, NS(mode="no_think", media=[NS(kind="image")])), (0, NS(mode="think", media=[NS(kind="video")]))]
    by_mode = candidates(rows, corda_config(selection="modes"))
    assert {k: len(v) for k, v in by_mode.items()} == {"no_think": 1, "think": 1, "video_none": 1, "video_think": 1}
    assert list(candidates(rows, corda_config(selection="modes", modes=["think"]))) == ["think"]
    assert [len(v) for v in candidates(rows, corda_config(selection="subsets", num_subsets=2)).values()] == [2, 2]
    assert list(candidates(rows, corda_config())) == ["all"]


@pytest.mark.slow
def test_sft_corda_recipe_trains_from_pipeline_output(trainer_data, tmp_path):
    """`python -m trainer.train --config configs/sft_corda.yaml --corda_samples N`: calibration through the
    trainer's data path, CorDA++ adapters on the tiny Keye, training, and a checkpoint load_trained reads."""
    import json
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT
    from trainer.checkpoint import latest
    from trainer.model import load_trained
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "trainer.train", "--config", os.path.join(ROOT, "configs", "sft_corda.yaml"),
           "--data", str(trainer_data[0]), "--output", str(out), "--corda_samples", "48",
           "--set", "optim.max_steps=2", "--set", "data.pack_length=1024", "--set", "run.tensorboard=false",
           "--set", "corda.min_tokens_per_dim=1.0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": ROOT}
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    event = next(json.loads(line) for line in proc.stderr.splitlines() if line.startswith('{"event": "corda"'))
    assert event["realised_params"] == event["trainable_params"] <= event["budget"]
    assert {n.split(".")[0] for n in event["layers"]} == {"vision", "projector", "llm"}
    assert all(v["candidate"] in event["candidates"] and v["rank"] >= 1 for v in event["layers"].values())
    start = next(json.loads(line) for line in proc.stderr.splitlines() if line.startswith('{"event": "start"'))
    assert start["trainable"] == event["trainable_params"]
    report = json.loads((out / "corda.json").read_text())
    assert {n: v["candidate"] for n, v in report["layers"].items()} == \
        {n: v["candidate"] for n, v in event["layers"].items()}
    model, _ = load_trained(latest(str(out)))
    assert type(model).__name__ == "KeyeVL"
