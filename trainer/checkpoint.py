"""Trainer checkpoints: everything an exact resume needs, written atomically.

    RUN/checkpoints/step-000123/
      model.safetensors, keye_model.json   weights + the configs that rebuild the model offline
      optimizer.pt, scheduler.pt            AdamW moments and the LR schedule's position
      rng-rank{r}.pt                        python, numpy and torch (CPU and CUDA) RNG states per rank
      state.json                            step, packs consumed per data stream, tokens seen, recipe

A checkpoint is written under a temporary name and renamed when complete, so `latest` never
returns a partial one (a run killed mid-save resumes from the previous checkpoint).
"""
from __future__ import annotations

import json
import os
import random
import shutil
from typing import Optional

import numpy as np
import torch

from trainer.model import WEIGHTS, load_weights, save_weights, write_meta

STATE = "state.json"


def step_dir(run_dir: str, step: int) -> str:
    return os.path.join(run_dir, "checkpoints", f"step-{step:06d}")


def latest(run_dir: str) -> Optional[str]:
    root = os.path.join(run_dir, "checkpoints")
    if not os.path.isdir(root):
        return None
    done = sorted(d for d in os.listdir(root) if d.startswith("step-") and os.path.exists(os.path.join(root, d, STATE)))
    return os.path.join(root, done[-1]) if done else None


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(run_dir: str, step: int, model, optimizer, scheduler, state: dict, *, rank: int, world: int,
         tokenizer_spec: str, merge: int, data: Optional[dict] = None, model_state: Optional[dict] = None,
         optim_state: Optional[dict] = None, keep: int = 0) -> str:
    """Rank 0 writes the shared parts, every rank its RNG; a barrier, then rank 0 renames."""
    final = step_dir(run_dir, step)
    tmp = final + ".tmp"
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
    _barrier(world)
    torch.save(rng_state(), os.path.join(tmp, f"rng-rank{rank}.pt"))
    if rank == 0:
        if model_state is None:
            save_weights(model, tmp, tokenizer_spec, merge, data)
        else:   # FSDP: the gathered full state dict
            from safetensors.torch import save_file

            write_meta(model, tmp, tokenizer_spec, merge, data)
            save_file({k: v.contiguous() for k, v in model_state.items()}, os.path.join(tmp, WEIGHTS))
        optim_state = optim_state if optim_state is not None else optimizer.state_dict()
        torch.save(optim_state, os.path.join(tmp, "optimizer.pt"))
        torch.save(scheduler.state_dict(), os.path.join(tmp, "scheduler.pt"))
    _barrier(world)
    if rank == 0:
        with open(os.path.join(tmp, STATE), "w", encoding="utf-8") as f:
            json.dump({**state, "step": step, "world": world}, f, indent=1, sort_keys=True)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        _prune(run_dir, keep)
    _barrier(world)
    return final


def load(folder: str, model, optimizer, scheduler, *, rank: int, load_model: bool = True, fsdp: bool = False) -> dict:
    with open(os.path.join(folder, STATE), encoding="utf-8") as f:
        state = json.load(f)
    if load_model:
        load_weights(model, folder)
    optim_state = torch.load(os.path.join(folder, "optimizer.pt"), weights_only=False)
    if fsdp:   # a full (gathered) optimizer state, scattered back to this rank's shards
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        set_optimizer_state_dict(model, optimizer, optim_state, options=StateDictOptions(full_state_dict=True))
    else:
        optimizer.load_state_dict(optim_state)
    scheduler.load_state_dict(torch.load(os.path.join(folder, "scheduler.pt"), weights_only=False))
    rng = os.path.join(folder, f"rng-rank{rank}.pt")
    if os.path.exists(rng):
        set_rng_state(torch.load(rng, weights_only=False))
    return state


def _prune(run_dir: str, keep: int) -> None:
    if keep <= 0:
        return
    root = os.path.join(run_dir, "checkpoints")
    done = sorted(d for d in os.listdir(root) if d.startswith("step-") and not d.endswith(".tmp"))
    for d in done[:-keep]:
        shutil.rmtree(os.path.join(root, d), ignore_errors=True)


def _barrier(world: int) -> None:
    if world > 1:
        torch.distributed.barrier()
