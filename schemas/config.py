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
    # Only these matched files (full paths), when not empty: how a resumable run (output.partition_files)
    # gives each partition its files while sources and source_refs stay those of the whole input.
    files: tuple[str, ...] = ()


@dataclass(frozen=True)
class IngestConfig:
    max_row_bytes: int
    max_payload_bytes: int
    max_json_depth: int
    media_root: Optional[str]
    media_roots: list[str]

    def __post_init__(self) -> None:
        _check(1 <= self.max_json_depth <= 200, "ingest.max_json_depth", "in [1, 200]", self.max_json_depth)
        for i, root in enumerate(self.media_roots):
            _check(bool(root.strip()), f"ingest.media_roots[{i}]", "a non-empty path or URI prefix", root)


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


def _check(ok: bool, key: str, rule: str, value: Any) -> None:
    if not ok:
        raise ConfigError(f"{key}: must be {rule}, got {value!r}")


@dataclass(frozen=True)
class DecodeConfig:
    backend: Literal["auto", "pyav", "decord"]
    isolation: Literal["subprocess", "in_process"]
    workers: int
    threads: int
    timeout_s: float
    frame_access: Literal["exact", "reference", "keyframe"]
    max_image_pixels: int
    max_video_pixels: int
    max_duration_s: float

    def __post_init__(self) -> None:
        k = "media.decode."
        _check(self.workers >= 1, k + "workers", ">= 1", self.workers)
        _check(self.threads >= 0, k + "threads", ">= 0", self.threads)
        _check(self.timeout_s > 0, k + "timeout_s", "> 0", self.timeout_s)
        for name in ("max_image_pixels", "max_video_pixels", "max_duration_s"):
            _check(getattr(self, name) > 0, k + name, "> 0", getattr(self, name))


@dataclass(frozen=True)
class SlowFastConfig:
    frame_similarity: float
    patch_similarity: float
    fast_token_ratio: float
    fast_min_tokens: int
    similarity_min_tokens: int
    similarity_max_tokens: int
    budget_search: Literal["fit", "first_over"]

    def __post_init__(self) -> None:
        k = "media.sampling.slow_fast."
        for name in ("frame_similarity", "patch_similarity"):
            _check(0.0 <= getattr(self, name) <= 1.0, k + name, "in [0, 1]", getattr(self, name))
        _check(0.0 < self.fast_token_ratio <= 1.0, k + "fast_token_ratio", "in (0, 1]", self.fast_token_ratio)
        _check(self.fast_min_tokens >= 1, k + "fast_min_tokens", ">= 1", self.fast_min_tokens)
        _check(1 <= self.similarity_min_tokens <= self.similarity_max_tokens, k + "similarity_min_tokens",
               "in [1, similarity_max_tokens]", self.similarity_min_tokens)


@dataclass(frozen=True)
class SamplingConfig:
    mode: Literal["keye_preview", "slow_fast", "fixed"]
    patch_size: int
    fps: float
    min_frames: int
    max_frames: int
    frame_factor: int
    frame_min_tokens: int
    frame_max_tokens: int
    video_max_tokens: int
    image_min_tokens: int
    image_max_tokens: int
    max_aspect_ratio: float
    fixed_frames: int
    fixed_frame_counts: list[int]
    slow_fast: SlowFastConfig

    def __post_init__(self) -> None:
        k = "media.sampling."
        _check(self.patch_size >= 1, k + "patch_size", ">= 1", self.patch_size)
        _check(self.fps > 0, k + "fps", "> 0", self.fps)
        _check(self.frame_factor >= 1, k + "frame_factor", ">= 1", self.frame_factor)
        _check(1 <= self.min_frames <= self.max_frames, k + "min_frames", "in [1, max_frames]", self.min_frames)
        _check(1 <= self.frame_min_tokens <= self.frame_max_tokens, k + "frame_min_tokens",
               "in [1, frame_max_tokens]", self.frame_min_tokens)
        _check(1 <= self.image_min_tokens <= self.image_max_tokens, k + "image_min_tokens",
               "in [1, image_max_tokens]", self.image_min_tokens)
        # the budget must hold at least frame_factor frames of the smallest size
        _check(self.video_max_tokens >= self.frame_factor * self.frame_min_tokens, k + "video_max_tokens",
               ">= frame_factor * frame_min_tokens", self.video_max_tokens)
        _check(self.max_aspect_ratio >= 1, k + "max_aspect_ratio", ">= 1", self.max_aspect_ratio)
        for key, n in [("fixed_frames", self.fixed_frames)] + [
                (f"fixed_frame_counts[{i}]", c) for i, c in enumerate(self.fixed_frame_counts)]:
            _check(n >= 1 and n * self.frame_min_tokens <= self.video_max_tokens, k + key,
                   ">= 1 and fit the video budget (n * frame_min_tokens <= video_max_tokens)", n)


@dataclass(frozen=True)
class MediaOutputConfig:
    keep: Literal["frames", "original", "both"]
    jpeg_quality: int

    def __post_init__(self) -> None:
        _check(1 <= self.jpeg_quality <= 100, "media.output.jpeg_quality", "in [1, 100]", self.jpeg_quality)


# The thresholds of media.quality a rule may set for some sources / tasks (the rest measure)
QUALITY_THRESHOLDS = ("min_side_px", "min_duration_s", "min_brightness", "max_brightness", "min_sharpness",
                      "min_motion", "min_motion_peak", "max_scene_changes_per_min")


@dataclass(frozen=True)
class QualityRule:
    """Thresholds for the rows of one source and/or task. The first rule that matches a row
    wins; source / task null match every row; `set` replaces the named thresholds only."""

    source: Optional[str]
    task: Optional[str]
    set: dict[str, float]

    def __post_init__(self) -> None:
        k = "media.quality.rules"
        if self.task is not None:
            _check_tasks(f"{k}.task", [self.task])
        for name in self.set:
            _check(name in QUALITY_THRESHOLDS, f"{k}.set.{name}", f"one of {list(QUALITY_THRESHOLDS)}", name)

    def matches(self, source: str, task: str) -> bool:
        return self.source in (None, source) and self.task in (None, task)


@dataclass(frozen=True)
class MediaQualityConfig:
    analysis_short_side: int
    min_side_px: int
    min_duration_s: float
    min_brightness: float
    max_brightness: float
    min_sharpness: float
    sharpness_tile_px: int
    sharpness_top_fraction: float
    min_motion: float
    motion_tile_px: int
    min_motion_peak: float
    scene_cut_distance: float
    max_scene_changes_per_min: float
    rules: list[QualityRule]

    def __post_init__(self) -> None:
        k = "media.quality."
        _check(self.analysis_short_side >= 8, k + "analysis_short_side", ">= 8", self.analysis_short_side)
        _check(0.0 <= self.min_brightness <= self.max_brightness <= 1.0, k + "min_brightness",
               "in [0, max_brightness] with max_brightness <= 1", self.min_brightness)
        _check(0.0 < self.scene_cut_distance <= 1.0, k + "scene_cut_distance", "in (0, 1]",
               self.scene_cut_distance)
        _check(self.sharpness_tile_px >= 8, k + "sharpness_tile_px", ">= 8", self.sharpness_tile_px)
        _check(self.motion_tile_px >= 4, k + "motion_tile_px", ">= 4", self.motion_tile_px)
        _check(0.0 < self.sharpness_top_fraction <= 1.0, k + "sharpness_top_fraction", "in (0, 1]",
               self.sharpness_top_fraction)
        for name in ("min_side_px", "min_duration_s", "min_sharpness", "min_motion", "min_motion_peak",
                     "max_scene_changes_per_min"):
            _check(getattr(self, name) >= 0, k + name, ">= 0", getattr(self, name))
        for rule in self.rules:
            self.apply(rule)          # each rule's thresholds pass the checks above

    def apply(self, rule: QualityRule) -> "MediaQualityConfig":
        """These thresholds with the rule's replaced (int thresholds stay ints)."""
        changed = {name: type(getattr(self, name))(value) for name, value in rule.set.items()}
        return dataclasses.replace(self, rules=[], **changed)

    def for_row(self, source: str, task: str) -> "MediaQualityConfig":
        """The thresholds for rows of this source and task: the first matching rule's, else these."""
        for rule in self.rules:
            if rule.matches(source, task):
                return self.apply(rule)
        return self


@dataclass(frozen=True)
class ResourcesConfig:
    """What a worker running one stage needs (NeMo Curator's one typed Resources per stage), as Beam
    resource hints: Dataflow picks machines by them; other runners ignore them. Null: no hint."""
    accelerator: Optional[str]      # e.g. "type:nvidia-l4;count:1;install-nvidia-driver"
    min_ram: Optional[str]          # e.g. "16GB"
    cpu_count: Optional[int]

    def __post_init__(self) -> None:
        _check(self.cpu_count is None or self.cpu_count >= 1, "resources.cpu_count", ">= 1", self.cpu_count)

    def hints(self) -> dict[str, str]:
        """The Beam resource hints that are set (`beam.ParDo(...).with_resource_hints(**hints)`)."""
        pairs = (("accelerator", self.accelerator), ("min_ram", self.min_ram),
                 ("cpu_count", None if self.cpu_count is None else str(self.cpu_count)))
        return {k: v for k, v in pairs if v}


@dataclass(frozen=True)
class MediaConfig:
    max_bytes: int
    decode: DecodeConfig
    sampling: SamplingConfig
    output: MediaOutputConfig
    quality: MediaQualityConfig
    resources: ResourcesConfig


@dataclass(frozen=True)
class ExactDedupeConfig:
    enabled: bool


@dataclass(frozen=True)
class NearDedupeConfig:
    enabled: bool
    scope: Literal["same_media", "text"]
    tasks: list[str]
    shingle: Literal["word", "char"]
    ngram: int
    lowercase: bool
    min_words: int
    num_perm: int
    seed: int
    threshold: float
    false_positive_weight: float
    false_negative_weight: float
    verify: bool
    verify_bits: Literal[8, 16, 32]
    max_bucket_size: int
    cc_max_rounds: int
    quality_score: str
    batch_size: int

    def __post_init__(self) -> None:
        _check_range("dedupe.near.threshold", self.threshold, 0.0, 1.0, low_open=True)
        _check_positive("dedupe.near", ngram=self.ngram, num_perm=self.num_perm,
                        cc_max_rounds=self.cc_max_rounds, batch_size=self.batch_size)
        if self.max_bucket_size < 2:
            raise ConfigError("dedupe.near.max_bucket_size: must be at least 2")
        _check_tasks("dedupe.near.tasks", self.tasks)
        _check_score("dedupe.near.quality_score", self.quality_score)


@dataclass(frozen=True)
class SemanticDedupeConfig:
    enabled: bool
    rows: Literal["captions", "all"]
    embedding: Literal["perceptual", "clip_image"]
    threshold: float
    sample_size: int
    target_cluster_size: int
    max_cluster_size: int
    kmeans_iters: int
    seed: int
    spill_margin: float
    max_spill: int
    cc_max_rounds: int
    quality_score: str
    batch_size: int

    def __post_init__(self) -> None:
        _check_range("dedupe.semantic.threshold", self.threshold, -1.0, 1.0)
        _check_positive("dedupe.semantic", sample_size=self.sample_size,
                        target_cluster_size=self.target_cluster_size, max_cluster_size=self.max_cluster_size,
                        kmeans_iters=self.kmeans_iters, cc_max_rounds=self.cc_max_rounds,
                        batch_size=self.batch_size)
        _check_range("dedupe.semantic.spill_margin", self.spill_margin, 0.0, 2.0)
        if self.max_spill < 0:
            raise ConfigError("dedupe.semantic.max_spill: must be >= 0")
        _check_score("dedupe.semantic.quality_score", self.quality_score)


@dataclass(frozen=True)
class DedupeConfig:
    exact: ExactDedupeConfig
    near: NearDedupeConfig
    semantic: SemanticDedupeConfig


@dataclass(frozen=True)
class BenchmarkConfig:
    name: str                       # recorded in rejected rows' detail
    path: str                       # file, folder or glob; format by extension (as inputs)


@dataclass(frozen=True)
class PhashDecontamConfig:
    enabled: bool
    threshold: float
    num_perm: int
    seed: int
    false_positive_weight: float
    false_negative_weight: float
    skip_tasks: list[str]

    def __post_init__(self) -> None:
        _check_range("decontaminate.phash.threshold", self.threshold, 0.0, 1.0, low_open=True)
        _check_positive("decontaminate.phash", num_perm=self.num_perm)
        _check_tasks("decontaminate.phash.skip_tasks", self.skip_tasks)


@dataclass(frozen=True)
class ClipDecontamConfig:
    enabled: bool
    image_threshold: float
    text_threshold: float

    def __post_init__(self) -> None:
        _check_range("decontaminate.clip.image_threshold", self.image_threshold, -1.0, 1.0)
        _check_range("decontaminate.clip.text_threshold", self.text_threshold, -1.0, 1.0)


@dataclass(frozen=True)
class NgramDecontamConfig:
    enabled: bool
    n: int
    min_matches: int
    max_items_per_ngram: int
    lowercase: bool

    def __post_init__(self) -> None:
        _check_positive("decontaminate.ngram", n=self.n, min_matches=self.min_matches)


@dataclass(frozen=True)
class DecontaminateConfig:
    enabled: bool
    benchmarks: list[BenchmarkConfig]
    phash: PhashDecontamConfig
    clip: ClipDecontamConfig
    ngram: NgramDecontamConfig

    def __post_init__(self) -> None:
        names = [b.name for b in self.benchmarks]
        if len(set(names)) != len(names):
            raise ConfigError(f"decontaminate.benchmarks: names must be unique, got {names}")


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
    resources: ResourcesConfig      # of the inference step
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
class TrainerBackendConfig:
    checkpoint: Optional[str]       # a checkpoint folder of the bundled trainer (trainer/checkpoint.py)
    device: str                     # auto | cpu | cuda | cuda:N


@dataclass(frozen=True)
class RecaptionConfig:
    enabled: bool
    backend: Literal["openai", "transformers", "trainer"]
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
    trainer: TrainerBackendConfig

    def __post_init__(self) -> None:
        if not self.video_fps or any(f <= 0 for f in self.video_fps):
            raise ConfigError("recaption.video_fps: give one or more positive rates")
        if self.max_frames < 1 or self.batch_rows < 1 or self.max_new_tokens < 1:
            raise ConfigError("recaption: max_frames, batch_rows and max_new_tokens must be >= 1")
        if self.openai.concurrency < 1 or self.openai.max_retries < 0 or self.openai.timeout_s <= 0:
            raise ConfigError("recaption.openai: concurrency >= 1, max_retries >= 0, timeout_s > 0")


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
        _check(self.max_new_tokens >= 1, k + "max_new_tokens", ">= 1", self.max_new_tokens)
        _check(self.temperature >= 0, k + "temperature", ">= 0", self.temperature)
        _check(self.openai.concurrency >= 1 and self.openai.max_retries >= 0 and self.openai.timeout_s > 0,
               k + "openai", "concurrency >= 1, max_retries >= 0, timeout_s > 0", self.openai)


@dataclass(frozen=True)
class VerifyConfig:
    numeric_rel_tol: float          # |a - b| <= max(abs_tol, rel_tol * |b|) counts as equal
    numeric_abs_tol: float
    judge: bool                     # free-form answers no rule matches go to the generator as judge
    judge_prompt: str               # mixture/prompts/<id>.txt

    def __post_init__(self) -> None:
        _check(self.numeric_rel_tol >= 0 and self.numeric_abs_tol >= 0, "mixture.builders.verify.numeric_*_tol",
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
        _check(self.n >= 1, "mixture.builders.paths.n", ">= 1", self.n)
        _check(self.too_easy_pass_rate > 0, "mixture.builders.paths.too_easy_pass_rate", "> 0",
               self.too_easy_pass_rate)
        _check(0 < self.step_similarity <= 1, "mixture.builders.paths.step_similarity", "in (0, 1]",
               self.step_similarity)


@dataclass(frozen=True)
class RepetitionConfig:
    ngram: int                      # repeated word n-gram rate uses n-grams of this length
    max_dup_ngram_ratio: float
    max_compression_ratio: float    # raw bytes / zlib bytes
    min_words: int                  # shorter texts are not judged on the two ratios (tags always are)

    def __post_init__(self) -> None:
        k = "mixture.builders.repetition."
        _check(self.ngram >= 1, k + "ngram", ">= 1", self.ngram)
        _check(0 <= self.max_dup_ngram_ratio <= 1, k + "max_dup_ngram_ratio", "in [0, 1]", self.max_dup_ngram_ratio)
        _check(self.max_compression_ratio >= 1, k + "max_compression_ratio", ">= 1", self.max_compression_ratio)


@dataclass(frozen=True)
class ModeBuilderConfig:
    enabled: bool
    tasks: list[str]                # rows of these tasks are material for the mode

    def __post_init__(self) -> None:
        _check_tasks("mixture.builders.*.tasks", self.tasks)


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
        _check(0 < self.hard_pass_rate <= 1, "mixture.builders.auto_think.hard_pass_rate", "in (0, 1]",
               self.hard_pass_rate)


@dataclass(frozen=True)
class ThinkWithImageBuilderConfig(ModeBuilderConfig):
    code_prompt: str                # the generator proposes reasoning + image code
    continue_prompt: str            # ... and, shown the produced image, reasons on to the answer
    image_name: str                 # the input image as the snippet sees it: /input/<image_name>

    def __post_init__(self) -> None:
        super().__post_init__()
        import re

        _check(bool(re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9._-]*\.(png|jpg|jpeg)", self.image_name)),
               "mixture.builders.think_with_image.image_name", "a plain file name ending in .png/.jpg", self.image_name)


@dataclass(frozen=True)
class VideoBuilderConfig(ModeBuilderConfig):
    generate: bool                  # video_think rows without a trace get paths from the generator
    prompt: str
    max_frames: int                 # frames of a video sent to the generator (evenly thinned)

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(self.max_frames >= 1, "mixture.builders.video.max_frames", ">= 1", self.max_frames)


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
        _check_score("mixture.mixing.upsample.score", self.score)
        _check(self.repeats >= 1, "mixture.mixing.upsample.repeats", ">= 1", self.repeats)


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
        _check_positive("mixture.mixing", rank_bins=self.mixing.rank_bins)


@dataclass(frozen=True)
class TokensConfig:
    tokenizer: str
    chat_layout: Literal["keye_preview", "keye_1_5"]
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
    partition_files: int

    def __post_init__(self) -> None:
        _check(self.partition_files >= 0, "output.partition_files", ">= 0", self.partition_files)


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
            _check(getattr(self, name) > 0, k + name, "> 0", getattr(self, name))
        _check(self.open_files >= 16, k + "open_files", ">= 16", self.open_files)
        _check(self.max_concurrent >= 0, k + "max_concurrent", ">= 0", self.max_concurrent)
        _check(all(m and "." not in m for m in self.allowed_imports), k + "allowed_imports",
               "top-level module names", self.allowed_imports)


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


# --- value checks (run on load, from the dataclasses' __post_init__) -----------------------
def _check_range(key: str, value: float, lo: float, hi: float, low_open: bool = False) -> None:
    if value < lo or value > hi or (low_open and value == lo):
        raise ConfigError(f"{key}: must be in {'(' if low_open else '['}{lo}, {hi}], got {value}")


def _check_positive(section: str, **values: int) -> None:
    for key, value in values.items():
        if value < 1:
            raise ConfigError(f"{section}.{key}: must be at least 1, got {value}")


def _check_tasks(key: str, tasks: list[str]) -> None:
    from schemas.sample import TASKS

    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise ConfigError(f"{key}: unknown tasks {unknown}; known: {list(TASKS)}")


def _check_score(key: str, name: str) -> None:
    from schemas.scores import SCORE_NAMES

    if name not in SCORE_NAMES:
        close = difflib.get_close_matches(name, SCORE_NAMES, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"{key}: {name!r} is not a registered score{hint}")


# --- loading ---------------------------------------------------------------------------
def load_config(path: Optional[str] = None, overrides: typing.Sequence[str] = ()) -> Config:
    """Load a recipe (default: configs/base.yaml), apply `key.path=value` overrides, validate."""
    return load_recipe(Config, path or os.path.join(CONFIG_DIR, "base.yaml"), overrides)


T = typing.TypeVar("T")


def load_recipe(cls: type[T], path: str, overrides: typing.Sequence[str] = ()) -> T:
    """The strict loader for any recipe dataclass (the pipeline's `Config`, the trainer's
    `TrainConfig`): YAML with `extends`, `key.path=value` overrides, then every key checked
    against `cls` (unknown, missing and mistyped keys fail, naming the key)."""
    raw = _load_yaml_with_extends(path, seen=())
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        dotted, value = item.split("=", 1)
        _set_dotted(raw, dotted.strip(), yaml.safe_load(value) if value.strip() else None)
    return _build(cls, raw, "")


def from_dict(cls: type[T], data: dict, where: str = "") -> T:
    """A recipe dataclass (or one section, e.g. `MediaConfig`) from a plain dict, checked as on load:
    how the trainer rebuilds the recipe a pipeline output recorded in its manifest."""
    return _build(cls, data, where)


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
