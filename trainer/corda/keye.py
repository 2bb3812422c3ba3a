"""CorDA++ in the bundled trainer: calibration through the trainer's own data path, adapters on the Keye model.

    corda.data (--corda_data DIR; default the first --data folder) ─ mixed_rows (the recipe's shuffle, seed)
      ─ the first corda.samples rows (at most one pass over the folder)
      ─ candidates: static (one) | subsets (round robin) | modes (`select.mode_key`: the row's mode, video_ prefix)
      ─ per candidate: rows filled into packs of data.pack_length in order ─ build_pack (the trainer's
        tokenisation, label masking and stored frames) ─ batches of corda.batch_size packs, with an
        attention mask of each pack's real tokens
      ─ adapter.plan(KeyeVL, forward = hidden_states: no LM head) ─ adapter.attach (PEFT LoRA modules)

A checkpoint of such a run holds the PEFT-wrapped state (`base_model.model.` names, residual weights,
`lora_A`/`lora_B`); `fold_adapters` turns it into the plain model's (W = W_res + s·B·A), which is how
`trainer.model.load_trained` (generation, the recaption backend) reads it.

`model.adapter: trainer.corda.keye:apply` in a recipe (configs/sft_corda.yaml) runs it after the stage's
freezing; PEFT then trains only the adapters. Target layers are regexes over KeyeVL's module names
(`vision.encoder.layers.…` SigLIP, `projector.fc1|fc2`, `llm.model.layers.…`; configs/train_base.yaml).
Vision-tower inputs (frames x patches) have no token mask: every patch counts. The choice per layer
goes to stderr as one JSON line (`{"event": "corda", ...}`) and, in full (every candidate's score and
tokens per layer), to RUN/corda.json (the model's `corda_report`).
"""
from __future__ import annotations

import itertools
import json
import sys
from typing import Sequence

import torch
from torch import nn

from schemas.corda import CordaConfig
from trainer.corda.adapter import attach, plan
from trainer.corda.select import mode_key, subsets

def keye_forward(model: nn.Module, batch: dict) -> None:
    model.hidden_states(batch["input_ids"], batch["position_ids"], batch["seq_lens"], batch["pixels"])


def calibration_rows(sources: Sequence, data_cfg, samples: int) -> list:
    """The first `samples` rows of the recipe's row order (one pass at most: no row twice)."""
    from trainer.data import mixed_rows
    total = sum(s.folder.rows for s in sources) or samples
    return list(itertools.islice(mixed_rows(sources, data_cfg, 0, 1), min(samples, total)))


def pack_batches(rows: list, sources: Sequence, tokenizer_spec: str, length: int, batch_size: int):
    """A factory of calibration batches: rows filled into packs in order, packs batched."""
    from keye.tokenizer import load_tokenizer
    from trainer.data import build_pack, sample_length
    from trainer.template import special_id

    bins, cur, used = [], [], 0
    for src, sample in rows:
        n = sample_length(sample)
        if n > length:
            continue
        if cur and used + n > length:
            bins.append(cur)
            cur, used = [], 0
        cur.append((src, sample))
        used += n
    if cur:
        bins.append(cur)

    def batches():
        tokenizer = load_tokenizer(tokenizer_spec)
        pad = special_id(tokenizer, "<|endoftext|>")
        for i in range(0, len(bins), batch_size):
            packs = [build_pack(b, sources, tokenizer, length, pad) for b in bins[i:i + batch_size]]
            positions = torch.arange(length)
            yield {"input_ids": torch.stack([p.input_ids for p in packs]),
                   "labels": torch.stack([p.labels for p in packs]),
                   "position_ids": torch.stack([p.position_ids for p in packs]),
                   "attention_mask": torch.stack([positions < p.real_tokens for p in packs]),
                   "seq_lens": [p.seq_lens for p in packs],
                   "pixels": [px for p in packs for px in p.pixels]}
    return batches


def candidates(rows: list, c: CordaConfig) -> dict[str, list]:
    if c.selection == "modes":
        groups: dict[str, list] = {}
        for row in rows:
            key = mode_key(row[1])
            if not c.modes or key in c.modes:
                groups.setdefault(key, []).append(row)
        if not groups:
            raise ValueError(f"corda.modes {c.modes}: no calibration row has one of these modes")
        return {k: groups[k] for k in sorted(groups)}
    if c.selection == "subsets":
        return subsets(rows, c.num_subsets)
    return {"all": rows}


def apply(model: nn.Module, cfg) -> nn.Module:
    """`model.adapter` hook: CorDA / CorDA++ adapters on a KeyeVL from the recipe's `corda` section."""
    from trainer.data import open_sources
    c = cfg.corda
    cands = {}
    if c.covariance == "data":
        if not c.data:
            raise ValueError("corda.data: pass --corda_data DIR (or --data) for the calibration rows")
        sources = open_sources([(c.data, 1.0)])
        rows = calibration_rows(sources, cfg.data, c.samples)
        cands = {name: pack_batches(group, sources, cfg.model.tokenizer, cfg.data.pack_length, c.batch_size)
                 for name, group in candidates(rows, c).items()}
    p = plan(model, c, cands, forward=keye_forward)
    peft_model = attach(model, p)
    r = p.report
    print(json.dumps({"event": "corda", "mode": r["mode"], "selection": r["selection"], "allocation": r["allocation"],
                      "budget": r["budget"], "realised_params": r["realised_params"],
                      "trainable_params": r["trainable_params"], "seconds": round(r["seconds"], 2),
                      "candidates": sorted(cands), "layers": {n: {"candidate": v["candidate"], "rank": v["rank"]}
                                                              for n, v in r["layers"].items()}}), file=sys.stderr)
    peft_model.corda_report = r
    return peft_model


PEFT_PREFIX = "base_model.model."


def lora_scaling(model: nn.Module) -> dict[str, float]:
    """Each adapted layer's LoRA scale (alpha / r), by its name in the plain model."""
    return {name.removeprefix(PEFT_PREFIX): float(m.scaling["default"]) for name, m in model.named_modules()
            if hasattr(m, "lora_A") and "default" in getattr(m, "scaling", {})}


def fold_adapters(state: dict, scaling: dict[str, float]) -> dict:
    """A PEFT-wrapped state dict as the plain model's: W = W_res + s·B·A on every adapted layer."""
    out = {k.removeprefix(PEFT_PREFIX).replace(".base_layer.", "."): v for k, v in state.items()
           if ".lora_A." not in k and ".lora_B." not in k}
    for layer, s in scaling.items():
        a = state[f"{PEFT_PREFIX}{layer}.lora_A.default.weight"].float()
        b = state[f"{PEFT_PREFIX}{layer}.lora_B.default.weight"].float()
        w = out[f"{layer}.weight"]
        out[f"{layer}.weight"] = (w.float() + s * (b @ a)).to(w.dtype)
    return out


def load_folded(model: nn.Module, path: str, scaling: dict[str, float]) -> None:
    """Load a PEFT-wrapped safetensors checkpoint into the plain model (tied weights saved once)."""
    from safetensors.torch import load_file
    missing, unexpected = model.load_state_dict(fold_adapters(load_file(path), scaling), strict=False)
    params = dict(model.named_parameters(remove_duplicate=False))
    loaded = {params[k].data_ptr() for k in params if k not in missing}
    untied = [k for k in missing if k not in params or params[k].data_ptr() not in loaded]
    if untied or unexpected:
        raise ValueError(f"{path}: missing {untied[:3]}, unexpected {unexpected[:3]}")
