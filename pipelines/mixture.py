"""The cold-start mixture stage: curated rows -> Keye-VL Phase II samples, cut to target shares.

    curated rows ─Build─▶ derived rows ─Tokens─▶ ─Decontaminate─▶ ─Mix─▶ kept derived rows
        │  (one mode builder per row,     (exact counts,  (generated    (shares: rank histogram
        │   routed by seeded hash among    token bound)    text too)     per category -> quotas ->
        │   the builders that want it)                                    exact cutoff -> select)
        ├─ no builder / builder rejects ──────────────────────────────────────▶ rejected (input rows)
        └─ rows that made derived rows ─Settle (CoGroupByKey by input id)◀── kept + rejected derived
                     an input row is kept when at least one of its derived rows is kept; else it is
                     rejected with the stage and reason of its first derived row (by id)

A derived row has its own id (`<id>@<tag>`, mixture/base.py:derived_id) and its own fate: each
derived row dropped by a gate or by its share is a rejected row under that id (a *derived*
rejection), beside the input-level row. The manifest balances input rows (`input == kept +
rejected`) and derived rows (`made == kept + rejected`) separately, and counts which builder
made how many rows from how many inputs.

What one worker holds: one row (Build, gates, Select); one category's rank histogram of
`mixture.mixing.rank_bins` cells (the combiner); the rows of one cutoff bin per category
(about rows / rank_bins); the plan and cutoffs as side inputs (a few numbers per category);
one input row's derived ids (Settle). Nothing holds the corpus.
"""
from __future__ import annotations

import apache_beam as beam
from apache_beam.pvalue import AsDict, AsSingleton, TaggedOutput

from mixture import mixing
from mixture.instruct import NonThinkingBuilder
from mixture.variants import VideoBuilder
from pipelines.common import KEPT, REJECTED, count_kept, rejected_output, stage_counter, step_error, sum_pairs
from pipelines.decontaminate import Decontaminate
from pipelines.tokens import Tokens
from schemas.config import Config
from schemas.reasons import Reason, Stage
from schemas.rejected import Rejected, reject
from schemas.sample import MODES, Sample

STAGE = Stage.MIXTURE
MADE = "made"          # (builder category, derived rows made) per input row that made rows
ENTERED = "entered"    # input ids that made derived rows (for Settle)
KEPT_INPUTS = "kept_inputs"
SHARES = "shares"


def mode_builders(cfg: Config) -> list:
    """The mode builders, in CATEGORIES order (mixture/base.py:ModeBuilder)."""
    return [NonThinkingBuilder(), VideoBuilder(cfg, "video_think"), VideoBuilder(cfg, "video_no_think")]


def route(builders: list, sample: Sample, seed: int):
    """The one builder a row goes to: among those that want it, one picked by a seeded hash of the
    id, so modes get disjoint rows (Keye's non-reasoning set shares no samples with the others)."""
    wanting = [b for b in builders if b.wants(sample)]
    if not wanting:
        return None
    return wanting[mixing.hash_rank(seed + 1, sample.id) % len(wanting)]


class _Build(beam.DoFn):
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.builders = mode_builders(cfg)

    def setup(self) -> None:
        for b in self.builders:
            b.setup()

    def process(self, sample: Sample):
        try:
            builder = route(self.builders, sample, self.cfg.mixture.mixing.seed)
            if builder is None:
                yield rejected_output(reject(STAGE, Reason.NO_MODE, sample.source, sample.source_ref,
                                             f"task {sample.task}: no mode builder wants this row", id=sample.id,
                                             payload=sample.to_json(),
                                             max_payload_bytes=self.cfg.ingest.max_payload_bytes))
                return
            out = builder(sample)
            if isinstance(out, Rejected):
                yield rejected_output(out)
                return
            _check_derived(sample, out)
        except Exception as e:  # noqa: BLE001 - dead-letter: a builder bug costs this row only
            yield rejected_output(step_error(STAGE.value, sample, e))
            return
        stage_counter(STAGE.value, f"made/{builder.category}").inc(len(out))
        yield TaggedOutput(MADE, (builder.category, len(out)))
        yield TaggedOutput(ENTERED, sample.id)
        for row in out:
            yield row


def _check_derived(parent: Sample, rows: list) -> None:
    """The builder contract: one or more rows, each with a distinct derived id and a mode."""
    if not rows:
        raise ValueError("builder returned no rows (a builder rejects a row it cannot use)")
    ids = [r.id for r in rows]
    if len(set(ids)) != len(ids) or not all(mixing.is_derived(i) and mixing.root_id(i) == parent.id for i in ids):
        raise ValueError(f"derived ids must be distinct <parent>@<tag>: {ids}")
    for r in rows:
        if r.mode not in MODES or mixing.category_of(r) is None:
            raise ValueError(f"derived row {r.id} has no mode ({r.mode!r})")


class Build(beam.PTransform):
    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.cfg = cfg

    def expand(self, samples):
        out = (samples
               | "Spread" >> beam.Reshuffle()     # builders decode and generate: spread rows over workers
               | "Build" >> beam.ParDo(_Build(self.cfg)).with_outputs(REJECTED, MADE, ENTERED, main=KEPT))
        return {KEPT: out[KEPT], REJECTED: out[REJECTED], MADE: out[MADE], ENTERED: out[ENTERED]}


# --- Mix: cut each category to its share ----------------------------------------------------------------
class _Histogram(beam.CombineFn):
    def create_accumulator(self):
        return mixing.empty_histogram()

    def add_input(self, acc, bin_and_tokens):
        return mixing.add_to_histogram(acc, *bin_and_tokens)

    def merge_accumulators(self, accs):
        return mixing.merge_histograms(list(accs))

    def extract_output(self, acc):
        return acc


def _ranked(sample: Sample, cfg: Config) -> tuple[str, int, int, int]:
    """(category, rank, bin, weight) of a built row. The rank hashes the input row's id, so the rows
    one input made (a video at 16 and 32 frames) sit side by side in rank order (ties broken by
    id): they are kept or left out together, except where a quota's exact cutoff falls between them."""
    rank = mixing.hash_rank(cfg.mixture.mixing.seed, mixing.root_id(sample.id))
    return (mixing.category_of(sample), rank, mixing.rank_bin(rank, cfg.mixture.mixing.rank_bins),
            mixing.row_weight(sample, cfg.mixture.shares.unit))


class _Select(beam.DoFn):
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg

    def process(self, sample: Sample, plan, cutoffs):
        category, rank, b, _ = _ranked(sample, self.cfg)
        cp = plan.categories[category]
        if mixing.selected(cp, b, rank, sample.id, cutoffs.get(category)):
            count_kept(STAGE.value)
            yield sample
            return
        yield rejected_output(reject(
            STAGE, Reason.OVER_SHARE, sample.source, sample.source_ref,
            f"{category}: quota {cp.quota:.3f} {plan.unit} of {cp.available_samples} rows "
            f"(share {cp.target_share:.4f}); rank bin {b} > cutoff", id=sample.id))


class Mix(beam.PTransform):
    """Rows of all categories -> {KEPT, REJECTED (over_share), SHARES (the report, one dict)}."""

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.cfg = cfg

    def expand(self, rows):
        cfg = self.cfg
        unit, targets = cfg.mixture.shares.unit, dict(cfg.mixture.shares.targets)
        histograms = (rows
                      | "RankBins" >> beam.Map(_bin_and_tokens, cfg)
                      | "Histogram" >> beam.CombinePerKey(_Histogram()))
        plan = (histograms
                | "AllHistograms" >> beam.combiners.ToDict()
                | "Plan" >> beam.Map(mixing.plan_mixture, targets, unit))
        cutoffs = (rows
                   | "CutoffBinRows" >> beam.FlatMap(_cutoff_bin_row, cfg, AsSingleton(plan))
                   | "ByCategory" >> beam.GroupByKey()
                   | "Cutoff" >> beam.Map(_exact_cutoff, AsSingleton(plan)))
        out = rows | "Select" >> beam.ParDo(_Select(cfg), AsSingleton(plan), AsDict(cutoffs)).with_outputs(
            REJECTED, main=KEPT)
        achieved = (out[KEPT]
                    | "Achieved" >> beam.Map(lambda s: (mixing.category_of(s), (1, s.text_tokens + s.visual_tokens)))
                    | "SumAchieved" >> beam.CombinePerKey(sum_pairs)
                    | "AchievedDict" >> beam.combiners.ToDict())
        report = (plan
                  | "Report" >> beam.Map(lambda p, a: mixing.share_report(
                      p, {c: {"samples": n, "tokens": t} for c, (n, t) in a.items()}), AsSingleton(achieved)))
        return {KEPT: out[KEPT], REJECTED: out[REJECTED], SHARES: report}


def _bin_and_tokens(sample: Sample, cfg: Config):
    category, _, b, _ = _ranked(sample, cfg)
    return category, (b, sample.text_tokens + sample.visual_tokens)


def _cutoff_bin_row(sample: Sample, cfg: Config, plan):
    category, rank, b, weight = _ranked(sample, cfg)
    if plan.categories[category].cutoff_bin == b:
        yield category, (rank, sample.id, weight)


def _exact_cutoff(kv, plan):
    category, rows = kv
    cp = plan.categories[category]
    return category, mixing.exact_cutoff(list(rows), cp.budget_in_bin, plan.unit)


# --- Settle: the fate of each input row ------------------------------------------------------------------
def _settle(kv):
    root, groups = kv
    if list(groups["kept"]):
        yield TaggedOutput(KEPT_INPUTS, root)
        return
    derived = sorted(groups["rejected"], key=lambda r: r.id)
    if not derived:      # made rows, none kept and none rejected: a lost row; fail loudly in the manifest
        return
    first = derived[0]
    listing = "; ".join(f"{r.id}: {r.stage}/{r.reason}" for r in derived)
    yield rejected_output(reject(first.stage, first.reason, first.source, first.source_ref,
                                 f"all {len(derived)} derived rows rejected: {listing}", id=root))


class Mixture(beam.PTransform):
    """Curated rows -> {KEPT: derived rows kept, REJECTED: input-level and derived rejections,
    KEPT_INPUTS: ids of input rows with a kept derived row, MADE: (category, rows) per building input,
    SHARES: the share report}."""

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.cfg = cfg

    def expand(self, curated):
        cfg = self.cfg
        built = curated | "Build" >> Build(cfg)
        rows, derived_rejected = built[KEPT], []
        gates = [("Tokens", Tokens(cfg))]
        if cfg.decontaminate.enabled and cfg.decontaminate.benchmarks:
            gates.append(("Decontaminate", Decontaminate(cfg)))
        for label, gate in gates:
            out = rows | label >> gate
            rows = out[KEPT]
            derived_rejected.append(out[REJECTED])
        mixed = rows | "Mix" >> Mix(cfg)
        derived_rejected.append(mixed[REJECTED])
        derived_rejected = tuple(derived_rejected) | "DerivedRejected" >> beam.Flatten()
        settled = ({"entered": built[ENTERED] | "EnteredKey" >> beam.Map(lambda i: (i, None)),
                    "kept": mixed[KEPT] | "KeptKey" >> beam.Map(lambda s: (mixing.root_id(s.id), None)),
                    "rejected": derived_rejected | "RejectedKey" >> beam.Map(lambda r: (mixing.root_id(r.id), r))}
                   | "ByInput" >> beam.CoGroupByKey()
                   | "Settle" >> beam.FlatMap(_settle).with_outputs(REJECTED, KEPT_INPUTS))
        rejected = (built[REJECTED], derived_rejected, settled[REJECTED]) | "MixtureRejected" >> beam.Flatten()
        return {KEPT: mixed[KEPT], REJECTED: rejected, KEPT_INPUTS: settled[KEPT_INPUTS],
                MADE: built[MADE], SHARES: mixed[SHARES]}
