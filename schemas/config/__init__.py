"""Typed, validated YAML recipes.

Every threshold lives in `configs/base.yaml` (with a comment saying what it does); a recipe
such as `configs/demo.yaml` says `extends: base.yaml` and overrides a few keys; the command
line overrides single keys with `--set section.key=value`. The dataclasses below only give
the types: loading fails, before any work starts, on an unknown key, a missing key or a
value of the wrong type, naming the key.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import typing
from dataclasses import dataclass
from typing import Any, Optional

from schemas.config.curation import *  # noqa: F403  (the sections, importable as schemas.config.X)
from schemas.config.curation import (DecontaminateConfig, DedupeConfig, IngestConfig, InputConfig, MediaConfig,
                                     OutputConfig, RecaptionConfig, ScoreConfig, TextConfig, TokensConfig,
                                     ValidateConfig)
from schemas.config.loader import CONFIG_DIR, ConfigError, from_dict, load_recipe  # noqa: F401
from schemas.config.mixture import *  # noqa: F403
from schemas.config.mixture import MixtureConfig


@dataclass(frozen=True)
class Config:
    name: str
    inputs: list[InputConfig]
    ingest: IngestConfig
    validate: ValidateConfig
    text: TextConfig
    media: MediaConfig
    dedupe: DedupeConfig
    decontaminate: DecontaminateConfig
    score: ScoreConfig
    recaption: RecaptionConfig
    mixture: MixtureConfig
    tokens: TokensConfig
    output: OutputConfig

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def hash(self) -> str:
        """Hash of the recipe's rules, recorded in every row's provenance, so rows can be matched
        to the thresholds that kept them. Where data lives is not a rule: inputs, media roots and
        benchmark paths are left out (the manifest lists them), and so are model endpoints
        (`*.openai.base_url`: the demo serves its reasoner on any free port), so moving a corpus,
        the demo generating its corpus under another output folder, or another port does not
        change a row's bytes."""
        recipe = {k: v for k, v in self.to_dict().items() if k != "inputs"}
        recipe["ingest"] = {k: v for k, v in recipe["ingest"].items() if k not in ("media_root", "media_roots")}
        recipe["decontaminate"] = dict(recipe["decontaminate"], benchmarks=[
            b["name"] for b in recipe["decontaminate"]["benchmarks"]])
        _drop_key(recipe, "base_url")
        blob = json.dumps(recipe, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def with_inputs(self, inputs: list[InputConfig]) -> "Config":
        return dataclasses.replace(self, inputs=list(inputs))


def _drop_key(d: Any, key: str) -> None:
    """Remove `key` from every mapping nested in d (in place)."""
    if isinstance(d, dict):
        d.pop(key, None)
        for v in d.values():
            _drop_key(v, key)
    elif isinstance(d, list):
        for v in d:
            _drop_key(v, key)


# --- loading ---------------------------------------------------------------------------
def load_config(path: Optional[str] = None, overrides: typing.Sequence[str] = ()) -> Config:
    """Load a recipe (default: configs/base.yaml), apply `key.path=value` overrides, validate."""
    return load_recipe(Config, path or os.path.join(CONFIG_DIR, "base.yaml"), overrides)
