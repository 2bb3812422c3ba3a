"""The `corda` recipe section: CorDA / CorDA++ adapter initialisation (trainer/corda/, issue 12).

Types only; every key with its default and comment is in `configs/train_base.yaml` (`corda:`). Special cases by value:
static CorDA = `selection: static, allocation: fixed`; PiSSA = `covariance: identity, mode: ipm`;
MiLoRA = `covariance: identity, mode: kpm`; CorDA++ = `selection: modes|subsets` and/or
`allocation: greedy|global_rank`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal, Optional


@dataclass(frozen=True)
class CordaConfig:
    mode: Literal["ipm", "kpm"]                      # adapt the top (ipm) or bottom (kpm) components
    covariance: Literal["data", "identity"]          # identity: PiSSA (ipm) / MiLoRA (kpm)
    target_modules: list[str]                        # regexes, full-matched against module names
    exclude_modules: list[str]
    rank: int                                        # the nominal rank (fixed rank, budget unit)
    alpha: Optional[float]                           # null: alpha = rank per layer (scale 1, as CorDA)
    selection: Literal["static", "subsets", "modes"]
    num_subsets: int                                 # candidates for selection: subsets
    modes: list[str]                                 # candidates for selection: modes (empty: every mode seen)
    metric: Literal["energy", "pi"]
    score_on: Literal["own", "pooled"]               # measure a candidate on its own data or on all candidates'
    min_tokens_per_dim: float                        # a candidate needs tokens >= this * d_in to be selectable
    allocation: Literal["fixed", "greedy", "global_rank"]
    budget: Optional[int]                            # trainable parameters; null: rank on every layer
    min_rank: int
    max_rank: Optional[int]
    samples: int                                     # calibration samples (--corda_samples)
    batch_size: int
    data: Optional[str]                              # calibration data folder (--corda_data); kpm: knowledge data
    use_label_mask: bool                             # count only positions that produce a loss
    normalize: Literal["token", "peft_max"]
    accumulate_dtype: Literal["float32", "float64"]
    decompose_dtype: Literal["float32", "float64"]
    offload: bool                                    # keep covariances on CPU
    damp: float                                      # first relative damping of C
    max_condition: float
    max_damp_iters: int

    def __post_init__(self):
        from schemas.config import ConfigError
        if self.rank < 1 or self.min_rank < 0 or (self.max_rank is not None and self.max_rank < max(1, self.min_rank)):
            raise ConfigError(f"corda: rank {self.rank}, min_rank {self.min_rank}, "
                              f"max_rank {self.max_rank} inconsistent")
        if self.num_subsets < 1 or self.samples < 1 or self.batch_size < 1 or self.max_damp_iters < 1:
            raise ConfigError("corda: num_subsets, samples, batch_size and max_damp_iters must be >= 1")
        if not (self.damp > 0 and self.max_condition > 1 and self.min_tokens_per_dim >= 0):
            raise ConfigError("corda: damp > 0, max_condition > 1 and min_tokens_per_dim >= 0 required")
        if self.budget is not None and self.budget < 1:
            raise ConfigError("corda.budget: must be a positive parameter count or null")
        if not self.target_modules:
            raise ConfigError("corda.target_modules: at least one pattern")


def corda_config(path: Optional[str] = None, **overrides) -> CordaConfig:
    """The `corda` section of a recipe (default `configs/train_base.yaml`), keys overridden by keyword."""
    from schemas.config.loader import CONFIG_DIR, build, load_yaml_with_extends
    raw = load_yaml_with_extends(path or os.path.join(CONFIG_DIR, "train_base.yaml"), ())
    section = dict(raw.get("corda") or {})
    section.update(overrides)
    return build(CordaConfig, section, "corda")
