"""Benchmark decontamination: drop training rows that copy a benchmark item (filters/decontam.py).

    recipe benchmarks [{name, path}] --expand files--> FileTasks --read (ingest/readers.py)
        --validate (schemas/input.py)--> benchmark Samples --the media step (decode, sample
        frames, as for training rows)--> pHash per image / frame, n-grams, CLIP vectors
        --> BenchmarkItems --CombineGlobally--> DecontamIndex
    rows --Judge (index as a side input)--> kept / rejected `contaminated`

Benchmarks use the same layouts and readers as training inputs (JSONL, LLaVA JSON, Parquet,
WebDataset; local or any Beam filesystem); nothing is downloaded. Benchmark sets are small
(thousands to tens of thousands of items), so building their index once and broadcasting it
as a side input is the standard shape: every worker holds the index, which is bounded by the
benchmarks, never by the corpus; the corpus streams past it with no shuffle.

A rejected row's `detail` is JSON: {"benchmark", "item", "rule", "similarity", ...}; `item`
is the benchmark row's own id when it has one, else its file locator.
"""
from __future__ import annotations

import copy
import dataclasses

import apache_beam as beam
from apache_beam.pvalue import AsSingleton

from filters.base import reject_sample
from filters.media import MediaFilter
from filters.decontam import BenchmarkItem, DecontamIndex, RowFeatures, text_ngrams
from filters.phash import phash64
from filters.visual import PHASH, NoFrames, visual_features
from ingest.readers import read_file
from ingest.validate import ValidateRows
from media.fetch import MediaFetch
from media.frames import item_frames
from pipelines.common import KEPT, REJECTED, count_kept, dead_letter, rejected_output, stage_counter
from pipelines.ingest import ExpandInputs
from schemas.config import BenchmarkConfig, Config, InputConfig
from schemas.reasons import Reason, Stage
from schemas.rejected import Rejected
from schemas.sample import Sample

STAGE = Stage.DECONTAMINATE


def judged_texts(sample: Sample, cfg: Config) -> list[str]:
    """The row's texts minus the recipe's own boilerplate (the default caption prompt and the
    system prompt), which would otherwise match on both sides."""
    boiler = {t for t in (cfg.validate.default_caption_prompt, cfg.tokens.system_prompt) if t}
    return [t for t in sample.texts() if t not in boiler]


def benchmark_item(sample: Sample, cfg: Config) -> tuple[BenchmarkItem, int]:
    """A validated, fetched benchmark row -> its item; also the number of media items that
    could not be decoded (counted by the caller). CLIP vectors come from `sample.embeddings`."""
    d = cfg.decontaminate
    phashes, undecodable = [], 0
    for i, item in enumerate(sample.media):
        if not item.members:
            undecodable += 1
            continue
        try:
            phashes.extend(phash64(f) for f in item_frames(sample, i))
        except Exception:  # noqa: BLE001 - undecoded video, corrupt bytes
            undecodable += 1
    emb = sample.embeddings
    item = BenchmarkItem(
        benchmark=sample.source, item_id=sample.source_id or sample.source_ref, phashes=phashes,
        ngrams=text_ngrams(judged_texts(sample, cfg), d.ngram.n, d.ngram.lowercase),
        clip_image=emb.get("clip_image"), clip_text=emb.get("clip_text"))
    return item, undecodable


class _LoadBenchmarkFile(beam.DoFn):
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg

    def setup(self) -> None:
        # benchmark media resolve against the benchmark's own folder, never the corpus's media_root
        own = dataclasses.replace(self.cfg, ingest=dataclasses.replace(self.cfg.ingest, media_root=None))
        self.validate = ValidateRows(own)
        self.fetch = MediaFetch(own)
        self.media = MediaFilter(own)
        self.media.setup()
        self.rows = stage_counter(STAGE.value, "benchmark_items")
        self.invalid = stage_counter(STAGE.value, "benchmark_invalid_rows")
        self.missing = stage_counter(STAGE.value, "benchmark_missing_media")
        self.media_rejected = stage_counter(STAGE.value, "benchmark_media_not_sampled")

    def teardown(self) -> None:
        self.media.teardown()

    def _media(self, sample: Sample) -> Sample:
        """The benchmark row's media through the training rows' own media step (decode, Keye
        frame sampling, resize), so both sides hash the same kind of frames; if that step
        rejects the row (a quality verdict means nothing for a benchmark), the fetched bytes."""
        if not sample.media:
            return sample
        out = self.media(copy.deepcopy(sample))
        if isinstance(out, Sample):
            return out
        self.media_rejected.inc()
        if isinstance(self.fetch(sample), Rejected):
            self.missing.inc()       # items fetched before the failure still count
        return sample

    def process(self, task):
        for raw in read_file(task):
            sample = self.validate(raw)
            if isinstance(sample, Rejected):
                self.invalid.inc()
                continue
            sample = self._media(sample)
            given = raw.payload.get("embeddings") if isinstance(raw.payload, dict) else None
            if isinstance(given, dict):   # vectors shipped with the benchmark manifest
                sample.embeddings.update({k: v for k, v in given.items() if k in ("clip_image", "clip_text")})
            self.rows.inc()
            yield sample


class _ToItem(beam.DoFn):
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg

    def setup(self) -> None:
        self.undecodable = stage_counter(STAGE.value, "benchmark_undecodable_media")

    def process(self, sample: Sample):
        item, bad = benchmark_item(sample, self.cfg)
        self.undecodable.inc(bad)
        yield item


class _BuildIndex(beam.CombineFn):
    """Benchmark items -> one DecontamIndex (bounded by the benchmarks' size)."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg

    def create_accumulator(self):
        return []

    def add_input(self, acc, item):
        acc.append(item)
        return acc

    def merge_accumulators(self, accs):
        return [x for a in accs for x in a]

    def extract_output(self, acc):
        d = self.cfg.decontaminate
        return DecontamIndex(
            acc, phash_threshold=d.phash.threshold, num_perm=d.phash.num_perm, seed=d.phash.seed,
            false_positive_weight=d.phash.false_positive_weight,
            false_negative_weight=d.phash.false_negative_weight,
            image_threshold=d.clip.image_threshold, text_threshold=d.clip.text_threshold,
            min_ngram_matches=d.ngram.min_matches, max_items_per_ngram=d.ngram.max_items_per_ngram)


class BuildIndex(beam.PTransform):
    """PBegin -> a one-element PCollection holding the DecontamIndex of the recipe's benchmarks.

    When the score stage runs, benchmark rows are embedded by the same CLIP model, in the same
    RunInference step, as training rows (vectors of two models cannot be compared); otherwise
    the CLIP rule uses vectors shipped in the benchmark manifest, if any."""

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.cfg = cfg

    def expand(self, pbegin):
        cfg = self.cfg
        specs = [InputConfig(path=b.path, source=b.name, format="auto") for b in cfg.decontaminate.benchmarks]
        samples = (pbegin
                   | "Benchmarks" >> beam.Create(specs)
                   | "ExpandFiles" >> beam.ParDo(ExpandInputs(cfg))
                   | "SpreadFiles" >> beam.Reshuffle()
                   | "LoadRows" >> beam.ParDo(_LoadBenchmarkFile(cfg)))
        if cfg.score.enabled and cfg.decontaminate.clip.enabled:
            from pipelines.score import ScoreClip

            samples = samples | "EmbedBenchmarks" >> ScoreClip(cfg)
        return (samples
                | "ToItems" >> beam.ParDo(_ToItem(cfg))
                | "BuildIndex" >> beam.CombineGlobally(_BuildIndex(cfg)))


class _Judge(beam.DoFn):
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg

    def setup(self) -> None:
        self.undecodable = stage_counter(STAGE.value, "undecodable_media")
        self.by_rule = {r: stage_counter(STAGE.value, f"matched_{r}") for r in ("phash", "clip", "ngram")}

    def process(self, sample: Sample, index: DecontamIndex):
        out = dead_letter(STAGE.value, sample, lambda: list(self._judge(sample, index)))
        if isinstance(out, Rejected):
            yield rejected_output(out)
        else:
            yield from out

    def _judge(self, sample: Sample, index: DecontamIndex):
        d = self.cfg.decontaminate
        use_phash = (d.phash.enabled and index.num_images > 0 and bool(sample.media)
                     and sample.task not in d.phash.skip_tasks)
        phashes = []
        if use_phash:
            try:
                visual_features(sample, embedding=False, phash=True)
                phashes = [h for item in sample.embeddings[PHASH] for h in item]
            except NoFrames:
                self.undecodable.inc()
        row = RowFeatures(
            phashes=phashes,
            ngrams=text_ngrams(judged_texts(sample, self.cfg), d.ngram.n, d.ngram.lowercase)
            if d.ngram.enabled else None,
            clip_image=sample.embeddings.get("clip_image"), clip_text=sample.embeddings.get("clip_text"))
        verdict = index.judge(row, use_phash=use_phash, use_clip=d.clip.enabled, use_ngram=d.ngram.enabled)
        if d.ngram.enabled:
            sample.scores["benchmark_ngram_overlap"] = verdict.ngram_overlap
        if use_phash and phashes:
            sample.scores["benchmark_phash_jaccard"] = verdict.phash_jaccard
        if verdict.clip_image_cos is not None:
            sample.scores["benchmark_clip_image_cos"] = verdict.clip_image_cos
        if verdict.match is None:
            count_kept(STAGE.value)
            yield sample
            return
        self.by_rule[verdict.match.rule].inc()
        r = reject_sample(sample, STAGE, Reason.CONTAMINATED, verdict.match.detail())
        yield rejected_output(r)


def shared_index(pipeline: beam.Pipeline, cfg: Config) -> beam.PCollection:
    """The pipeline's DecontamIndex for this recipe, built once however many stages judge against it
    (build_mixture judges curated rows and again the generated rows, against the same benchmarks:
    reading, decoding and CLIP-embedding them twice was the same work done twice)."""
    built = pipeline.__dict__.setdefault("_keye_decontam_index", {})
    key = (cfg.hash(), repr(cfg.decontaminate))    # benchmark paths are not in the recipe hash
    if key not in built:
        built[key] = pipeline | f"DecontamIndex{len(built) or ''}" >> BuildIndex(cfg)
    return built[key]


class Decontaminate(beam.PTransform):
    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.cfg = cfg

    def expand(self, samples):
        index = shared_index(samples.pipeline, self.cfg)
        out = samples | "Judge" >> beam.ParDo(_Judge(self.cfg), index=AsSingleton(index)).with_outputs(
            REJECTED, main=KEPT)
        return {KEPT: out[KEPT], REJECTED: out[REJECTED]}


__all__ = ["BuildIndex", "Decontaminate", "shared_index", "BenchmarkConfig", "benchmark_item", "judged_texts"]
