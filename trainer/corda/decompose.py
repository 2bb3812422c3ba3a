"""Context-oriented SVD (CorDA, arXiv 2406.05223): W·C_fix = U Σ Vᵀ, so W = Σᵢ σᵢ uᵢ (C_fix⁻¹ vᵢ)ᵀ exactly.

Per covariance group, `condition` damps C to C_fix = C + δ·mean(diag C)·I with δ = damp·2^k, the
smallest k (at most `max_iters`) whose condition-number bound (λ_max + δm)/(λ_min + δm) is below
`max_condition` and whose Cholesky factor exists; λ_max is bounded by min(trace, Gershgorin) in O(d²)
and λ_min by 0, so no eigendecomposition and no explicit inverse is ever formed. Per layer,
`decompose` takes the SVD of W·C_fix and maps only the kept right vectors back with a Cholesky solve
(Ṽ = C_fix⁻¹ V, d_in × r). `identity` covariance (C = I, no damping) gives PiSSA (top) and MiLoRA
(bottom). Nothing here keeps more than one layer's full factors; callers crop right away.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

import torch

Mode = Literal["ipm", "kpm"]


@dataclass
class Conditioned:
    """A damped covariance and its Cholesky factor (None for the identity covariance)."""
    cov: Optional[torch.Tensor]        # the undamped C (for energies), None = identity
    cov_fix: Optional[torch.Tensor]
    chol: Optional[torch.Tensor]
    damp: float                        # the relative damping used (δ), 0 for identity
    iters: int
    capped: bool                       # the iteration cap was hit before the bound held
    condition_bound: float


@dataclass
class Decomposition:
    """The kept components of one layer, in PEFT's CordaEigens layout (V_WC is d_in × r)."""
    S_WC: torch.Tensor
    U_WC: torch.Tensor
    V_WC: torch.Tensor


def identity() -> Conditioned:
    return Conditioned(None, None, None, 0.0, 0, False, 1.0)


def condition(cov: torch.Tensor, damp: float = 0.01, max_condition: float = 1e6, max_iters: int = 20,
              dtype: torch.dtype = torch.float32) -> Conditioned:
    """Damp `cov` until well conditioned (bounded iterations) and factor it."""
    c = cov.to(dtype)
    d = c.shape[0]
    mean_diag = float(torch.diagonal(c).mean())
    if not mean_diag > 0 or not torch.isfinite(c).all():
        raise ValueError("covariance is zero or not finite: no calibration signal reached this layer")
    lam_max = min(float(torch.diagonal(c).sum()), float(c.abs().sum(dim=1).max()))
    eye = torch.eye(d, dtype=dtype, device=c.device)
    delta, chol, k, capped = damp, None, 0, True
    for k in range(max_iters):
        delta = damp * (2.0 ** k)
        shift = delta * mean_diag
        if (lam_max + shift) / shift > max_condition:
            continue
        fixed = c + shift * eye
        chol, info = torch.linalg.cholesky_ex(fixed)
        if int(info) == 0:
            capped = False
            break
    if capped:                          # cap reached: use the last damping, say so
        fixed = c + delta * mean_diag * eye
        chol, info = torch.linalg.cholesky_ex(fixed)
        if int(info) != 0:
            raise ValueError(f"covariance not positive definite after {max_iters} damping steps")
    bound = (lam_max + delta * mean_diag) / (delta * mean_diag)
    return Conditioned(c, fixed, chol, delta, k + 1, capped, bound)


def weight_matrix(module: torch.nn.Module) -> torch.Tensor:
    """(d_out, d_in) for nn.Linear and transformers' Conv1D (stored transposed)."""
    w = module.weight.data
    return w.T if type(module).__name__ == "Conv1D" else w


def co_svd(weight: torch.Tensor, cond: Conditioned, dtype: torch.dtype = torch.float32):
    """Full thin SVD of W·C_fix: (U, S, Vh), singular values descending."""
    w = weight.to(dtype)
    wc = w if cond.cov_fix is None else w @ cond.cov_fix.to(w.device, dtype)   # offloaded C meets W's device
    return torch.linalg.svd(wc, full_matrices=False)


def component_energy(weight: torch.Tensor, u: torch.Tensor, cov: Optional[torch.Tensor],
                     dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """eᵢ = E‖uᵢσᵢṽᵢᵀx‖² = uᵢᵀ W C Wᵀ uᵢ: each component's output energy on data of second moment C
    (σᵢṽᵢᵀ = uᵢᵀW; exact for any C because the uᵢ are orthonormal; None: C = I, eᵢ = σᵢ²)."""
    p = u.T.to(dtype) @ weight.to(dtype)                  # (k, d_in) = Σ Ṽᵀ
    if cov is None:
        return (p * p).sum(dim=1)
    return ((p @ cov.to(p.device, dtype)) * p).sum(dim=1)


def keep_index(k: int, rank: int, mode: Mode) -> slice:
    if not 0 < rank <= k:
        raise ValueError(f"rank {rank} outside 1..{k}")
    if mode == "ipm":
        return slice(0, rank)
    if mode == "kpm":
        return slice(k - rank, k)
    raise ValueError(f"unknown CorDA mode {mode!r} (ipm or kpm)")


def crop(u: torch.Tensor, s: torch.Tensor, vh: torch.Tensor, cond: Conditioned, rank: int,
         mode: Mode) -> Decomposition:
    """Keep `rank` components (top for IPM, bottom for KPM); Ṽ = C_fix⁻¹ V by a Cholesky solve."""
    idx = keep_index(s.shape[0], rank, mode)
    v = vh[idx].T.contiguous()
    if cond.chol is not None:
        v = torch.cholesky_solve(v.to(cond.chol.dtype), cond.chol.to(v.device)).to(v.dtype)
    return Decomposition(S_WC=s[idx].clone(), U_WC=u[:, idx].contiguous(), V_WC=v)


def decompose(weight: torch.Tensor, cond: Conditioned, rank: int, mode: Mode,
              dtype: torch.dtype = torch.float32) -> Decomposition:
    """One layer's CorDA adapter factors; W = Σ over all components, so W_res = W − U_r Σ_r Ṽ_rᵀ."""
    u, s, vh = co_svd(weight, cond, dtype)
    return crop(u, s, vh, cond, rank, mode)
