"""CorDA / CorDA++ adapters as PEFT LoRA modules.

    calibration data ─select (stream candidates)─▶ per-layer covariance + spectrum
        ─allocate (metric, budget)─▶ per-layer rank ─CO-SVD, crop─▶ U_r, Σ_r, Ṽ_r per layer
        ─attach─▶ module.eigens + LoraConfig(init_lora_weights="corda", rank_pattern, alpha_pattern)
        ─get_peft_model─▶ PEFT's corda_init writes A = √Σ·Ṽᵀ, B = U·√Σ and the frozen W_res = W − s·B·A

The factors are computed here (batched masked covariances, shared q/k/v and gate/up inputs, Cholesky
instead of an inverse, per-layer crop) and handed to PEFT in its own `CordaEigens` layout, so PEFT's
save, load, merge and `path_initial_model_for_weight_conversion` (conversion to plain LoRA) apply
unchanged. Layers allocated rank 0 get no adapter. One process holds the model and what `select`
holds; decomposition is one layer at a time, each covariance freed after its last layer.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Callable, Mapping, Optional, Sequence

import torch
from torch import nn

from schemas.corda import CordaConfig
from trainer.corda import allocate
from trainer.corda.covariance import collect_covariances
from trainer.corda.decompose import Decomposition, decompose, identity, weight_matrix
from trainer.corda.metric import component_values
from trainer.corda.select import Batches, ConditionSettings, identity_choices, select

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def find_targets(model: nn.Module, patterns: Sequence[str], exclude: Sequence[str] = ()) -> dict[str, nn.Module]:
    """Linear layers (nn.Linear, transformers Conv1D) whose full name matches a pattern and no exclusion:
    e.g. `model\\.layers\\.\\d+\\.self_attn\\.(q|k|v|o)_proj`, or a vision tower / projector prefix."""
    inc = [re.compile(p) for p in patterns]
    exc = [re.compile(p) for p in exclude]
    out = {}
    for name, module in model.named_modules():
        if not (isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D"):
            continue
        if any(p.fullmatch(name) for p in inc) and not any(p.fullmatch(name) for p in exc):
            out[name] = module
    if not out:
        raise ValueError(f"no linear layer matches {list(patterns)}")
    return out


@dataclass
class CordaPlan:
    eigens: dict[str, Decomposition]
    ranks: dict[str, int]
    alphas: dict[str, float]
    mode: str
    report: dict = field(default_factory=dict)


def _settings(cfg: CordaConfig) -> ConditionSettings:
    return ConditionSettings(cfg.damp, cfg.max_condition, cfg.max_damp_iters, DTYPES[cfg.decompose_dtype])


def _collect_kwargs(cfg: CordaConfig, forward: Optional[Callable]) -> dict:
    return dict(dtype=DTYPES[cfg.accumulate_dtype], normalize=cfg.normalize, offload=cfg.offload,
                use_label_mask=cfg.use_label_mask, forward=forward)


def plan(model: nn.Module, cfg: CordaConfig, candidates: Mapping[str, Batches],
         forward: Optional[Callable] = None, targets: Optional[Mapping[str, nn.Module]] = None) -> CordaPlan:
    """Per-layer factors, ranks and the report; `candidates` maps a name to a batch iterator factory
    (one entry for static CorDA; ignored for the identity covariance)."""
    t0 = time.perf_counter()
    targets = dict(targets or find_targets(model, cfg.target_modules, cfg.exclude_modules))
    settings = _settings(cfg)
    dtype = settings.dtype
    if cfg.allocation == "fixed" and cfg.covariance == "data" and len(candidates) == 1:
        return _static_plan(model, cfg, targets, candidates, forward, t0)
    if cfg.covariance == "identity":
        choices = identity_choices(targets, dtype)
    else:
        choices = select(model, targets, candidates, rank=cfg.rank, mode=cfg.mode, metric=cfg.metric,
                         min_tokens_per_dim=cfg.min_tokens_per_dim, settings=settings,
                         collect_kwargs=_collect_kwargs(cfg, forward), score_on=cfg.score_on)
    slots = {n: allocate.LayerSlot(c.spectrum.d_in, c.spectrum.d_out, tuple(component_values(c.spectrum, cfg.mode)))
             for n, c in choices.items()}
    budget = cfg.budget if cfg.budget is not None else allocate.uniform_budget(slots, cfg.rank)
    if cfg.allocation == "fixed":
        ranks = allocate.fixed(slots, cfg.rank)
    else:
        ranks = allocate.ALLOCATORS[cfg.allocation](slots, budget, cfg.min_rank, cfg.max_rank)
    eigens, conds, last_use = {}, {}, {}
    for name, c in choices.items():
        last_use[id(c.cov)] = name
    for name, c in choices.items():
        key = id(c.cov)
        if key not in conds:
            conds[key] = identity() if c.cov is None else settings.apply(c.cov)
        if ranks[name] > 0:
            eigens[name] = decompose(weight_matrix(targets[name]), conds[key], ranks[name], cfg.mode, dtype)
        if last_use[key] == name:
            del conds[key]
            c.cov = None                                  # free the covariance after its last layer
    layers = {n: dict(candidate=c.candidate, rank=ranks[n], scores=c.scores, tokens=c.tokens, fallback=c.fallback,
                      d_in=c.spectrum.d_in, d_out=c.spectrum.d_out) for n, c in choices.items()}
    return _finish(cfg, eigens, ranks, slots, budget, layers, t0)


def _static_plan(model, cfg, targets, candidates, forward, t0) -> CordaPlan:
    """One covariance, fixed ranks: one SVD per layer, cropped at once (static CorDA's cost path)."""
    settings = _settings(cfg)
    (cand, batches), = candidates.items()
    covs = collect_covariances(model, targets, batches(), **_collect_kwargs(cfg, forward))
    members: dict[str, list[str]] = {}
    for name in targets:
        members.setdefault(covs.group_of[name], []).append(name)
    eigens, layers, slots = {}, {}, {}
    for group, names in members.items():
        cond = settings.apply(covs.cov.pop(group))
        for name in names:
            w = weight_matrix(targets[name])
            eigens[name] = decompose(w, cond, min(cfg.rank, min(w.shape)), cfg.mode, settings.dtype)
            slots[name] = allocate.LayerSlot(w.shape[1], w.shape[0], (0.0,) * min(w.shape))
            layers[name] = dict(candidate=cand, rank=eigens[name].S_WC.shape[0], group=group, damp=cond.damp,
                                damp_capped=cond.capped, tokens={cand: covs.tokens[group]}, d_in=w.shape[1],
                                d_out=w.shape[0])
        del cond
    ranks = {n: layers[n]["rank"] for n in targets}
    return _finish(cfg, eigens, ranks, slots, allocate.uniform_budget(slots, cfg.rank), layers, t0)


def _finish(cfg, eigens, ranks, slots, budget, layers, t0) -> CordaPlan:
    realised = allocate.parameters(ranks, slots)
    if realised > budget:        # only a fixed rank with an explicit smaller budget gets here
        raise ValueError(f"corda: rank {cfg.rank} on every layer needs {realised} parameters, over the budget {budget}")
    alphas = {n: float(cfg.alpha if cfg.alpha is not None else r) for n, r in ranks.items() if r > 0}
    report = dict(mode=cfg.mode, covariance=cfg.covariance, selection=cfg.selection, allocation=cfg.allocation,
                  metric=cfg.metric, score_on=cfg.score_on, budget=budget, realised_params=realised,
                  seconds=time.perf_counter() - t0, layers=layers)
    return CordaPlan(eigens=eigens, ranks=ranks, alphas=alphas, mode=cfg.mode, report=report)


def lora_config(plan: CordaPlan, **extra):
    """The PeftConfig that makes PEFT build these adapters (fully qualified, escaped names)."""
    from peft import LoraConfig
    from peft.tuners.lora.config import CordaConfig as PeftCordaConfig
    names = [n for n, r in plan.ranks.items() if r > 0]
    ranks = [plan.ranks[n] for n in names]
    return LoraConfig(
        r=max(ranks), lora_alpha=plan.alphas[names[ranks.index(max(ranks))]],
        target_modules="|".join(re.escape(n) for n in names),
        rank_pattern={re.escape(n): plan.ranks[n] for n in names},
        alpha_pattern={re.escape(n): plan.alphas[n] for n in names},
        init_lora_weights="corda", corda_config=PeftCordaConfig(corda_method=plan.mode), lora_dropout=0.0, **extra)


def attach(model: nn.Module, plan: CordaPlan, **extra):
    """Hand the factors to PEFT: the returned PeftModel's outputs equal `model`'s at initialisation."""
    from peft import get_peft_model
    from peft.tuners.lora.corda import CordaEigens
    modules = dict(model.named_modules())
    for name, e in plan.eigens.items():
        w = modules[name].weight
        modules[name].eigens = CordaEigens(S_WC=e.S_WC.to(w.device, torch.float32).clone(),
                                           U_WC=e.U_WC.to(w.device, torch.float32),
                                           V_WC=e.V_WC.to(w.device, torch.float32))
    if any(type(modules[n]).__name__ == "Conv1D" for n in plan.eigens):   # GPT-2 style (in, out) weights
        extra.setdefault("fan_in_fan_out", True)
    peft_model = get_peft_model(model, lora_config(plan, **extra))
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    plan.report["trainable_params"] = trainable
    return peft_model


def save_cache(plan: CordaPlan, path: str) -> None:
    """PEFT's `CordaConfig.cache_file` format (keys `NAME.eigens.S_WC|U_WC|V_WC`)."""
    torch.save({f"{n}.eigens.{k}": getattr(e, k) for n, e in plan.eigens.items() for k in ("S_WC", "U_WC", "V_WC")},
               path)


