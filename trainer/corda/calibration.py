"""Calibration batches for any causal LM from token sequences (the trainer's Keye path is `keye.py`)."""
from __future__ import annotations

from typing import Callable, Iterator, Sequence

import torch

LM_TARGETS = [r".*\.(q|k|v|o)_proj", r".*\.(gate|up|down)_proj"]     # a Llama/Qwen-style causal LM's linears


def pad_collate(seqs: Sequence[torch.Tensor], supervise_from: int = 0) -> dict[str, torch.Tensor]:
    """Right-padded batch; labels -100 on padding and on the first `supervise_from` tokens."""
    n, length = len(seqs), max(len(s) for s in seqs)
    ids = torch.zeros(n, length, dtype=torch.long)
    mask = torch.zeros(n, length, dtype=torch.long)
    labels = torch.full((n, length), -100, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = s
        mask[i, :len(s)] = 1
        labels[i, supervise_from:len(s)] = s[supervise_from:]
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def token_batches(seqs: Sequence[torch.Tensor], batch_size: int, supervise_from: int = 0) -> Callable[[], Iterator]:
    """A factory of batch iterators, the form `adapter.plan` takes per candidate."""
    return lambda: (pad_collate(list(seqs[i:i + batch_size]), supervise_from)
                    for i in range(0, len(seqs), batch_size))
