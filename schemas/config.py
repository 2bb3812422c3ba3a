"""Typed, validated YAML recipes.

Every threshold lives in `configs/base.yaml` (with a comment saying what it does); a recipe
such as `configs/demo.yaml` says `extends: base.yaml` and overrides a few keys; the command
line overrides single keys with `--set section.key=value`. The dataclasses below only give
the types: loading fails, before any work starts, on an unknown key, a missing key or a
value of the wrong type, naming the key.
"""
from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import os
import typing
from dataclasses import dataclass
from typing import Any, Literal, Optional, Union

import yaml

CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


class ConfigError(ValueError):
    """A recipe that cannot be used; the message names the key."""


# --- sections ------------------------------------------------------------------------
@dataclass(frozen=True)
class InputConfig:
    path: str                       # file, directory or glob; any Beam FileSystems scheme
    source: Optional[str]           # name recorded in each row; default: derived from path
    format: Literal["auto", "jsonl", "json", "parquet", "wds"]


@dataclass(frozen=True)
class IngestConfig:
    max_row_bytes: int
    max_payload_bytes: int
    media_root: Optional[str]


@dataclass(frozen=True)
class ValidateConfig:
    max_field_chars: int
    max_media_per_row: int
    max_messages: int
    default_caption_prompt: Optional[str]


@dataclass(frozen=True)
class TextConfig:
    unicode_form: Literal["NFC", "NFKC", "none"]
    strip_control_chars: bool
    collapse_spaces: bool
    min_chars: int
    max_chars: int
    repetition_ngram: int
    max_dup_ngram_ratio: float
    max_dup_line_ratio: float
    min_words_for_repetition: int


@dataclass(frozen=True)
class MediaConfig:
    max_bytes: int


@dataclass(frozen=True)
class ExactDedupeConfig:
    enabled: bool


@dataclass(frozen=True)
class DedupeConfig:
    exact: ExactDedupeConfig


SCORE_TASKS = ("caption", "video", "grounding", "interleaved")   # tasks with a clip_score
RECAPTION_TASKS = ("caption", "video")


@dataclass(frozen=True)
class ScoreRule:
    """Which threshold applies to rows of a task (and optionally one source), and what
    happens below it. The first rule that matches a row wins."""

    source: Optional[str]           # null: every source
    task: str                       # one of SCORE_TASKS
    kind: Literal["absolute", "percentile"]
    value: float                    # a cosine, or a percentile (0-100) of the (source, task) distribution
    below: Literal["keep", "recaption", "drop"]

    def __post_init__(self) -> None:
        if self.task not in SCORE_TASKS:
            raise ConfigError(f"score.rules: task {self.task!r} has no clip_score; use one of {SCORE_TASKS}")
        if self.kind == "percentile" and not 0.0 <= self.value <= 100.0:
            raise ConfigError(f"score.rules: percentile {self.value} is outside 0-100")
        if self.kind == "absolute" and not -1.0 <= self.value <= 1.0:
            raise ConfigError(f"score.rules: absolute threshold {self.value} is not a cosine in [-1, 1]")
        if self.below == "recaption" and self.task not in RECAPTION_TASKS:
            raise ConfigError(f"score.rules: rows of task {self.task!r} cannot be recaptioned; "
                              f"use keep or drop")


@dataclass(frozen=True)
class ScoreConfig:
    enabled: bool
    model: str                      # open_clip name, "local-dir:PATH", a folder, or "builtin:NAME"
    pretrained: Optional[str]       # tag (hub download), a checkpoint file, or null
    device: str                     # auto | cpu | cuda | cuda:N
    precision: Literal["fp32", "fp16", "bf16"]
    min_batch_images: int
    max_batch_images: int
    forward_chunk: int
    large_model: bool
    model_copies: Optional[int]
    resource_hints: dict[str, str]
    video_max_frames: int
    histogram_bins: int
    rules: list[ScoreRule]
    write_embeddings: bool

    def __post_init__(self) -> None:
        if not 1 <= self.min_batch_images <= self.max_batch_images:
            raise ConfigError("score: need 1 <= min_batch_images <= max_batch_images")
        if self.forward_chunk < 1 or self.video_max_frames < 1 or self.histogram_bins < 10:
            raise ConfigError("score: forward_chunk and video_max_frames must be >= 1, histogram_bins >= 10")


@dataclass(frozen=True)
class OpenAIBackendConfig:
    base_url: str                   # ends in /v1: POST {base_url}/chat/completions
    model: str                      # the served model name
    api_key_env: Optional[str]      # environment variable holding the bearer token; null: none
    concurrency: int                # requests in flight per worker process
    timeout_s: float                # per request (connect + read)
    max_retries: int                # after the first attempt, on 429 / 5xx / timeout / malformed / empty
    backoff_base_s: float
    backoff_max_s: float
    request_budget: int             # requests (retries included) per worker process; 0: unlimited


@dataclass(frozen=True)
class TransformersBackendConfig:
    model: Optional[str]            # local folder (or hub id where the network allows)
    device: str                     # auto | cpu | cuda | cuda:N
    dtype: Literal["auto", "float32", "bfloat16", "float16"]
    trust_remote_code: bool         # e.g. Keye-VL's own modelling code
    batch_size: int
    max_retries: int                # a failed or empty generation is retried alone, with a new seed


@dataclass(frozen=True)
class RecaptionConfig:
    enabled: bool
    backend: Literal["openai", "transformers"]
    captioner_id: Optional[str]     # recorded in provenance; null: "<backend>:<model>"
    image_prompt: str               # prompt ids: captioners/prompts/<id>.txt
    video_prompt: str
    video_asr_prompt: str
    video_fps: list[float]          # one request per rate for each video (Keye: 0.5, 1, 2)
    max_frames: int                 # frames per video request, at most
    image_max_side: int             # images and frames are downscaled to this longer side before sending
    max_new_tokens: int
    temperature: float
    batch_rows: int                 # routed rows buffered per worker before their requests go out together
    openai: OpenAIBackendConfig
    transformers: TransformersBackendConfig

    def __post_init__(self) -> None:
        if not self.video_fps or any(f <= 0 for f in self.video_fps):
            raise ConfigError("recaption.video_fps: give one or more positive rates")
        if self.max_frames < 1 or self.batch_rows < 1 or self.max_new_tokens < 1:
            raise ConfigError("recaption: max_frames, batch_rows and max_new_tokens must be >= 1")
        if self.openai.concurrency < 1 or self.openai.max_retries < 0 or self.openai.timeout_s <= 0:
            raise ConfigError("recaption.openai: concurrency >= 1, max_retries >= 0, timeout_s > 0")


@dataclass(frozen=True)
class TokensConfig:
    tokenizer: str
    system_prompt: Optional[str]
    max_total_tokens: int


@dataclass(frozen=True)
class OutputConfig:
    shard_max_rows: int
    shard_max_bytes: int
    rejected_shard_max_rows: int
    parquet_compression: Literal["zstd", "snappy", "gzip", "none"]
    parquet_row_group_rows: int
    write_wds: bool


@dataclass(frozen=True)
class Config:
    name: str
    inputs: list[InputConfig]
    ingest: IngestConfig
    validate: ValidateConfig
    text: TextConfig
    media: MediaConfig
    dedupe: DedupeConfig
    score: ScoreConfig
    recaption: RecaptionConfig
    tokens: TokensConfig
    output: OutputConfig

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def hash(self) -> str:
        """Hash of the recipe (inputs excluded: they are listed in the manifest), recorded in
        every row's provenance, so rows can be matched to the thresholds that kept them."""
        recipe = {k: v for k, v in self.to_dict().items() if k != "inputs"}
        blob = json.dumps(recipe, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def with_inputs(self, inputs: list[InputConfig]) -> "Config":
        return dataclasses.replace(self, inputs=list(inputs))


# --- loading ---------------------------------------------------------------------------
def load_config(path: Optional[str] = None, overrides: typing.Sequence[str] = ()) -> Config:
    """Load a recipe (default: configs/base.yaml), apply `key.path=value` overrides, validate."""
    raw = _load_yaml_with_extends(path or os.path.join(CONFIG_DIR, "base.yaml"), seen=())
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        dotted, value = item.split("=", 1)
        _set_dotted(raw, dotted.strip(), yaml.safe_load(value) if value.strip() else None)
    return _build(Config, raw, "")


def _load_yaml_with_extends(path: str, seen: tuple) -> dict:
    path = os.path.abspath(path)
    if path in seen:
        raise ConfigError(f"'extends' cycle through {path}")
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    parent = data.pop("extends", None)
    if parent is None:
        return data
    parent_path = parent if os.path.isabs(parent) else os.path.join(os.path.dirname(path), parent)
    return _deep_merge(_load_yaml_with_extends(parent_path, seen + (path,)), data)


def _deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def _set_dotted(raw: dict, dotted: str, value: Any) -> None:
    node = raw
    parts = dotted.split(".")
    for p in parts[:-1]:
        nxt = node.get(p)
        if not isinstance(nxt, dict):
            raise ConfigError(f"override {dotted!r}: {p!r} is not a section")
        node = nxt
    node[parts[-1]] = value


def _build(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"unknown key {_join(where, key)!r}{hint}")
    missing = [n for n in names if n not in data]
    if missing:
        raise ConfigError(f"missing key {_join(where, missing[0])!r}: every key must be set "
                          f"(configs/base.yaml holds them all)")
    return cls(**{n: _coerce(hints[n], data[n], _join(where, n)) for n in names})


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, where)
    if origin is Union:
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return _coerce(inner[0], value, where)
        raise ConfigError(f"{where}: unsupported union type")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}: must be one of {list(args)}, got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__}")
        return [_coerce(args[0], v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        return {str(k): _coerce(args[1], v, f"{where}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported type {tp}")


def _join(where: str, key: Any) -> str:
    return f"{where}.{key}" if where else str(key)
