"""Recaption stage: rows the score stage routed to recaption get new captions from a VLM.

    samples --Select--> not routed: on to the next stage, untouched
            |           routed (captioners.routing.route == "recaption", from the stored scores)
            --BatchElements(recaption.batch_rows)--> lists of routed rows
            --Generate: one backend per worker process (apache_beam.utils.shared), every request
            |  of a list in flight at once (up to the backend's concurrency)
            |     --> (row, new captions)
            |     --> REJECTED recaption_failed: every request failed after its retries
            |     --> kept as it is: the worker's request budget ran out (counted)
            --Texts--> RunInference(ClipModelHandler)   the score stage's model, text tower only:
            |                                           the row's pictures were embedded there
            --Choose--> KEPT: the caption with the higher CLIP score; the other in `alternatives`;
                              every new caption in provenance.captioners (captioners/recaption.py)

New captions are normalised like every text (filters/text.py) and must pass the text filters
on their own (length, repetition); one that does not counts as a failed generation.
"""
from __future__ import annotations

import apache_beam as beam
from apache_beam.ml.inference.base import PredictionResult, RunInference
from apache_beam.pvalue import TaggedOutput
from apache_beam.utils import shared

from captioners.backends import default_captioner_id, make_backend
from captioners.clip import ClipPreprocessor, ClipRef
from captioners.recaption import Candidate, choose, plan_requests
from captioners.routing import route
from captioners.scoring import caption_rule_scores, caption_score
from filters.base import reject_sample
from filters.text import normalize_text, text_stats, text_verdict
from pipelines.common import KEPT, REJECTED, count_kept, dead_letter, rejected_output, stage_counter
from pipelines.score import CLIP_CAPTION_UNITS, ClipExample, ClipModelHandler
from schemas.config import Config
from schemas.reasons import Reason, Stage
from schemas.rejected import Rejected
from schemas.sample import Sample

STAGE = Stage.RECAPTION
ROUTED = "routed"
UNCHANGED = "unchanged"


class _Select(beam.DoFn):
    def __init__(self, cfg: Config) -> None:
        self.rules = list(cfg.score.rules)

    def process(self, sample: Sample):
        if route(sample, self.rules) == "recaption" and CLIP_CAPTION_UNITS in sample.embeddings:
            yield TaggedOutput(ROUTED, sample)
        else:
            sample.embeddings.pop(CLIP_CAPTION_UNITS, None)
            count_kept(STAGE.value)
            yield sample


class _BackendHolder:
    """What apache_beam.utils.shared keeps per process (it needs a weak-referenceable object)."""

    def __init__(self, backend) -> None:
        self.backend = backend
        backend.setup()


class _Generate(beam.DoFn):
    """A list of routed rows -> their new captions, all requests in flight together."""

    def __init__(self, cfg: Config, handle: shared.Shared) -> None:
        self.cfg = cfg
        self.handle = handle
        self.captioner_id = default_captioner_id(cfg.recaption)
        self.tag = f"recaption-backend-{cfg.hash()}"

    def setup(self) -> None:
        cfg = self.cfg.recaption
        self.backend = self.handle.acquire(lambda: _BackendHolder(make_backend(cfg)), tag=self.tag).backend
        self.pre = ClipPreprocessor(ClipRef(self.cfg.score.model, self.cfg.score.pretrained))

    def process(self, rows: list[Sample]):
        planned, requests = [], []
        for sample in rows:
            p = dead_letter(STAGE.value, sample,
                            lambda s=sample: plan_requests(s, self.cfg.recaption, self.cfg.validate.default_caption_prompt))
            if isinstance(p, Rejected):     # a bug, or stored media that cannot be read back (blob_unreadable)
                yield rejected_output(p)
                continue
            if p is None or not p.requests:
                sample.embeddings.pop(CLIP_CAPTION_UNITS, None)
                stage_counter(STAGE.value, "not_a_caption_row").inc()
                count_kept(STAGE.value)
                yield TaggedOutput(UNCHANGED, sample)
                continue
            planned.append(p)
            requests.extend(p.requests)
        results = self.backend.caption(requests) if requests else []
        stage_counter(STAGE.value, "requests").inc(sum(r.attempts for r in results))
        i = 0
        for p in planned:
            mine = results[i:i + len(p.requests)]
            i += len(p.requests)
            texts, errors = [], []
            for req, res in zip(p.requests, mine):
                text = normalize_text(res.text, self.cfg.text) if res.ok else ""
                verdict = text_verdict(text_stats([text], self.cfg.text.repetition_ngram), self.cfg.text) \
                    if res.ok else None
                if res.ok and verdict is None:
                    texts.append((req, text))
                else:
                    errors.append((req, res, verdict))
            stage_counter(STAGE.value, "generations_failed").inc(len(errors))
            if texts:
                tokens = self.pre.texts([t for _, t in texts])
                yield ClipExample((p, texts), self.pre.images([]), tokens)
                continue
            sample = p.sample
            sample.embeddings.pop(CLIP_CAPTION_UNITS, None)
            if any(res.budget_exhausted for _, res, _ in errors):
                stage_counter(STAGE.value, "budget_exhausted").inc()
                count_kept(STAGE.value)
                yield TaggedOutput(UNCHANGED, sample)
                continue
            detail = "; ".join(
                f"{req.key}: " + (f"{verdict[0].value} ({verdict[1]})" if verdict else
                                  f"{res.error} after {res.attempts} attempts")
                for req, res, verdict in errors)
            rejected = reject_sample(sample, STAGE, Reason.RECAPTION_FAILED, detail)
            yield rejected_output(rejected)


class _Choose(beam.DoFn):
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.captioner_id = default_captioner_id(cfg.recaption)

    def process(self, result: PredictionResult):
        p, texts = result.example.payload
        sample = p.sample
        units = sample.embeddings.pop(CLIP_CAPTION_UNITS)
        emb = result.inference.texts
        candidates = [Candidate(req, text, caption_score(units, emb[k])) for k, (req, text) in enumerate(texts)]
        best = max(range(len(candidates)), key=lambda k: candidates[k].clip_score)
        if choose(sample, p.target, candidates, self.captioner_id, new_text_embedding=emb[best]):
            # clip_score mirrors clip_video_mean on rows with sampled frames (captioners/scoring.py)
            sample.scores.update(caption_rule_scores(units, emb[best], is_video="clip_video_mean" in sample.scores))
            sample.scores.update(text_stats(sample.texts(), self.cfg.text.repetition_ngram))
            stage_counter(STAGE.value, "rows_new_caption_kept").inc()
        else:
            stage_counter(STAGE.value, "rows_original_kept").inc()
        count_kept(STAGE.value)
        yield sample


class Recaption(beam.PTransform):
    """{KEPT: every row (recaptioned or not), REJECTED: recaption_failed}."""

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.cfg = cfg

    def expand(self, samples):
        cfg = self.cfg
        selected = samples | "Select" >> beam.ParDo(_Select(cfg)).with_outputs(ROUTED, main="rest")
        generated = (selected[ROUTED]
                     | "Batch" >> beam.BatchElements(min_batch_size=cfg.recaption.batch_rows,
                                                     max_batch_size=cfg.recaption.batch_rows)
                     | "Generate" >> beam.ParDo(_Generate(cfg, shared.Shared())).with_outputs(
                         REJECTED, UNCHANGED, main="scored"))
        chosen = (generated["scored"]
                  | "ScoreTexts" >> RunInference(ClipModelHandler(cfg.score))
                  | "Choose" >> beam.ParDo(_Choose(cfg)))
        kept = (selected["rest"], generated[UNCHANGED], chosen) | "Kept" >> beam.Flatten()
        return {KEPT: kept, REJECTED: generated[REJECTED]}
