"""Stable stage names and rejection reason codes.

Every rejected row carries one `Stage` and one `Reason`. The codes are part of the
output contract (dashboards and retuning scripts key on them), so they never change
meaning; add new ones instead. `REASON_DOCS` is the one list of what each code means.
"""
from __future__ import annotations

import enum


class Stage(str, enum.Enum):
    """Pipeline stages, in the order rows flow through them."""

    INGEST = "ingest"          # reading files into raw rows
    VALIDATE = "validate"      # structural checks and normalisation into a Sample
    TEXT = "text"              # text normalisation, stats and text filters
    MEDIA = "media"            # fetching, decoding, frame sampling, visual tokens, media quality
    EXACT_DEDUPE = "exact_dedupe"
    NEAR_DEDUPE = "near_dedupe"          # text near-duplicates (MinHash LSH)
    SCORE = "score"            # CLIP scores, per-source thresholds, routing (keep / recaption / drop)
    SEMANTIC_DEDUPE = "semantic_dedupe"  # image / video near-duplicates (embeddings, faiss; reuses CLIP vectors)
    DECONTAMINATE = "decontaminate"      # benchmark decontamination
    RECAPTION = "recaption"    # new captions from a VLM for rows routed by the score stage
    TOKENS = "tokens"          # exact token accounting and sequence-length bounds
    BLOBS = "blobs"            # with a blob store: each kept row's stored media read back and checked
    MIXTURE = "mixture"        # the cold-start mixture: mode builders, generation, the code sandbox, shares


class Reason(str, enum.Enum):
    # ingest: the bytes could not be turned into a row at all
    UNREADABLE_FILE = "unreadable_file"
    INVALID_UTF8 = "invalid_utf8"
    MALFORMED_JSON = "malformed_json"
    MALFORMED_PARQUET = "malformed_parquet"
    TRUNCATED_ARCHIVE = "truncated_archive"
    ROW_TOO_LARGE = "row_too_large"
    NOT_AN_OBJECT = "not_an_object"
    TOO_DEEPLY_NESTED = "too_deeply_nested"
    INVALID_UNICODE = "invalid_unicode"
    # validate: a row, but not one we can use
    WRONG_TYPE = "wrong_type"
    MISSING_FIELD = "missing_field"
    UNKNOWN_ROLE = "unknown_role"
    UNKNOWN_TASK = "unknown_task"
    UNKNOWN_MODE = "unknown_mode"
    FIELD_TOO_LARGE = "field_too_large"
    MEDIA_MARKER_MISMATCH = "media_marker_mismatch"
    TOO_MANY_MEDIA = "too_many_media"
    TOO_MANY_MESSAGES = "too_many_messages"
    UNSUPPORTED_URI = "unsupported_uri"
    MEDIA_OUTSIDE_ROOT = "media_outside_root"
    # text
    EMPTY_TEXT = "empty_text"
    TEXT_TOO_SHORT = "text_too_short"
    TEXT_TOO_LONG = "text_too_long"
    REPETITIVE_TEXT = "repetitive_text"
    # media
    MISSING_MEDIA = "missing_media"
    EMPTY_MEDIA = "empty_media"
    MEDIA_TOO_LARGE = "media_too_large"
    NOT_A_REGULAR_FILE = "not_a_regular_file"
    # media: decoding (robustness)
    NOT_A_VIDEO = "not_a_video"
    NOT_AN_IMAGE = "not_an_image"
    NO_VIDEO_STREAM = "no_video_stream"
    TRUNCATED_MEDIA = "truncated_media"
    UNDECODABLE = "undecodable"
    TOO_MANY_PIXELS = "too_many_pixels"
    VIDEO_TOO_LONG = "video_too_long"
    DECODE_TIMEOUT = "decode_timeout"
    DECODER_CRASHED = "decoder_crashed"
    # media: quality (stats are stored first, then judged against media.quality)
    ASPECT_RATIO = "aspect_ratio"
    TOO_SMALL = "too_small"
    TOO_SHORT = "too_short"
    TOO_DARK = "too_dark"
    TOO_BRIGHT = "too_bright"
    BLURRY = "blurry"
    STATIC = "static"
    TOO_MANY_SCENE_CHANGES = "too_many_scene_changes"
    # dedupe
    EXACT_DUPLICATE = "exact_duplicate"
    NEAR_DUPLICATE = "near_duplicate"
    SEMANTIC_DUPLICATE = "semantic_duplicate"
    # decontaminate
    CONTAMINATED = "contaminated"
    # score
    LOW_CLIP_SCORE = "low_clip_score"
    # recaption
    RECAPTION_FAILED = "recaption_failed"
    # tokens
    TOO_MANY_TOKENS = "too_many_tokens"
    # blobs: the run's blob store (pipelines/blobstore.py)
    BLOB_UNREADABLE = "blob_unreadable"
    # mixture: model-written code run in the sandbox (mixture/sandbox)
    CODE_ERROR = "code_error"
    CODE_TIMEOUT = "code_timeout"
    CODE_RESOURCE_LIMIT = "code_resource_limit"
    CODE_FORBIDDEN = "code_forbidden"
    # mixture builders (mixture/): generation, verification, path selection, formats, image operations
    GENERATION_FAILED = "generation_failed"
    NEVER_SOLVED = "never_solved"
    TOO_EASY = "too_easy"
    REPETITIVE_GENERATION = "repetitive_generation"
    BAD_FORMAT = "bad_format"
    NO_IMAGE_CODE = "no_image_code"
    NO_IMAGE_PRODUCED = "no_image_produced"
    EMPTY_IMAGE_PRODUCED = "empty_image_produced"
    IMAGE_UNCHANGED = "image_unchanged"
    IMAGE_OUT_OF_BOUNDS = "image_out_of_bounds"
    # mixture: accounting and shares (pipelines/mixture.py)
    NO_MODE = "no_mode"
    OVER_SHARE = "over_share"
    # any stage: the stage's own code raised on this row (a bug or an unforeseen input)
    STEP_ERROR = "step_error"


REASON_DOCS: dict[Reason, str] = {
    Reason.UNREADABLE_FILE: "the input file could not be opened or read",
    Reason.INVALID_UTF8: "a text row is not valid UTF-8",
    Reason.MALFORMED_JSON: "a row (or the rest of a JSON array file) is not valid JSON",
    Reason.MALFORMED_PARQUET: "a Parquet file or row group could not be decoded",
    Reason.TRUNCATED_ARCHIVE: "a tar archive ends in the middle of a member; the partial sample is rejected",
    Reason.ROW_TOO_LARGE: "a raw row is larger than ingest.max_row_bytes",
    Reason.NOT_AN_OBJECT: "a row is valid JSON but not an object",
    Reason.TOO_DEEPLY_NESTED: "a row nests arrays / objects deeper than ingest.max_json_depth (anywhere, read or not)",
    Reason.INVALID_UNICODE: "a row's strings hold a lone surrogate (JSON \"\\ud83d\"), which UTF-8 cannot hold",
    Reason.WRONG_TYPE: "a field has the wrong type (for example messages is a number)",
    Reason.MISSING_FIELD: "the row has no usable content: no messages, caption, question or text",
    Reason.UNKNOWN_ROLE: "a message role is not system, user or assistant",
    Reason.UNKNOWN_TASK: "the row names a task outside schemas.sample.TASKS",
    Reason.UNKNOWN_MODE: "the row names a mode outside schemas.sample.MODES",
    Reason.FIELD_TOO_LARGE: "a single text field is longer than validate.max_field_chars",
    Reason.MEDIA_MARKER_MISMATCH: "the number of <image>/<video> markers differs from the media given",
    Reason.TOO_MANY_MEDIA: "the row references more media items than validate.max_media_per_row",
    Reason.TOO_MANY_MESSAGES: "the conversation has more turns than validate.max_messages",
    Reason.UNSUPPORTED_URI: "a media reference uses a scheme Beam's FileSystems cannot read",
    Reason.MEDIA_OUTSIDE_ROOT: "a media reference points outside ingest.media_roots (after .., file://, symlinks) "
                               "or into /proc, /sys or /dev",
    Reason.EMPTY_TEXT: "after normalisation a turn that must hold text is empty",
    Reason.TEXT_TOO_SHORT: "total text is shorter than text.min_chars",
    Reason.TEXT_TOO_LONG: "total text is longer than text.max_chars",
    Reason.REPETITIVE_TEXT: "duplicate n-gram or line ratio above the text thresholds",
    Reason.MISSING_MEDIA: "a referenced media file does not exist",
    Reason.EMPTY_MEDIA: "a referenced media file has zero bytes",
    Reason.MEDIA_TOO_LARGE: "a media file is larger than media.max_bytes",
    Reason.NOT_A_REGULAR_FILE: "a local media path is a folder, FIFO, socket or device at read time; never opened",
    Reason.NOT_A_VIDEO: "a video item's bytes are no media container FFmpeg knows, or a single still image",
    Reason.NOT_AN_IMAGE: "an image item's bytes are no image format Pillow knows",
    Reason.NO_VIDEO_STREAM: "the container holds no video stream (audio only, subtitles, cover art only)",
    Reason.TRUNCATED_MEDIA: "the file ends before its container (or image data) says it does: a cut download",
    Reason.UNDECODABLE: "container and stream are recognised but the frames cannot be decoded",
    Reason.TOO_MANY_PIXELS: "a frame or image has more pixels than media.decode.max_video_pixels / max_image_pixels",
    Reason.VIDEO_TOO_LONG: "the video is longer than media.decode.max_duration_s",
    Reason.DECODE_TIMEOUT: "decoding one item took longer than media.decode.timeout_s; the decoder was killed",
    Reason.DECODER_CRASHED: "the decoder process died (segfault, abort, out of memory) on this item",
    Reason.ASPECT_RATIO: "long side / short side above media.sampling.max_aspect_ratio (Keye: 200)",
    Reason.TOO_SMALL: "the short side is below media.quality.min_side_px",
    Reason.TOO_SHORT: "a video is shorter than media.quality.min_duration_s",
    Reason.TOO_DARK: "mean brightness of the sampled frames is below media.quality.min_brightness",
    Reason.TOO_BRIGHT: "mean brightness of the sampled frames is above media.quality.max_brightness",
    Reason.BLURRY: "median Laplacian variance of the sampled frames is below media.quality.min_sharpness",
    Reason.STATIC: "mean difference between consecutive sampled frames is below media.quality.min_motion",
    Reason.TOO_MANY_SCENE_CHANGES: "scene changes per minute above media.quality.max_scene_changes_per_min",
    Reason.EXACT_DUPLICATE: "same normalised text and media bytes as the row in dup_of",
    Reason.NEAR_DUPLICATE: "text Jaccard (MinHash estimate) >= dedupe.near.threshold, transitively, "
                           "with the row in dup_of",
    Reason.SEMANTIC_DUPLICATE: "media embedding cosine >= dedupe.semantic.threshold, transitively, "
                               "with the row in dup_of",
    Reason.CONTAMINATED: "copies a benchmark item: detail is JSON naming the benchmark, item id and rule",
    Reason.LOW_CLIP_SCORE: "clip_score below the threshold of a score.rules entry whose action is drop",
    Reason.RECAPTION_FAILED: "every recaption request failed or came back empty after its retries",
    Reason.TOO_MANY_TOKENS: "text plus visual tokens exceed tokens.max_total_tokens",
    Reason.BLOB_UNREADABLE: "a media member the media stage wrote to the run's blob store is missing, cut or "
                             "changed (sha256) when read back; the stage that read it rejects the row",
    Reason.CODE_ERROR: "model-written code raised, crashed or exited non-zero in the sandbox; detail holds the error",
    Reason.CODE_TIMEOUT: "model-written code ran past mixture.sandbox.cpu_s or wall_s and was killed",
    Reason.CODE_RESOURCE_LIMIT: "model-written code hit a sandbox limit: memory, file size, open files, "
                                "output bytes or files written (detail names it)",
    Reason.CODE_FORBIDDEN: "model-written code imported a module outside mixture.sandbox.allowed_imports, was "
                           "denied a file (read-only or not permitted), or made a forbidden system call (process, "
                           "exec, socket) and was killed",
    Reason.GENERATION_FAILED: "every generator request for the row failed after its retries (or the worker's "
                              "request budget ran out), or the media to send could not be read",
    Reason.NEVER_SOLVED: "no generated path reached the reference answer (mixture.builders.verify rules)",
    Reason.TOO_EASY: "the generator solved the item in at least too_easy_pass_rate of its paths",
    Reason.REPETITIVE_GENERATION: "generated text above a mixture.builders.repetition threshold (repeated "
                                  "n-grams, compression ratio) or with an unterminated tag",
    Reason.BAD_FORMAT: "the built row fails the mode's format (mixture/formats.py: suffix, tags, boxed answer)",
    Reason.NO_IMAGE_CODE: "think-with-image: the generator proposed no Python code block for the image",
    Reason.NO_IMAGE_PRODUCED: "model-written code ran but left no image file in its output folder",
    Reason.EMPTY_IMAGE_PRODUCED: "think-with-image: the produced image is empty, undecodable or one flat colour",
    Reason.IMAGE_UNCHANGED: "think-with-image: the produced image has the same pixels as the input image",
    Reason.IMAGE_OUT_OF_BOUNDS: "think-with-image: the produced image's native size is outside the image token "
                                "bounds (media.sampling.image_min_tokens..image_max_tokens) or aspect ratio",
    Reason.NO_MODE: "no mixture mode builder takes this curated row (a caption pair: not cold-start material)",
    Reason.OVER_SHARE: "left out so its category meets its mixture.shares target (lowest seeded hash ranks kept)",
    Reason.STEP_ERROR: "the stage raised on this row; detail holds the exception and where it was raised",
}

# Reasons only the mixture stage gives: tests/test_mixture_reason_coverage.py plants one row for each through
# build_mixture (tests/test_reason_coverage.py plants the rest through curate).
MIXTURE_REASONS: frozenset[Reason] = frozenset({
    Reason.CODE_ERROR, Reason.CODE_TIMEOUT, Reason.CODE_RESOURCE_LIMIT, Reason.CODE_FORBIDDEN,
    Reason.GENERATION_FAILED, Reason.NEVER_SOLVED, Reason.TOO_EASY, Reason.REPETITIVE_GENERATION,
    Reason.BAD_FORMAT, Reason.NO_IMAGE_CODE, Reason.NO_IMAGE_PRODUCED, Reason.EMPTY_IMAGE_PRODUCED,
    Reason.IMAGE_UNCHANGED, Reason.IMAGE_OUT_OF_BOUNDS, Reason.NO_MODE, Reason.OVER_SHARE,
})

assert set(REASON_DOCS) == set(Reason), "every Reason needs a line in REASON_DOCS"
