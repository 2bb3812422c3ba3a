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
    # CLIP scoring (captioners/scoring.py): cosines of L2-normalised open_clip embeddings, of the
    # row's text as the score stage saw it (a recaption adds clip_recaption, never rewrites these)
    "clip_image_text": "cosine of each image and the row's text (the caption, else question and answer), "
                       "mean over the row's images",
    "clip_video_mean": "mean over the sampled frames of every video of the frame-text cosine",
    "clip_video_max": "max over the sampled frames of every video of the frame-text cosine",
    "clip_grounding_min": "min over the row's boxes and polygons of the cosine of the cropped region "
                          "and its referring text",
    "clip_grounding_mean": "mean over the row's boxes and polygons of the crop-text cosine",
    "clip_interleaved_min": "min over the row's images of the cosine of the image and its neighbouring text",
    "clip_interleaved_mean": "mean over the row's images of the image-neighbouring text cosine",
    "clip_score": "the score score.rules thresholds: clip_image_text or clip_video_mean for captions, "
                  "clip_grounding_min, clip_interleaved_min; null for rows no rule covers (QA, text)",
    "clip_threshold": "the threshold clip_score was compared with: absolute, or the percentile of the "
                      "row's (source, task) distribution resolved to a cosine",
    "clip_recaption": "clip_score of the best model-written caption (same rule as clip_score); the kept "
                      "caption is the one with the higher of the two",
}

SCORE_NAMES: tuple[str, ...] = tuple(SCORE_DOCS)
