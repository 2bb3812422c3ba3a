"""Tiny causal LMs and calibration batches for the CorDA tests (random weights, no hub)."""
from __future__ import annotations

import torch

from trainer.corda.calibration import LM_TARGETS, pad_collate, token_batches

collate, batches = pad_collate, token_batches


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


def lm_config(**over):
    """The recipe's corda section (configs/train_base.yaml) aimed at a plain causal LM's linears."""
    from schemas.corda import corda_config
    return corda_config(**{"target_modules": LM_TARGETS, **over})
