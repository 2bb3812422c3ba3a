"""Typed trainer recipes (`configs/train_*.yaml`), loaded by the pipeline's strict loader.

`configs/train_base.yaml` holds every key with a comment; the stage recipes (`train_stage1.yaml`,
`train_stage2.yaml`, `train_stage3.yaml`, `train_sft.yaml`) and the tiny CPU recipe
(`train_tiny.yaml`) extend it. Unknown, missing or mistyped keys stop the run before any work.
"""
from __future__ import annotations

import os
import typing
from dataclasses import dataclass
from typing import Literal, Optional

from schemas.config import CONFIG_DIR, ConfigError, load_recipe
from schemas.corda import CordaConfig

STAGES = ("stage1", "stage2", "stage3", "sft")


@dataclass(frozen=True)
class VisionConfig:
    """SiglipVisionConfig fields used when `model.vision` is null (a randomly initialised encoder)."""

    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    patch_size: int                 # 14: a 2x2 merge of 14-px patches is one 28x28 visual token
    image_size: int                 # the position-embedding grid's side in pixels; interpolated to each image


@dataclass(frozen=True)
class LLMConfig:
    """Qwen3Config fields used when `model.llm` is null (a randomly initialised decoder)."""

    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    vocab_size: int                 # must cover the tokenizer's ids (Keye's added tokens end at 151678)
    max_position_embeddings: int
    rope_theta: float
    tie_word_embeddings: bool


@dataclass(frozen=True)
class ModelConfig:
    vision: Optional[str]           # SiglipVisionModel checkpoint: local folder or hub id; null: vision_config
    llm: Optional[str]              # Qwen3ForCausalLM checkpoint: local folder or hub id; null: llm_config
    init: Optional[str]             # a trainer checkpoint folder to start from (stage 1's output for stage 2)
    vision_config: VisionConfig
    llm_config: LLMConfig
    merge: int                      # spatial merge: merge x merge patches -> one visual token
    tokenizer: str                  # builtin:qwen3 (keye/tokenizer.py) or a Hugging Face tokenizer folder
    rope_theta: Optional[float]     # override the LLM's RoPE base (Keye-VL 1.5 stage 3: 8e6); null: keep
    attention: Literal["auto", "sdpa", "flash_attention_2", "eager"]   # auto: flash varlen on CUDA if installed
    dtype: Literal["auto", "float32", "bfloat16"]                        # auto: bf16 autocast on CUDA with bf16
    gradient_checkpointing: bool
    adapter: Optional[str]          # a registered adapter hook (trainer/model.py:register_adapter); null: none
    vocab_subset: bool              # random LLM only: embed / predict only the ids the training rows use
    visual_positions: Literal["none", "sincos2d", "mrope"]   # trainer/positions.py: where a visual token is


@dataclass(frozen=True)
class DataInput:
    path: str                       # a pipeline output folder (holds manifest.json)
    weight: float                   # mixing weight (normalised over inputs)


@dataclass(frozen=True)
class DataConfig:
    inputs: list[DataInput]         # `--data DIR[:weight]` on the command line replaces this list
    format: Literal["wds", "parquet"]   # read the WebDataset tars, or the Parquet rows (+ their tars' members)
    verify: bool                    # check each shard's sha256 against the manifest before reading it
    resample: bool                  # draw shards with replacement (webdataset-style resampling) per epoch
    shuffle_buffer: int             # samples in the shuffle buffer (per worker); 0: no shuffle
    pack_length: int                # tokens per packed sequence
    pack_buffer: int                # rows waiting in open packs before the fullest leaves (online first-fit)
    streams: int                    # data streams the shards are split into; 0: one per rank. Fixed streams
                                    # keep the data order when the number of ranks changes
    workers: int                    # DataLoader worker processes per rank (shards split between them)
    seed: int


@dataclass(frozen=True)
class StageConfig:
    name: Literal["stage1", "stage2", "stage3", "sft"]
    trainable: list[str]            # fnmatch patterns over parameter names; the rest is frozen
                                    # (vision.*, projector.*, llm.*; "*" trains everything)


@dataclass(frozen=True)
class OptimConfig:
    lr: float
    min_lr_ratio: float             # the schedule's floor, as a fraction of lr
    weight_decay: float
    beta1: float
    beta2: float
    eps: float
    schedule: Literal["cosine", "linear", "constant"]   # after warmup; stage 3 anneals linearly to the floor
    warmup_steps: int
    max_steps: int
    micro_batch: int                # packed sequences per forward pass
    grad_accum: int                 # micro-batches per optimizer step (per rank)
    clip_norm: float                # 0: no clipping
    lr_scale: dict[str, float]      # fnmatch pattern over parameter names -> lr multiplier (first match wins)


@dataclass(frozen=True)
class RunConfig:
    checkpoint_every: int           # steps; the last step is always saved
    keep_checkpoints: int           # newest kept; 0: all
    log_every: int                  # steps between log lines (JSONL + TensorBoard)
    tensorboard: bool
    progress: Literal["auto", "always", "never"]   # auto: a progress bar when stderr is a terminal
    device: str                     # auto | cpu | cuda | cuda:N
    seed: int
    distributed: Literal["ddp", "fsdp"]     # under torchrun; FSDP shards parameters (GPU runs)


@dataclass(frozen=True)
class TrainConfig:
    name: str
    model: ModelConfig
    data: DataConfig
    stage: StageConfig
    optim: OptimConfig
    run: RunConfig
    corda: CordaConfig              # CorDA / CorDA++ adapters, used when model.adapter is trainer.corda.keye:apply

    def __post_init__(self) -> None:
        d, o = self.data, self.optim
        if d.pack_length < 16 or d.pack_buffer < 1 or d.shuffle_buffer < 0 or d.streams < 0 or d.workers < 0:
            raise ConfigError("data: pack_length >= 16, pack_buffer >= 1, shuffle_buffer/streams/workers >= 0")
        if any(i.weight <= 0 for i in d.inputs):
            raise ConfigError("data.inputs: weights must be > 0")
        if o.max_steps < 1 or o.micro_batch < 1 or o.grad_accum < 1 or o.warmup_steps < 0:
            raise ConfigError("optim: max_steps, micro_batch, grad_accum >= 1 and warmup_steps >= 0")
        if not 0 <= o.min_lr_ratio <= 1:
            raise ConfigError(f"optim.min_lr_ratio: must be in [0, 1], got {o.min_lr_ratio}")
        if not self.stage.trainable:
            raise ConfigError("stage.trainable: name at least one parameter pattern")


def load_train_config(path: Optional[str] = None, overrides: typing.Sequence[str] = ()) -> TrainConfig:
    """A trainer recipe (default: configs/train_tiny.yaml) with `section.key=value` overrides."""
    return load_recipe(TrainConfig, path or os.path.join(CONFIG_DIR, "train_tiny.yaml"), overrides)
