"""Recipe sections of the cold-start mixture (`mixture:` in configs/base.yaml): the generator
model, verification, the five modes' builders, token shares, mixing and the code sandbox."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

from schemas.config.curation import OpenAIBackendConfig, TransformersBackendConfig
from schemas.config.loader import ConfigError, check, check_positive, check_score, check_tasks


@dataclass(frozen=True)
class GeneratorConfig:
    """The model that writes reasoning paths, analyses and image code (mixture.builders.generator):
    the same backends as recaptioning (captioners/backends.py), its own endpoint."""
    backend: Literal["openai", "transformers"]
    generator_id: Optional[str]     # recorded in provenance; null: "<backend>:<model>"
    max_new_tokens: int
    temperature: float              # paths of one item differ by seed (sampled at this temperature)
    seed: int                       # mixed with the row id and path index into each request's seed
    openai: OpenAIBackendConfig
    transformers: TransformersBackendConfig

    def __post_init__(self) -> None:
        k = "mixture.builders.generator."
        check(self.max_new_tokens >= 1, k + "max_new_tokens", ">= 1", self.max_new_tokens)
        check(self.temperature >= 0, k + "temperature", ">= 0", self.temperature)
        check(self.openai.concurrency >= 1 and self.openai.max_retries >= 0 and self.openai.timeout_s > 0,
               k + "openai", "concurrency >= 1, max_retries >= 0, timeout_s > 0", self.openai)


@dataclass(frozen=True)
class VerifyConfig:
    numeric_rel_tol: float          # |a - b| <= max(abs_tol, rel_tol * |b|) counts as equal
    numeric_abs_tol: float
    judge: bool                     # free-form answers no rule matches go to the generator as judge
    judge_prompt: str               # mixture/prompts/<id>.txt

    def __post_init__(self) -> None:
        check(self.numeric_rel_tol >= 0 and self.numeric_abs_tol >= 0, "mixture.builders.verify.numeric_*_tol",
               ">= 0", (self.numeric_rel_tol, self.numeric_abs_tol))


@dataclass(frozen=True)
class PathsConfig:
    n: int                          # reasoning paths sampled per item
    min_step_chars: int             # shorter steps (connectives) are not scored
    grouping: Literal["text", "clip_text"]   # equivalent steps: equal normalised text, or CLIP text
                                             # embeddings (score.model) with cosine >= step_similarity
    step_similarity: float
    too_easy_pass_rate: float       # items solved in at least this share of paths are dropped (too_easy); > 1: never

    def __post_init__(self) -> None:
        check(self.n >= 1, "mixture.builders.paths.n", ">= 1", self.n)
        check(self.too_easy_pass_rate > 0, "mixture.builders.paths.too_easy_pass_rate", "> 0",
               self.too_easy_pass_rate)
        check(0 < self.step_similarity <= 1, "mixture.builders.paths.step_similarity", "in (0, 1]",
               self.step_similarity)


@dataclass(frozen=True)
class RepetitionConfig:
    ngram: int                      # repeated word n-gram rate uses n-grams of this length
    max_dup_ngram_ratio: float
    max_compression_ratio: float    # raw bytes / zlib bytes
    min_words: int                  # shorter texts are not judged on the two ratios (tags always are)

    def __post_init__(self) -> None:
        k = "mixture.builders.repetition."
        check(self.ngram >= 1, k + "ngram", ">= 1", self.ngram)
        check(0 <= self.max_dup_ngram_ratio <= 1, k + "max_dup_ngram_ratio", "in [0, 1]", self.max_dup_ngram_ratio)
        check(self.max_compression_ratio >= 1, k + "max_compression_ratio", ">= 1", self.max_compression_ratio)


@dataclass(frozen=True)
class ModeBuilderConfig:
    enabled: bool
    tasks: list[str]                # rows of these tasks are material for the mode

    def __post_init__(self) -> None:
        check_tasks("mixture.builders.*.tasks", self.tasks)


@dataclass(frozen=True)
class ThinkingBuilderConfig(ModeBuilderConfig):
    generate: bool                  # rows without a reasoning trace get paths from the generator
    prompt: str                     # mixture/prompts/<id>.txt


@dataclass(frozen=True)
class AutoThinkBuilderConfig(ModeBuilderConfig):
    decide_by: Literal["generator", "pass_rate"]   # who judges difficulty: the analysis' own choice, or
                                                   # the pass rate over paths.n sampled paths
    hard_pass_rate: float           # decide_by pass_rate: pass rate below this -> /think, else /no_think
    analysis_prompt: str            # decide_by generator: the generator analyses and chooses
    explain_prompt: str             # decide_by pass_rate: the generator explains the given choice
    prompt: str                     # reasoning paths for the /think branch

    def __post_init__(self) -> None:
        super().__post_init__()
        check(0 < self.hard_pass_rate <= 1, "mixture.builders.auto_think.hard_pass_rate", "in (0, 1]",
               self.hard_pass_rate)


@dataclass(frozen=True)
class ThinkWithImageBuilderConfig(ModeBuilderConfig):
    code_prompt: str                # the generator proposes reasoning + image code
    continue_prompt: str            # ... and, shown the produced image, reasons on to the answer
    image_name: str                 # the input image as the snippet sees it: /input/<image_name>

    def __post_init__(self) -> None:
        super().__post_init__()
        import re

        check(bool(re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9._-]*\.(png|jpg|jpeg)", self.image_name)),
               "mixture.builders.think_with_image.image_name", "a plain file name ending in .png/.jpg", self.image_name)


@dataclass(frozen=True)
class VideoBuilderConfig(ModeBuilderConfig):
    generate: bool                  # video_think rows without a trace get paths from the generator
    prompt: str
    max_frames: int                 # frames of a video sent to the generator (evenly thinned)

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.max_frames >= 1, "mixture.builders.video.max_frames", ">= 1", self.max_frames)


@dataclass(frozen=True)
class BuildersConfig:
    """mixture.builders: what makes each mode's rows (mixture/); shares and the sandbox are siblings."""
    auto_think_suffix: Optional[str]   # suffix of auto-think user turns: null (Keye-VL 1.5) or "/auto_think" (preview)
    boxed_max_words: int               # reference answers of at most this many words are closed-form: \boxed{}
    generator: GeneratorConfig
    verify: VerifyConfig
    paths: PathsConfig
    repetition: RepetitionConfig
    non_thinking: ModeBuilderConfig
    thinking: ThinkingBuilderConfig
    auto_think: AutoThinkBuilderConfig
    think_with_image: ThinkWithImageBuilderConfig
    video: VideoBuilderConfig


@dataclass(frozen=True)
class SharesConfig:
    """Target shares of the cold-start mixture per category (mixture/base.py CATEGORIES)."""

    unit: Literal["samples", "tokens"]   # what a share counts: rows, or text + visual tokens
    targets: dict[str, float]            # category -> weight (only ratios matter; Keye-VL's counts by default)

    def __post_init__(self) -> None:
        from schemas.sample import CATEGORIES

        unknown = sorted(set(self.targets) - set(CATEGORIES))
        if unknown:
            raise ConfigError(f"mixture.shares.targets: unknown categories {unknown}; known: {list(CATEGORIES)}")
        if any(v < 0 for v in self.targets.values()) or not any(v > 0 for v in self.targets.values()):
            raise ConfigError("mixture.shares.targets: weights must be >= 0 and at least one > 0")


@dataclass(frozen=True)
class UpsampleRule:
    """Keye-VL 1.5 repeats its best-scored samples: a kept row whose `score` is at least `min`
    appears `repeats` times in all (copies `<id>@r2` ...). The first matching rule wins."""
    score: str                      # a registered score (schemas/scores.py), e.g. gen_path_score
    min: float
    repeats: int

    def __post_init__(self) -> None:
        check_score("mixture.mixing.upsample.score", self.score)
        check(self.repeats >= 1, "mixture.mixing.upsample.repeats", ">= 1", self.repeats)


@dataclass(frozen=True)
class MixingConfig:
    route: Literal["all", "one"]  # a row goes to every builder that wants it, or to one (seeded hash)
    seed: int                   # seeds the hash rank that picks which rows of a category are kept
    rank_bins: int              # hash-rank histogram bins per category when searching each quota's cutoff
    upsample: list[UpsampleRule]  # after the shares: repeat the best-scored rows ([]: none)


@dataclass(frozen=True)
class MixtureConfig:
    builders: BuildersConfig
    sandbox: "SandboxConfig"
    shares: SharesConfig            # target share per category, scaled to the data available (mixture/mixing.py)
    mixing: MixingConfig

    def __post_init__(self) -> None:
        check_positive("mixture.mixing", rank_bins=self.mixing.rank_bins)


@dataclass(frozen=True)
class SandboxConfig:
    bwrap: str                      # bubblewrap binary (name on PATH or path); missing: the stage fails closed
    python: Optional[str]           # the snippets' interpreter (e.g. a venv with only PIL, numpy, OpenCV); null: the engine's
    cpu_s: float                    # RLIMIT_CPU per snippet
    wall_s: float                   # killed from outside past this
    memory_mb: int                  # RLIMIT_AS
    file_mb: int                    # RLIMIT_FSIZE: largest file a snippet may write
    output_bytes: int               # stdout (and stderr) beyond this: killed
    max_files: int                  # files a snippet may leave in its output folder
    max_processes: int              # RLIMIT_NPROC (threads count)
    open_files: int                 # RLIMIT_NOFILE
    tmp_mb: int                     # size of the snippet's /tmp
    max_concurrent: int             # snippets running at once per worker process; 0: one per CPU core
    allowed_imports: list[str]      # top-level modules a snippet may import (defence in depth)

    def __post_init__(self) -> None:
        k = "mixture.sandbox."
        for name in ("cpu_s", "wall_s", "memory_mb", "file_mb", "output_bytes", "max_files", "max_processes",
                     "tmp_mb"):
            check(getattr(self, name) > 0, k + name, "> 0", getattr(self, name))
        check(self.open_files >= 16, k + "open_files", ">= 16", self.open_files)
        check(self.max_concurrent >= 0, k + "max_concurrent", ">= 0", self.max_concurrent)
        check(all(m and "." not in m for m in self.allowed_imports), k + "allowed_imports",
               "top-level module names", self.allowed_imports)
