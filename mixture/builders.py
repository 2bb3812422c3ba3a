"""The mode builders by category, made from the recipe (`mixture.builders`): what `pipelines/mixture.py` runs.

    make_builders(cfg) -> [NonThinkingBuilder, ThinkingBuilder, AutoThinkBuilder, ThinkWithImageBuilder,
                           VideoThinkBuilder, VideoNoThinkBuilder]      (CATEGORIES order; enabled ones only)

Each follows `mixture.base.ModeBuilder`: `setup()` once per worker (the generator client; the sandbox,
which fails closed), `wants(sample)` (a pure function of the row: its task is in the mode's `tasks`,
it is a question with a reference answer, and its media suit the mode), `__call__(sample)` -> one
derived row `<id>@<tag>` or a Rejected row. A row may be material for several modes; the mixture's
shares decide which derived rows are kept.
"""
from __future__ import annotations

from typing import Optional

from mixture.auto_think import AutoThinkBuilder
from mixture.base import CATEGORIES, ModeBuilder
from mixture.generate import Generator
from mixture.non_thinking import NonThinkingBuilder
from mixture.think_with_image import ThinkWithImageBuilder
from mixture.thinking import ThinkingBuilder
from mixture.video import VideoNoThinkBuilder, VideoThinkBuilder
from schemas.config import Config

BUILDERS = {b.category: b for b in (NonThinkingBuilder, ThinkingBuilder, AutoThinkBuilder, ThinkWithImageBuilder,
                                    VideoThinkBuilder, VideoNoThinkBuilder)}
assert tuple(BUILDERS) == CATEGORIES


def section_of(cfg: Config, category: str):
    b = cfg.mixture.builders
    return {"non_thinking": b.non_thinking, "thinking": b.thinking, "auto_think": b.auto_think,
            "think_with_image": b.think_with_image, "video_think": b.video, "video_no_think": b.video}[category]


def make_builders(cfg: Config, generator: Optional[Generator] = None, sandbox=None) -> list[ModeBuilder]:
    """The enabled builders; `generator` / `sandbox` inject shared clients (tests pass fakes)."""
    out = []
    for category, cls in BUILDERS.items():
        if not section_of(cfg, category).enabled:
            continue
        out.append(cls(cfg, generator, sandbox) if cls is ThinkWithImageBuilder else cls(cfg, generator))
    return out
