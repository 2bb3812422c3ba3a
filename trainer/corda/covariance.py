"""Covariance collection for CorDA: C = (1/n) Σ x xᵀ over calibration tokens at each target linear's input.

    batches ─forward, no grad─▶ forward hook per target ─token mask─▶ x (n, d_in) ─xᵀx─▶ accumulator (d_in, d_in)

One process holds the model, one batch's activations and one accumulator per *distinct* input:
layers that read the same tensor (q/k/v after one norm, gate/up) form a group with one covariance,
found on the first batch by tensor identity (weak references, so a freed-and-reused buffer never
matches). Any batch size works: positions where the token mask is False (padding, and with
`use_label_mask` positions that produce no loss) are dropped before the product. Inputs whose
leading shape does not match the mask (a vision tower's patch sequences) count every position.

Normalisation (the scale matters to CorDA++'s metric, not to CorDA): `token` divides the sum by the
number of tokens (the uncentred second moment per token); `peft_max` divides each sequence by the
absolute value of its signed maximum and the sum by the number of sequences, which is exactly
PEFT's `preprocess_corda` with batch size 1.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Callable, Iterable, Literal, Mapping, Optional

import torch
from torch import nn

Normalize = Literal["token", "peft_max"]


@dataclass
class Covariances:
    """One covariance per input group; `group_of` maps every target layer to its group's leader."""
    cov: dict[str, torch.Tensor]          # leader -> (d_in, d_in), normalised
    tokens: dict[str, int]                # leader -> tokens accumulated
    group_of: dict[str, str]              # layer -> leader

    def of(self, layer: str) -> torch.Tensor:
        return self.cov[self.group_of[layer]]

    def nbytes(self) -> int:
        return sum(c.numel() * c.element_size() for c in self.cov.values())


def calibration_mask(batch: Mapping[str, torch.Tensor], use_label_mask: bool,
                     ignore_index: int = -100) -> Optional[torch.Tensor]:
    """Positions whose activations count: attended tokens and, with `use_label_mask`, positions that
    predict a supervised token (HF labels are unshifted: position t predicts labels[t + 1])."""
    ids = batch.get("input_ids")
    mask = batch.get("attention_mask")
    if mask is not None and mask.dim() == 2:
        mask = mask.bool()
    elif ids is not None:
        mask = torch.ones(ids.shape, dtype=torch.bool, device=ids.device)
    labels = batch.get("labels")
    if use_label_mask and labels is not None:
        predicts = torch.zeros_like(labels, dtype=torch.bool)
        predicts[:, :-1] = labels[:, 1:] != ignore_index
        mask = predicts if mask is None else mask & predicts
    return mask


class CovarianceCollector:
    """Context manager: hooks on `targets` while open; `finish()` returns the normalised covariances."""

    def __init__(self, targets: Mapping[str, nn.Module], dtype: torch.dtype = torch.float32,
                 normalize: Normalize = "token", offload: bool = False):
        if normalize not in ("token", "peft_max"):
            raise ValueError(f"unknown covariance normalisation {normalize!r}")
        self.targets = dict(targets)
        self.dtype = dtype
        self.normalize = normalize
        self.offload = offload
        self.mask: Optional[torch.Tensor] = None
        self.group_of: dict[str, str] = {}
        self._acc: dict[str, torch.Tensor] = {}
        self._tokens: dict[str, int] = {}
        self._count: dict[str, int] = {}       # tokens (token) or sequences (peft_max)
        self._last: dict[str, weakref.ref] = {}
        self._handles: list = []

    def __enter__(self) -> "CovarianceCollector":
        for name, module in self.targets.items():
            self._handles.append(module.register_forward_hook(self._hook(name)))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def _hook(self, name: str) -> Callable:
        def hook(module, args, output):
            if not args:
                raise RuntimeError(f"{name}: CorDA needs the layer input as a positional argument")
            x = args[0]
            leader = self.group_of.get(name)
            if leader is None:                       # first call: share with a live identical input
                leader = next((g for g, ref in self._last.items() if ref() is x), name)
                self.group_of[name] = leader
            if leader != name:
                if self._last[leader]() is not x:
                    raise RuntimeError(f"{name} no longer reads the same input as {leader}")
                return
            self._last[name] = weakref.ref(x)
            self._accumulate(name, x.detach())
        return hook

    def _accumulate(self, name: str, x: torch.Tensor) -> None:
        d = x.shape[-1]
        mask = self.mask
        if mask is not None and mask.dim() == 2 and tuple(x.shape[:-1]) == tuple(mask.shape):
            seq, m = x, mask.to(x.device)
        else:                                     # no aligned mask: every position, one sample per row
            seq = x.reshape(-1, x.shape[-2], d) if x.dim() >= 3 else x.reshape(1, -1, d)
            m = torch.ones(seq.shape[:2], dtype=torch.bool, device=x.device)
        seq = seq.to(self.dtype)
        if self.normalize == "peft_max":          # PEFT: each sequence / |its signed maximum|
            keep = m.any(dim=1)
            seq, m = seq[keep], m[keep]
            peak = seq.masked_fill(~m[..., None], float("-inf")).amax(dim=(1, 2)).abs()
            seq = seq / peak[:, None, None]
        xs = seq[m]
        tokens = int(xs.shape[0])
        count = int(seq.shape[0]) if self.normalize == "peft_max" else tokens
        if not torch.isfinite(xs).all():
            raise ValueError(f"{name}: non-finite activations in the calibration data")
        part = xs.T @ xs
        if self.offload:
            part = part.cpu()
        if name in self._acc:
            self._acc[name] += part
        else:
            self._acc[name] = part
        self._tokens[name] = self._tokens.get(name, 0) + tokens
        self._count[name] = self._count.get(name, 0) + count

    def run(self, model: nn.Module, batches: Iterable[Mapping], forward: Optional[Callable] = None,
            use_label_mask: bool = True) -> None:
        """Forward every batch with the mask set; `forward(model, batch)` defaults to `model(**inputs)`."""
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                for batch in batches:
                    self.mask = calibration_mask(batch, use_label_mask)
                    if forward is not None:
                        forward(model, batch)
                    else:
                        model(**{k: v for k, v in batch.items() if k != "labels"})
        finally:
            self.mask = None
            model.train(was_training)

    def finish(self, strict: bool = True) -> Covariances:
        """The covariances; `strict` requires every target to have seen tokens, otherwise layers the
        data never reached (no frames in a text-only candidate, every position masked) are left out."""
        empty = {g for g, c in self._count.items() if c == 0}
        missing = [n for n in self.targets if n not in self.group_of or self.group_of[n] in empty]
        if strict and missing:
            raise ValueError(f"no calibration tokens reached {len(missing)} target layers, e.g. {missing[:3]} "
                             "(no data for them, or every position masked?)")
        cov = {g: acc / self._count[g] for g, acc in self._acc.items() if g not in empty}
        self._acc.clear()
        return Covariances(cov=cov, tokens={g: t for g, t in self._tokens.items() if g not in empty},
                           group_of={n: g for n, g in self.group_of.items() if g not in empty})


def collect_covariances(model: nn.Module, targets: Mapping[str, nn.Module], batches: Iterable[Mapping], *,
                        dtype: torch.dtype = torch.float32, normalize: Normalize = "token", offload: bool = False,
                        use_label_mask: bool = True, forward: Optional[Callable] = None,
                        strict: bool = True) -> Covariances:
    """One pass over `batches`: the covariance of every distinct target input."""
    with CovarianceCollector(targets, dtype=dtype, normalize=normalize, offload=offload) as col:
        col.run(model, batches, forward=forward, use_label_mask=use_label_mask)
    return col.finish(strict)
