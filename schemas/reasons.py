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
    MEDIA = "media"            # fetching media bytes (decoding lands here too)
    EXACT_DEDUPE = "exact_dedupe"
    SCORE = "score"            # CLIP scores, per-source thresholds, routing (keep / recaption / drop)
    RECAPTION = "recaption"    # new captions from a VLM for rows routed by the score stage
    TOKENS = "tokens"          # exact token accounting and sequence-length bounds


class Reason(str, enum.Enum):
    # ingest: the bytes could not be turned into a row at all
    UNREADABLE_FILE = "unreadable_file"
    INVALID_UTF8 = "invalid_utf8"
    MALFORMED_JSON = "malformed_json"
    MALFORMED_PARQUET = "malformed_parquet"
    TRUNCATED_ARCHIVE = "truncated_archive"
    ROW_TOO_LARGE = "row_too_large"
    NOT_AN_OBJECT = "not_an_object"
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
    # text
    EMPTY_TEXT = "empty_text"
    TEXT_TOO_SHORT = "text_too_short"
    TEXT_TOO_LONG = "text_too_long"
    REPETITIVE_TEXT = "repetitive_text"
    # media
    MISSING_MEDIA = "missing_media"
    EMPTY_MEDIA = "empty_media"
    MEDIA_TOO_LARGE = "media_too_large"
    # dedupe
    EXACT_DUPLICATE = "exact_duplicate"
    # score
    LOW_CLIP_SCORE = "low_clip_score"
    # recaption
    RECAPTION_FAILED = "recaption_failed"
    # tokens
    TOO_MANY_TOKENS = "too_many_tokens"


REASON_DOCS: dict[Reason, str] = {
    Reason.UNREADABLE_FILE: "the input file could not be opened or read",
    Reason.INVALID_UTF8: "a text row is not valid UTF-8",
    Reason.MALFORMED_JSON: "a row (or the rest of a JSON array file) is not valid JSON",
    Reason.MALFORMED_PARQUET: "a Parquet file or row group could not be decoded",
    Reason.TRUNCATED_ARCHIVE: "a tar archive ends in the middle of a member; the partial sample is rejected",
    Reason.ROW_TOO_LARGE: "a raw row is larger than ingest.max_row_bytes",
    Reason.NOT_AN_OBJECT: "a row is valid JSON but not an object",
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
    Reason.EMPTY_TEXT: "after normalisation a turn that must hold text is empty",
    Reason.TEXT_TOO_SHORT: "total text is shorter than text.min_chars",
    Reason.TEXT_TOO_LONG: "total text is longer than text.max_chars",
    Reason.REPETITIVE_TEXT: "duplicate n-gram or line ratio above the text thresholds",
    Reason.MISSING_MEDIA: "a referenced media file does not exist",
    Reason.EMPTY_MEDIA: "a referenced media file has zero bytes",
    Reason.MEDIA_TOO_LARGE: "a media file is larger than media.max_bytes",
    Reason.EXACT_DUPLICATE: "same normalised text and media bytes as the row in dup_of",
    Reason.LOW_CLIP_SCORE: "clip_score below the threshold of a score.rules entry whose action is drop",
    Reason.RECAPTION_FAILED: "every recaption request failed or came back empty after its retries",
    Reason.TOO_MANY_TOKENS: "text plus visual tokens exceed tokens.max_total_tokens",
}

assert set(REASON_DOCS) == set(Reason), "every Reason needs a line in REASON_DOCS"
