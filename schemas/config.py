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

import configs as _configs_package

CONFIG_DIR = os.path.dirname(os.path.abspath(_configs_package.__file__))


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
