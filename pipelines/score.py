"""Score stage: CLIP scores through Beam's RunInference, per-(source, task) thresholds, routing.

    samples --Prepare (CPU: decode, crop, open_clip transform, tokenize; captioners/scoring.py)
            |     rows with nothing to score pass on with null scores (counted by why); a row
            |     that makes plan() raise is a step_error dead letter, as in every stage
            --RunInference(ClipModelHandler)--> embeddings    Beam batches rows (weighted by their
            |                                                 pictures), loads one model per worker
            |                                                 process (or per machine: large_model),
            |                                                 and reports RunInference's metrics
            --Merge--> scores + Sample.embeddings (clip_image, clip_text, clip_caption_units)
    scored --(source, task) -> clip_score --CombinePerKey(histogram)--> side input (AsDict)
    scored --Route--> KEPT (every row, clip_threshold stored) | REJECTED low_clip_score (rules with below: drop)

Rows below a `recaption` rule are kept here, unchanged: the recaption stage (after dedupe and
decontamination, so no request is spent on a row they drop) finds them from the stored scores
(captioners.routing.route). The model runs where Beam puts the step; `score.resources`
(e.g. an accelerator) is attached to it, and `device: auto` picks CUDA when the worker has it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Optional, Sequence

import apache_beam as beam
import numpy as np
from apache_beam.ml.inference.base import ModelHandler, PredictionResult, RunInference
from apache_beam.pvalue import TaggedOutput

from captioners.clip import ClipModel, ClipPreprocessor, ClipRef
from captioners.routing import histogram, match_rule, resolve_threshold, route
from captioners.scoring import Unscored, finish, plan
from filters.base import reject_sample
from pipelines.common import KEPT, REJECTED, count_kept, dead_letter, rejected_output, stage_counter
from schemas.config import Config, ScoreConfig
from schemas.reasons import Reason, Stage
from schemas.rejected import Rejected
from schemas.sample import Sample

STAGE = Stage.SCORE
UNSCORED = "unscored"
CLIP_IMAGE, CLIP_TEXT, CLIP_CAPTION_UNITS = "clip_image", "clip_text", "clip_caption_units"


# --- the model handler ----------------------------------------------------------------------------
@dataclass
class ClipExample:
    """One row's share of a batch: preprocessed pictures and token ids, and what to give back."""

    payload: Any
    pixels: np.ndarray       # (n, 3, H, W) float32
    tokens: np.ndarray       # (m, context) int64


@dataclass
class ClipEmbeddings:
    images: np.ndarray       # (n, d) unit rows
    texts: np.ndarray        # (m, d) unit rows


def example_weight(example: ClipExample) -> int:
    """A row's weight in Beam's batching: its pictures (text-only rows weigh one)."""
    return max(1, len(example.pixels))


class ClipModelHandler(ModelHandler[ClipExample, PredictionResult, ClipModel]):
    """open_clip inside RunInference: a batch of rows -> one image pass and one text pass."""

    def __init__(self, cfg: ScoreConfig) -> None:
        super().__init__(min_batch_size=cfg.min_batch_images, max_batch_size=cfg.max_batch_images,
                         element_size_fn=example_weight, large_model=cfg.large_model,
                         model_copies=cfg.model_copies)
        self.ref = ClipRef(cfg.model, cfg.pretrained)
        self.device, self.precision, self.forward_chunk = cfg.device, cfg.precision, cfg.forward_chunk
        self.hints = cfg.resources.hints()

    def load_model(self) -> ClipModel:
        return ClipModel(self.ref, self.device, self.precision, self.forward_chunk)

    def run_inference(self, batch: Sequence[ClipExample], model: ClipModel,
                      inference_args: Optional[dict[str, Any]] = None) -> Iterable[PredictionResult]:
        if not batch:        # Beam may hand over an empty batch (e.g. the last one of a bundle)
            return []
        images = model.encode_images(np.concatenate([e.pixels for e in batch]))
        texts = model.encode_texts(np.concatenate([e.tokens for e in batch]))
        out, i, t = [], 0, 0
        for e in batch:
            n, m = len(e.pixels), len(e.tokens)
            out.append(PredictionResult(e, ClipEmbeddings(images[i:i + n], texts[t:t + m]), self.ref.id))
            i, t = i + n, t + m
        return out

    def get_num_bytes(self, batch: Sequence[ClipExample]) -> int:
        return sum(e.pixels.nbytes + e.tokens.nbytes for e in batch)   # not a pickle of the payloads

    def get_metrics_namespace(self) -> str:
        return "keye_clip"

    def get_resource_hints(self) -> dict:
        return self.hints

    def __repr__(self) -> str:
        return f"ClipModelHandler({self.ref.id}, device={self.device}, precision={self.precision})"


# --- steps ----------------------------------------------------------------------------------------
class _Prepare(beam.DoFn):
    """Sample -> ClipExample((sample, plan)); rows with nothing to score go to UNSCORED."""

    def __init__(self, cfg: Config) -> None:
        self.ref = ClipRef(cfg.score.model, cfg.score.pretrained)
        self.max_frames = cfg.score.video_max_frames
        self.caption_prompt = cfg.validate.default_caption_prompt

    def setup(self) -> None:
        self.pre = ClipPreprocessor(self.ref)

    def process(self, sample: Sample):
        p = dead_letter(STAGE.value, sample, lambda: plan(sample, self.max_frames, self.caption_prompt))
        if isinstance(p, Rejected):
            yield rejected_output(p)
            return
        if isinstance(p, Unscored):
            stage_counter(STAGE.value, f"unscored/{p.why}").inc()
            yield TaggedOutput(UNSCORED, sample)
            return
        example = ClipExample((sample, p), self.pre.images(p.pictures), self.pre.texts(p.texts))
        p.pictures = []          # the pixels travel on; the decoded frames are not needed any more
        stage_counter(STAGE.value, "pictures").inc(len(example.pixels))
        yield example


def merge(result: PredictionResult) -> Sample:
    """Scores and vectors into the row."""
    sample, p = result.example.payload
    emb: ClipEmbeddings = result.inference
    r = finish(p, emb.images, emb.texts)
    sample.scores.update(r.scores)
    sample.embeddings[CLIP_IMAGE] = r.clip_image
    if r.clip_text is not None:
        sample.embeddings[CLIP_TEXT] = r.clip_text
    if r.caption_units is not None:
        sample.embeddings[CLIP_CAPTION_UNITS] = r.caption_units
    return sample


class ScoreClip(beam.PTransform):
    """Samples -> {KEPT: the same samples with CLIP scores and embeddings (rows that cannot be scored
    included), REJECTED: rows whose preparation raised (step_error, or blob_unreadable: stored media lost)}."""

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.cfg = cfg

    def expand(self, samples):
        prepared = samples | "Prepare" >> beam.ParDo(_Prepare(self.cfg)).with_outputs(UNSCORED, REJECTED, main="jobs")
        scored = (prepared["jobs"]
                  | "RunInference" >> RunInference(ClipModelHandler(self.cfg.score))
                  | "Merge" >> beam.Map(merge))
        return {KEPT: (scored, prepared[UNSCORED]) | "All" >> beam.Flatten(), REJECTED: prepared[REJECTED]}


class _HistogramFn(beam.CombineFn):
    """Fixed-bin histogram of clip_score: integer counts, merged in any order to the same result."""

    def __init__(self, bins: int) -> None:
        self.bins = bins

    def create_accumulator(self):
        return np.zeros(self.bins, np.int64), []

    def add_input(self, acc, score):
        counts, pending = acc
        pending.append(score)
        if len(pending) >= 4096:
            counts = counts + histogram(pending, self.bins)
            pending = []
        return counts, pending

    def merge_accumulators(self, accs):
        counts = np.zeros(self.bins, np.int64)
        pending = []
        for c, p in accs:
            counts = counts + c
            pending.extend(p)
        return counts, pending

    def extract_output(self, acc):
        counts, pending = acc
        return counts + histogram(pending, self.bins) if pending else counts


class _Route(beam.DoFn):
    """Threshold per row (absolute, or the percentile of its source and task), then the rule's action."""

    def __init__(self, cfg: Config) -> None:
        self.rules = list(cfg.score.rules)
        self.recaption = cfg.recaption.enabled

    def process(self, sample: Sample, hists: dict):
        for out in self._route(sample, hists):
            if isinstance(out, Sample) and not (self.recaption and route(out, self.rules) == "recaption"):
                out.embeddings.pop(CLIP_CAPTION_UNITS, None)    # only the recaption stage needs them
            yield out

    def _route(self, sample: Sample, hists: dict):
        score = sample.scores.get("clip_score")
        rule = match_rule(self.rules, sample.source, sample.task) if score is not None else None
        threshold = resolve_threshold(rule, hists.get(f"{sample.source}\x1f{sample.task}")) if rule else None
        if threshold is not None:
            sample.scores["clip_threshold"] = threshold
        if threshold is None or not score < threshold:
            count_kept(STAGE.value)
            yield sample
            return
        stage_counter(STAGE.value, f"below/{rule.below}").inc()
        if rule.below == "drop":
            where = f"percentile {rule.value:g} of {sample.source}/{sample.task}" if rule.kind == "percentile" \
                else "absolute"
            rejected = reject_sample(sample, STAGE, Reason.LOW_CLIP_SCORE,
                                     f"clip_score {score:.4f} < {threshold:.4f} ({where})")
            yield rejected_output(rejected)
            return
        count_kept(STAGE.value)
        yield sample


class Score(beam.PTransform):
    """The score stage: {KEPT: scored rows, REJECTED: rows below a drop rule}."""

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.cfg = cfg

    def expand(self, samples):
        clip = samples | "Clip" >> ScoreClip(self.cfg)
        scored = clip[KEPT]
        bins = self.cfg.score.histogram_bins
        hists = (scored
                 | "WithScore" >> beam.FlatMap(
                     lambda s: [(f"{s.source}\x1f{s.task}", s.scores["clip_score"])]
                     if s.scores.get("clip_score") is not None else [])
                 | "Histogram" >> beam.CombinePerKey(_HistogramFn(bins)))
        out = scored | "Route" >> beam.ParDo(_Route(self.cfg), beam.pvalue.AsDict(hists)).with_outputs(
            REJECTED, main=KEPT)
        return {KEPT: out[KEPT], REJECTED: (out[REJECTED], clip[REJECTED]) | "AllRejected" >> beam.Flatten()}
