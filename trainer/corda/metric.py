"""CorDA++'s compactness metric: how tightly a layer's task behaviour sits in its principal components.

Derivation (docs/corda.md has it in full). With W = Σᵢ σᵢ uᵢ ṽᵢᵀ from the CO-SVD of W·C_fix and
calibration inputs x with second moment C_fix, the outputs of different components are orthogonal
(the uᵢ are), so the output energy splits exactly: E‖Wx‖² = Σᵢ eᵢ with eᵢ = σᵢ² vᵢᵀC_fix⁻¹vᵢ
= uᵢᵀ W C_fix Wᵀ uᵢ. Keeping the top r components loses exactly Σ_{i>r} eᵢ of it; the transcribed
paper bound sqrt(d_out)·σ_{r+1}·sqrt(λ_max)/λ_min (π) is a worst case of this sum. The metric is the
captured fraction ρ(r) = Σ_{i≤r} eᵢ / Σᵢ eᵢ ∈ [0, 1], higher = more compact, so

- scale: C → aC multiplies every eᵢ by a; ρ is invariant, comparable across candidates and layers
  whatever the token counts or normalisation (corda.md 2.5, pitfall 1);
- sign: no logarithm, ρ is a fraction (pitfall 2);
- rank deficiency: energies are measured under the damped C_fix the decomposition uses, and a
  candidate with fewer calibration tokens than d_in (C certainly rank-deficient) is not eligible
  for selection (`eligible`), since its compactness would be an artefact of too few samples (pitfall 3).

IPM adapts the top r: its score is ρ(r) (task energy the adapter starts with). KPM freezes the top
k − r and adapts the bottom r: its score is ρ(k − r) (knowledge energy kept out of the adapter).
`pi_score` is the third-party transcription of the paper's π score, trace-normalised so that
log π ≥ 0, kept as an alternative. A metric is one function `(Spectrum, rank, mode) -> float`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from trainer.corda.decompose import Mode


@dataclass
class Spectrum:
    """What selection and allocation keep of one layer under one candidate (O(k) floats)."""
    sigma: torch.Tensor                 # singular values of W·C_fix, descending (k,)
    energy: torch.Tensor                # eᵢ, in the same order (k,)
    d_in: int
    d_out: int
    tokens: int
    eig: Optional[torch.Tensor] = None  # eigenvalues of the trace-normalised C_fix (pi_score only)

    @property
    def k(self) -> int:
        return int(self.sigma.shape[0])


def captured(spec: Spectrum) -> torch.Tensor:
    """ρ(r) for r = 0..k: the cumulative fraction of output energy in the top r components."""
    e = spec.energy.double().clamp_min(0)
    total = float(e.sum())
    cum = torch.cat([torch.zeros(1, dtype=e.dtype), torch.cumsum(e, 0)])
    return cum / total if total > 0 else torch.ones_like(cum)


def energy_score(spec: Spectrum, rank: int, mode: Mode) -> float:
    """Higher is more compact: ρ(r) for IPM, ρ(k − r) for KPM."""
    r = min(rank, spec.k)
    return float(captured(spec)[r if mode == "ipm" else spec.k - r])


def pi_score(spec: Spectrum, rank: int, mode: Mode) -> float:
    """Transcribed CorDA++ score, negated so that higher is better: −log π · Σ_{j≤r} σ_{−j} / σ_max with
    π = sqrt(d_out·λ_max)/λ_min of the trace-normalised C_fix (tr = d_in, so λ_min ≤ 1 ≤ λ_max, log π ≥ 0)."""
    if spec.eig is None:
        raise ValueError("pi_score needs the covariance eigenvalues (metric: pi collects them)")
    lam_min, lam_max = float(spec.eig.min()), float(spec.eig.max())
    log_pi = math.log(math.sqrt(spec.d_out * lam_max) / lam_min)
    s = spec.sigma.double()
    tail = float(s[-min(rank, spec.k):].sum() / s[0]) if float(s[0]) > 0 else 0.0
    return -log_pi * tail


METRICS: dict[str, Callable[[Spectrum, int, Mode], float]] = {"energy": energy_score, "pi": pi_score}


def eligible(spec: Spectrum, min_tokens_per_dim: float) -> bool:
    """A candidate must have seen enough tokens for a full-rank covariance to be scored."""
    return spec.tokens >= min_tokens_per_dim * spec.d_in


def component_values(spec: Spectrum, mode: Mode) -> list[float]:
    """The benefit of each next adapter component, in the order a growing rank adds them, made
    non-increasing (an allocator may then take them greedily): IPM adds top components and gains
    their energy fraction; KPM adds bottom components and pays their knowledge-energy fraction."""
    e = spec.energy.double().clamp_min(0)
    total = float(e.sum()) or 1.0
    frac = e / total
    vals = frac.tolist() if mode == "ipm" else (-frac.flip(0)).tolist()
    out, best = [], math.inf
    for v in vals:
        best = min(best, v)
        out.append(best)
    return out
