"""Recipe sections of the curation stages: inputs, ingest, validation, text, media, dedupe,
decontamination, scoring, recaptioning, token accounting and output (`configs/base.yaml` holds
every key, with a comment saying what it does)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal, Optional

from schemas.config.loader import ConfigError, check, check_positive, check_range, check_score, check_tasks

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
        check(1 <= self.max_json_depth <= 200, "ingest.max_json_depth", "in [1, 200]", self.max_json_depth)
        for i, root in enumerate(self.media_roots):
            check(bool(root.strip()), f"ingest.media_roots[{i}]", "a non-empty path or URI prefix", root)


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
        check(self.workers >= 1, k + "workers", ">= 1", self.workers)
        check(self.threads >= 0, k + "threads", ">= 0", self.threads)
        check(self.timeout_s > 0, k + "timeout_s", "> 0", self.timeout_s)
        for name in ("max_image_pixels", "max_video_pixels", "max_duration_s"):
            check(getattr(self, name) > 0, k + name, "> 0", getattr(self, name))


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
            check(0.0 <= getattr(self, name) <= 1.0, k + name, "in [0, 1]", getattr(self, name))
        check(0.0 < self.fast_token_ratio <= 1.0, k + "fast_token_ratio", "in (0, 1]", self.fast_token_ratio)
        check(self.fast_min_tokens >= 1, k + "fast_min_tokens", ">= 1", self.fast_min_tokens)
        check(1 <= self.similarity_min_tokens <= self.similarity_max_tokens, k + "similarity_min_tokens",
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
        check(self.patch_size >= 1, k + "patch_size", ">= 1", self.patch_size)
        check(self.fps > 0, k + "fps", "> 0", self.fps)
        check(self.frame_factor >= 1, k + "frame_factor", ">= 1", self.frame_factor)
        check(1 <= self.min_frames <= self.max_frames, k + "min_frames", "in [1, max_frames]", self.min_frames)
        check(1 <= self.frame_min_tokens <= self.frame_max_tokens, k + "frame_min_tokens",
               "in [1, frame_max_tokens]", self.frame_min_tokens)
        check(1 <= self.image_min_tokens <= self.image_max_tokens, k + "image_min_tokens",
               "in [1, image_max_tokens]", self.image_min_tokens)
        # the budget must hold at least frame_factor frames of the smallest size
        check(self.video_max_tokens >= self.frame_factor * self.frame_min_tokens, k + "video_max_tokens",
               ">= frame_factor * frame_min_tokens", self.video_max_tokens)
        check(self.max_aspect_ratio >= 1, k + "max_aspect_ratio", ">= 1", self.max_aspect_ratio)
        for key, n in [("fixed_frames", self.fixed_frames)] + [
                (f"fixed_frame_counts[{i}]", c) for i, c in enumerate(self.fixed_frame_counts)]:
            check(n >= 1 and n * self.frame_min_tokens <= self.video_max_tokens, k + key,
                   ">= 1 and fit the video budget (n * frame_min_tokens <= video_max_tokens)", n)


@dataclass(frozen=True)
class MediaOutputConfig:
    keep: Literal["frames", "original", "both"]
    jpeg_quality: int

    def __post_init__(self) -> None:
        check(1 <= self.jpeg_quality <= 100, "media.output.jpeg_quality", "in [1, 100]", self.jpeg_quality)


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
            check_tasks(f"{k}.task", [self.task])
        for name in self.set:
            check(name in QUALITY_THRESHOLDS, f"{k}.set.{name}", f"one of {list(QUALITY_THRESHOLDS)}", name)

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
        check(self.analysis_short_side >= 8, k + "analysis_short_side", ">= 8", self.analysis_short_side)
        check(0.0 <= self.min_brightness <= self.max_brightness <= 1.0, k + "min_brightness",
               "in [0, max_brightness] with max_brightness <= 1", self.min_brightness)
        check(0.0 < self.scene_cut_distance <= 1.0, k + "scene_cut_distance", "in (0, 1]",
               self.scene_cut_distance)
        check(self.sharpness_tile_px >= 8, k + "sharpness_tile_px", ">= 8", self.sharpness_tile_px)
        check(self.motion_tile_px >= 4, k + "motion_tile_px", ">= 4", self.motion_tile_px)
        check(0.0 < self.sharpness_top_fraction <= 1.0, k + "sharpness_top_fraction", "in (0, 1]",
               self.sharpness_top_fraction)
        for name in ("min_side_px", "min_duration_s", "min_sharpness", "min_motion", "min_motion_peak",
                     "max_scene_changes_per_min"):
            check(getattr(self, name) >= 0, k + name, ">= 0", getattr(self, name))
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
        check(self.cpu_count is None or self.cpu_count >= 1, "resources.cpu_count", ">= 1", self.cpu_count)

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
        check_range("dedupe.near.threshold", self.threshold, 0.0, 1.0, low_open=True)
        check_positive("dedupe.near", ngram=self.ngram, num_perm=self.num_perm,
                        cc_max_rounds=self.cc_max_rounds, batch_size=self.batch_size)
        if self.max_bucket_size < 2:
            raise ConfigError("dedupe.near.max_bucket_size: must be at least 2")
        check_tasks("dedupe.near.tasks", self.tasks)
        check_score("dedupe.near.quality_score", self.quality_score)


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
        check_range("dedupe.semantic.threshold", self.threshold, -1.0, 1.0)
        check_positive("dedupe.semantic", sample_size=self.sample_size,
                        target_cluster_size=self.target_cluster_size, max_cluster_size=self.max_cluster_size,
                        kmeans_iters=self.kmeans_iters, cc_max_rounds=self.cc_max_rounds,
                        batch_size=self.batch_size)
        check_range("dedupe.semantic.spill_margin", self.spill_margin, 0.0, 2.0)
        if self.max_spill < 0:
            raise ConfigError("dedupe.semantic.max_spill: must be >= 0")
        check_score("dedupe.semantic.quality_score", self.quality_score)


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
        check_range("decontaminate.phash.threshold", self.threshold, 0.0, 1.0, low_open=True)
        check_positive("decontaminate.phash", num_perm=self.num_perm)
        check_tasks("decontaminate.phash.skip_tasks", self.skip_tasks)


@dataclass(frozen=True)
class ClipDecontamConfig:
    enabled: bool
    image_threshold: float
    text_threshold: float

    def __post_init__(self) -> None:
        check_range("decontaminate.clip.image_threshold", self.image_threshold, -1.0, 1.0)
        check_range("decontaminate.clip.text_threshold", self.text_threshold, -1.0, 1.0)


@dataclass(frozen=True)
class NgramDecontamConfig:
    enabled: bool
    n: int
    min_matches: int
    max_items_per_ngram: int
    lowercase: bool

    def __post_init__(self) -> None:
        check_positive("decontaminate.ngram", n=self.n, min_matches=self.min_matches)


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
    blob_store: bool                # media bytes in a blob store after the media stage, references in the rows
    blob_root: Optional[str]        # where the store lives (null: DIR/_blobs); a location, not a rule
    keep_blobs: bool                # keep the store after the run (debugging); default: deleted after the manifest

    def __post_init__(self) -> None:
        check(self.partition_files >= 0, "output.partition_files", ">= 0", self.partition_files)
