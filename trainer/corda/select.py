"""Dynamic covariance selection, streaming: per layer, the candidate covariance whose CO-SVD is most
compact by the metric.

    candidate 1 ─collect─▶ covariances (one set) ─CO-SVD per layer─▶ spectrum ─metric─▶ keep if best ─▶ free
    candidate 2 ─collect─▶ ...                                                          (per-layer best)

One process holds the model, the covariances of the candidate being scored, and per layer the best
candidate so far: a reference to its covariance (layers of one group that pick the same candidate share
one tensor) and its spectrum (O(k) floats). So memory is at most two covariance sets, never N; the cost
is one forward pass per candidate and one SVD per layer per candidate. Candidates are calibration
subsets (disjoint, round-robin: `subsets`) or the mixture's own modes (`by_key`, one per `mode` value).
A candidate with too few tokens for a full-rank covariance is scored and reported but not eligible;
a layer with no eligible candidate keeps the one that saw the most tokens, flagged in the report. A
candidate whose data never reaches a layer (text-only rows and the vision tower) is not scored there.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Hashable, Iterable, Mapping, Optional, Sequence

import torch
from torch import nn

from trainer.corda.covariance import collect_covariances
from trainer.corda.decompose import Conditioned, Mode, co_svd, component_energy, condition, identity, weight_matrix
from trainer.corda.metric import METRICS, Spectrum, eligible

Batches = Callable[[], Iterable[Mapping[str, torch.Tensor]]]


@dataclass
class Choice:
    """One layer's winning candidate and every candidate's score (for the report)."""
    candidate: str
    cov: Optional[torch.Tensor]               # None: identity covariance
    spectrum: Spectrum
    scores: dict[str, float] = field(default_factory=dict)
    tokens: dict[str, int] = field(default_factory=dict)
    fallback: bool = False                    # no candidate was eligible


@dataclass(frozen=True)
class ConditionSettings:
    damp: float = 0.01
    max_condition: float = 1e6
    max_iters: int = 20
    dtype: torch.dtype = torch.float32

    def apply(self, cov: torch.Tensor) -> Conditioned:
        return condition(cov, self.damp, self.max_condition, self.max_iters, self.dtype)


def spectrum_of(module: nn.Module, cond: Conditioned, tokens: int, dtype: torch.dtype,
                with_eig: bool = False, reference: Optional[torch.Tensor] = None) -> Spectrum:
    """The CO-SVD spectrum under `cond`, energies measured under `reference` (default: C_fix itself)."""
    w = weight_matrix(module)
    u, s, _ = co_svd(w, cond, dtype)
    energy = component_energy(w, u, cond.cov_fix if reference is None else reference, dtype)
    eig = None
    if with_eig:
        c = cond.cov_fix if cond.cov_fix is not None else torch.eye(w.shape[1], dtype=dtype)
        eig = torch.linalg.eigvalsh(c.double() * (c.shape[0] / float(torch.diagonal(c).double().sum())))
    return Spectrum(sigma=s.detach().cpu(), energy=energy.detach().cpu(), d_in=w.shape[1], d_out=w.shape[0],
                    tokens=tokens, eig=None if eig is None else eig.cpu())


def select(model: nn.Module, targets: Mapping[str, nn.Module], candidates: Mapping[str, Batches], *,
           rank: int, mode: Mode, metric: str = "energy", min_tokens_per_dim: float = 1.0,
           settings: ConditionSettings = ConditionSettings(), collect_kwargs: Optional[dict] = None,
           score_on: str = "own") -> dict[str, Choice]:
    """Stream the candidates; return each layer's best (by `METRICS[metric]`, higher wins, ties: first).
    `score_on: pooled` measures every candidate's components on all candidates' data together (one
    more pass and one more covariance set): the data the adapter is trained on or must preserve."""
    if not candidates:
        raise ValueError("covariance selection needs at least one candidate")
    reference = None
    if score_on == "pooled":
        pooled = (b for batches in candidates.values() for b in batches())
        reference = collect_covariances(model, targets, pooled, **(collect_kwargs or {}))   # strict: all reached
    elif score_on != "own":
        raise ValueError(f"score_on: own or pooled, not {score_on!r}")
    score_fn = METRICS[metric]
    best: dict[str, Choice] = {}
    most: dict[str, Choice] = {}              # layers with no eligible candidate yet: the most tokens
    scores: dict[str, dict[str, float]] = {n: {} for n in targets}
    tokens: dict[str, dict[str, int]] = {n: {} for n in targets}
    for cand, batches in candidates.items():
        covs = collect_covariances(model, targets, batches(), strict=False, **(collect_kwargs or {}))
        conds = {g: settings.apply(c) for g, c in covs.cov.items()}
        for name, module in targets.items():
            group = covs.group_of.get(name)
            if group is None:                 # this candidate's data never reached the layer
                continue
            spec = spectrum_of(module, conds[group], covs.tokens[group], settings.dtype, with_eig=metric == "pi",
                               reference=None if reference is None else reference.of(name))
            score = scores[name][cand] = score_fn(spec, rank, mode)
            tokens[name][cand] = spec.tokens
            entry = Choice(cand, covs.cov[group], spec)
            if eligible(spec, min_tokens_per_dim):
                if name not in best or score > scores[name][best[name].candidate]:
                    best[name] = entry
                most.pop(name, None)          # a layer holds one kept covariance, never two
            elif name not in best and (name not in most or spec.tokens > most[name].spectrum.tokens):
                most[name] = entry
        del covs, conds
    unreached = [n for n in targets if n not in best and n not in most]
    if unreached:
        raise ValueError(f"no calibration candidate reached {len(unreached)} target layers, e.g. {unreached[:3]}")
    out = {}
    for name in targets:
        choice = best.get(name) or most[name]
        choice.fallback = name not in best
        choice.scores, choice.tokens = scores[name], tokens[name]
        out[name] = choice
    return out


def identity_choices(targets: Mapping[str, nn.Module], dtype: torch.dtype = torch.float32) -> dict[str, Choice]:
    """PiSSA / MiLoRA: C = I, the spectrum of W itself."""
    return {n: Choice("identity", None, spectrum_of(m, identity(), 0, dtype)) for n, m in targets.items()}


def subsets(samples: Sequence, n: int) -> dict[str, list]:
    """n disjoint round-robin subsets of the calibration samples (deterministic)."""
    if n < 1 or len(samples) < n:
        raise ValueError(f"cannot split {len(samples)} samples into {n} subsets")
    return {f"subset{i}": list(samples[i::n]) for i in range(n)}


def by_key(samples: Iterable, key: Callable[[object], Hashable], keep: Sequence = ()) -> dict[str, list]:
    """One candidate per value of `key` (the mixture's `mode` column), in sorted order."""
    groups: dict[str, list] = {}
    for s in samples:
        k = str(key(s))
        if not keep or k in keep:
            groups.setdefault(k, []).append(s)
    return {k: groups[k] for k in sorted(groups)}


def mode_key(sample) -> str:
    """A cold-start row's candidate: its `mode` (think, no_think, auto_think, agentic_think), prefixed
    `video_` for rows with a video, so video data calibrates apart from image and text data."""
    video = any(getattr(m, "kind", None) == "video" for m in getattr(sample, "media", ()) or ())
    mode = getattr(sample, "mode", None) or "none"
    return f"video_{mode}" if video else mode
