"""The one registry of per-row scores.

Every stage stores what it measured in `Sample.scores`, whether the row passes or not
(Data-Juicer's "compute stats, then filter"), so thresholds can be retuned later from
the Parquet output without recomputing. Scores are a fixed Arrow struct of nullable
float64 fields, one per name below: readable by pyarrow, DuckDB and `datasets` (which
cannot read Arrow maps), and queryable as `scores.text_chars`.

To add a score: add its name and meaning here. Writing an unregistered score is an error.
"""
from __future__ import annotations

SCORE_DOCS: dict[str, str] = {
    # text stage (filters/text.py)
    "text_chars": "characters of all message text after normalisation",
    "text_words": "whitespace-separated words of all message text",
    "text_dup_ngram_ratio": "share of word n-grams (text.repetition_ngram) that repeat an earlier one",
    "text_dup_line_ratio": "share of non-empty lines that repeat an earlier line",
    "text_changed_by_normalisation": "1.0 if normalisation changed any text, else 0.0",
}

SCORE_NAMES: tuple[str, ...] = tuple(SCORE_DOCS)
