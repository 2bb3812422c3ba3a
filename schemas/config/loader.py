"""The strict recipe loader shared by every recipe (the pipeline's `Config`, the trainer's
`TrainConfig`, CorDA's section): YAML with `extends`, `key.path=value` overrides, and every key
checked against a dataclass (unknown, missing and mistyped keys fail, naming the key). Also the
small value checks the sections' `__post_init__` use."""
from __future__ import annotations

import dataclasses
import difflib
import os
import typing
from typing import Any, Literal, Union

import yaml

import configs as _configs_package

CONFIG_DIR = os.path.dirname(os.path.abspath(_configs_package.__file__))


class ConfigError(ValueError):
    """A recipe that cannot be used; the message names the key."""


def check(ok: bool, key: str, rule: str, value: Any) -> None:
    if not ok:
        raise ConfigError(f"{key}: must be {rule}, got {value!r}")



# --- value checks (run on load, from the dataclasses' __post_init__) -----------------------
def check_range(key: str, value: float, lo: float, hi: float, low_open: bool = False) -> None:
    if value < lo or value > hi or (low_open and value == lo):
        raise ConfigError(f"{key}: must be in {'(' if low_open else '['}{lo}, {hi}], got {value}")


def check_positive(section: str, **values: int) -> None:
    for key, value in values.items():
        if value < 1:
            raise ConfigError(f"{section}.{key}: must be at least 1, got {value}")


def check_tasks(key: str, tasks: list[str]) -> None:
    from schemas.sample import TASKS

    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise ConfigError(f"{key}: unknown tasks {unknown}; known: {list(TASKS)}")


def check_score(key: str, name: str) -> None:
    from schemas.scores import SCORE_NAMES

    if name not in SCORE_NAMES:
        close = difflib.get_close_matches(name, SCORE_NAMES, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"{key}: {name!r} is not a registered score{hint}")


T = typing.TypeVar("T")


def load_recipe(cls: type[T], path: str, overrides: typing.Sequence[str] = ()) -> T:
    """The strict loader for any recipe dataclass (the pipeline's `Config`, the trainer's
    `TrainConfig`): YAML with `extends`, `key.path=value` overrides, then every key checked
    against `cls` (unknown, missing and mistyped keys fail, naming the key)."""
    raw = load_yaml_with_extends(path, seen=())
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        dotted, value = item.split("=", 1)
        _set_dotted(raw, dotted.strip(), yaml.safe_load(value) if value.strip() else None)
    return build(cls, raw, "")


def from_dict(cls: type[T], data: dict, where: str = "") -> T:
    """A recipe dataclass (or one section, e.g. `MediaConfig`) from a plain dict, checked as on load:
    how the trainer rebuilds the recipe a pipeline output recorded in its manifest."""
    return build(cls, data, where)


def load_yaml_with_extends(path: str, seen: tuple) -> dict:
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
    return _deep_merge(load_yaml_with_extends(parent_path, seen + (path,)), data)


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


def build(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"unknown key {_join(where, key)!r}{hint}")
    optional = {f.name for f in dataclasses.fields(cls)
                if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING}
    missing = [n for n in names if n not in data and n not in optional]
    if missing:
        raise ConfigError(f"missing key {_join(where, missing[0])!r}: every key must be set "
                          f"(configs/base.yaml holds them all)")
    return cls(**{n: _coerce(hints[n], data[n], _join(where, n)) for n in names if n in data})


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return build(tp, value, where)
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
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__}")
        return tuple(_coerce(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
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
