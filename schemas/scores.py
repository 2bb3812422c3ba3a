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
    # media stage (filters/media.py): row aggregates of the per-item stats below; null when
    # no item of the row has the stat (a text row, or no video for the video-only ones)
    "media_min_duration_s": "duration in seconds of the row's shortest video",
    "media_min_side_px": "short side in pixels of the row's smallest image or video (as displayed)",
    "media_max_aspect_ratio": "largest long side / short side of the row's images and videos",
    "media_min_brightness": "lowest item brightness (mean luma in [0, 1] of its frames)",
    "media_max_brightness": "highest item brightness (mean luma in [0, 1] of its frames)",
    "media_min_sharpness": "lowest item sharpness (Laplacian variance of the sharpest tiles, median over frames)",
    "media_min_motion": "lowest video motion (mean abs difference of consecutive sampled frames, [0, 1])",
    "media_scene_changes": "scene changes summed over the row's videos",
    "media_max_timestamp_error_s": "largest distance between a sampled frame and the time the sampler asked for",
    # near dedupe (filters/minhash.py, pipelines/near_dedupe.py)
    "near_dup_cluster_size": "rows in this row's text near-duplicate cluster (1: none); null: not compared",
    # semantic dedupe (filters/semantic.py, pipelines/semantic_dedupe.py)
    "media_pixels": "source pixels (width x height) summed over the row's images and videos",
    "media_quality": "rank of a media duplicate: media_pixels + source bytes x 1e-10 (bytes break ties of equal size)",
    "semantic_dup_cluster_size": "rows in this row's media near-duplicate cluster (1: none); null: not compared",
    # decontamination (filters/decontam.py, pipelines/decontaminate.py)
    "benchmark_ngram_overlap": "share of the row's word n-grams (decontaminate.ngram.n) found in benchmark texts",
    "benchmark_phash_jaccard": ("highest set-bit Jaccard of the row's image pHashes to a benchmark image "
                                "(LSH candidates; 0: none)"),
    "benchmark_clip_image_cos": "highest CLIP image cosine to a benchmark image (needs CLIP embeddings)",
    # CLIP scoring (captioners/scoring.py): cosines of L2-normalised open_clip embeddings, of the
    # row's text: when a recaption wins, clip_score and the rule's scores below are recomputed for the new
    # text (the replaced caption's score stays in its alternatives[k].clip_score)
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
    "clip_recaption": "clip_score of the best model-written caption (same rule as clip_score); it replaces "
                      "the caption only when strictly higher, and then equals clip_score",
    # mixture builders (mixture/): generation, verification, path selection, repetition
    "gen_paths": "reasoning paths sampled from the generator for the row (mixture.builders.paths.n)",
    "gen_pass_rate": "share of the sampled paths whose answer the verifier accepted",
    "gen_path_score": "the kept path's representativeness: mean over its steps of the share of correct "
                      "paths holding an equivalent step (mixture/paths.py)",
    "gen_dup_ngram_ratio": "share of word n-grams (mixture.builders.repetition.ngram) of the generated "
                           "text that repeat an earlier one",
    "gen_compression_ratio": "bytes of the generated text / bytes of it zlib-compressed (high: repetitive)",
    "gen_unclosed_tags": "tags (<think>, <answer>, <analysis>, <sandbox_output>, \\boxed{) opened and not closed",
}

SCORE_NAMES: tuple[str, ...] = tuple(SCORE_DOCS)

# Per media item stats (`MediaItem.stats`, an Arrow struct of nullable float64 like scores).
# Measured on "analysis frames": each sampled frame (or the image, at the size the model
# sees) scaled so that its short side is media.quality.analysis_short_side pixels, or the
# source's short side when smaller (never upscaled), so values compare across resolutions. Duration and size are
# MediaItem fields, not repeated here.
MEDIA_STAT_DOCS: dict[str, str] = {
    "aspect_ratio": "long side / short side, as displayed (rotation and pixel aspect applied)",
    "brightness": "mean luma of the analysis frames, in [0, 1]",
    "sharpness": "median over frames of the Laplacian variance of the sharpest tiles of the analysis frame's luma",
    "motion": "mean abs luma difference of consecutive sampled frames, in [0, 1] (videos of 2+ frames)",
    "motion_peak": "mean over consecutive sampled frames of the largest media.quality.motion_tile_px tile's mean "
                   "abs luma difference, in [0, 1]: local motion (a pointer over a slide) in a still picture",
    "scene_changes": "consecutive sampled frames whose HSV histograms differ by more than "
                     "media.quality.scene_cut_distance (total variation)",
    "timestamp_error_s": "largest |frame time - asked time| over the sampled frames",
    "decode_errors": "packets the decoder reported as broken (concealed frames may still be kept)",
}

MEDIA_STAT_NAMES: tuple[str, ...] = tuple(MEDIA_STAT_DOCS)
