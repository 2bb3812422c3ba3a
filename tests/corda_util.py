"""Tiny causal LMs and calibration batches for the CorDA tests (random weights, no hub)."""
from __future__ import annotations

import torch


def tiny_qwen3(seed: int = 0, hidden: int = 32, inter: int = 64, layers: int = 2, vocab: int = 96):
    from transformers import Qwen3Config, Qwen3ForCausalLM
    torch.manual_seed(seed)
    cfg = Qwen3Config(vocab_size=vocab, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=hidden // 4,
                      max_position_embeddings=128, tie_word_embeddings=False)
    cfg._attn_implementation = "eager"
    return Qwen3ForCausalLM(cfg).eval()


def sequences(n: int, seed: int = 0, lo: int = 12, hi: int = 24, vocab: int = 96, tokens=None) -> list[torch.Tensor]:
    """n token sequences of varied lengths; `tokens` restricts the vocabulary (a 'kind' of data)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        length = int(torch.randint(lo, hi + 1, (1,), generator=g))
        if tokens is None:
            out.append(torch.randint(0, vocab, (length,), generator=g))
        else:
            pool = torch.as_tensor(tokens)
            out.append(pool[torch.randint(0, len(pool), (length,), generator=g)])
    return out


def collate(seqs: list[torch.Tensor], supervise_from: int = 0) -> dict[str, torch.Tensor]:
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


def batches(seqs: list[torch.Tensor], batch_size: int, **kw):
    """A factory of batch iterators, the form `plan` takes per candidate."""
    return lambda: (collate(seqs[i:i + batch_size], **kw) for i in range(0, len(seqs), batch_size))
