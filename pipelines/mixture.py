"""The cold-start mixture stage: curated rows -> Keye-VL Phase II samples, cut to target shares.

    curated rows ─Build─▶ built rows ─Variants─▶ ─Tokens─▶ ─Decontaminate─▶ ─Mix─▶ kept derived rows
        │  (every mode builder that     (each video     (exact     (generated     (shares: rank histogram
        │   wants the row, or one by    row at 16 and   counts,    text too)      per category -> quotas ->
        │   seeded hash: mixing.route)  32 frames)      bound)                    exact cutoff -> select)
        ├─ no builder wants it ──────────────────────────────────────────────────▶ rejected (input row, no_mode)
        └─ rows that went to a builder ─Settle (CoGroupByKey by input id)◀── kept + rejected derived rows
                     an input row is kept when at least one of its derived rows is kept; else it is
                     rejected with the stage and reason of its first derived rejection (by id)

A derived row has its own id (`<id>@<tag>`, `<id>@vthink@16f`; mixture/base.py:derived_id) and its
own fate: a builder's rejection (too_easy, code_timeout, ...) is a rejected row under the id the
row would have had, and each derived row dropped by a gate or by its share is a rejected row under
its id, beside the input-level row. The manifest balances input rows (`input == kept + rejected`)
and derived rows (`made == kept + rejected + replaced`: a video row replaced by its variants is
neither kept nor rejected), and counts per builder how many rows it made from how many inputs.

Two halves: Prepare (Build, Variants, gates: row by row) and Finish (Mix, Upsample, Settle: the
shares over every candidate). `Mixture` runs both in one pipeline; a partitioned (resumable) run
stages Prepare's output per partition and runs Finish once over all of it (pipelines/build_mixture.py),
so the shares hold for the whole run, not per partition.

What one worker holds: one row (Build, Variants, gates, Select); one category's rank histogram of
`mixture.mixing.rank_bins` cells (the combiner); the rows of one cutoff bin per category (about
rows / rank_bins); the plan and cutoffs as side inputs (a few numbers per category); one input
row's derived ids (Settle). Nothing holds the corpus.
"""
from __future__ import annotations

import dataclasses

import apache_beam as beam
from apache_beam.pvalue import AsDict, AsSingleton, TaggedOutput

from mixture import mixing
from mixture.base import derived_id
from mixture.builders import make_builders
from mixture.variants import VideoVariants
from pipelines.common import KEPT, REJECTED, count_kept, dead_letter, rejected_output, stage_counter, sum_tuples
from pipelines.decontaminate import Decontaminate
from pipelines.tokens import Tokens
from schemas.config import Config
from schemas.reasons import Reason, Stage
from schemas.rejected import Rejected, reject
from schemas.sample import MODES, Sample

STAGE = Stage.MIXTURE
MADE = "made"          # (label, (inputs, rows made, rows rejected at birth, rows replaced)) per building input
ENTERED = "entered"    # ids of input rows some builder took (for Settle)
KEPT_INPUTS = "kept_inputs"
SHARES = "shares"
CANDIDATES = "candidates"                # built rows that passed the gates: what the shares choose from
INPUT_REJECTED = "input_rejected"        # input-level rejections before the shares (no_mode)
DERIVED_REJECTED = "derived_rejected"    # derived rows rejected before the shares (builders, variants, gates)
VARIANTS = "video_variants"
UPSAMPLE = "upsample"


def route(builders: list, sample: Sample, how: str, seed: int) -> list:
    """The builders a row goes to: every builder that wants it (`all`: the shares decide which of its
    rows are kept), or one of them picked by a seeded hash of the id (`one`: modes get disjoint rows,
    as Keye-VL's non-reasoning set shares no samples with the others)."""
    wanting = [b for b in builders if b.wants(sample)]
    if how == "all" or len(wanting) <= 1:
        return wanting
    return [wanting[mixing.hash_rank(seed + 1, sample.id) % len(wanting)]]


class _Build(beam.DoFn):
    def __init__(self, cfg: Config, generator=None, sandbox=None) -> None:
        self.cfg = cfg
        self.generator, self.sandbox = generator, sandbox
        self.builders = None

    def setup(self) -> None:
        self.builders = make_builders(self.cfg, self.generator, self.sandbox)
        for b in self.builders:
            b.setup()

    def teardown(self) -> None:
        for b in self.builders or ():
            teardown = getattr(b, "teardown", None)
            if teardown is not None:
                teardown()

    def process(self, sample: Sample):
        m = self.cfg.mixture.mixing
        chosen = dead_letter(STAGE.value, sample, lambda: route(self.builders, sample, m.route, m.seed))
        if isinstance(chosen, Rejected):
            yield rejected_output(chosen)
            return
        if not chosen:
            yield rejected_output(reject(STAGE, Reason.NO_MODE, sample.source, sample.source_ref,
                                         f"task {sample.task}: no mode builder wants this row", id=sample.id,
                                         payload=sample.to_json()))
            return
        yield TaggedOutput(ENTERED, sample.id)
        for builder in chosen:
            tag = getattr(builder, "tag", builder.category)
            own = dataclasses.replace(sample, scores=dict(sample.scores))   # builders record scores on their input
            out = dead_letter(STAGE.value, own, lambda b=builder, s=own: _checked(s, b(s)))
            if isinstance(out, Rejected):
                out.id = derived_id(sample.id, tag)      # the row this builder would have made
                yield TaggedOutput(MADE, (builder.category, (1, 0, 1, 0)))
                yield rejected_output(out)
                continue
            stage_counter(STAGE.value, f"made/{builder.category}").inc(len(out))
            yield TaggedOutput(MADE, (builder.category, (1, len(out), 0, 0)))
            yield from out


def _checked(parent: Sample, out):
    """The builder contract: a Rejected row, or one or more rows with distinct derived ids and a mode."""
    if isinstance(out, Rejected):
        return out
    if not out:
        raise ValueError("builder returned no rows (a builder rejects a row it cannot use)")
    ids = [r.id for r in out]
    if len(set(ids)) != len(ids) or not all(mixing.is_derived(i) and mixing.root_id(i) == parent.id for i in ids):
        raise ValueError(f"derived ids must be distinct <parent>@<tag>: {ids}")
    for r in out:
        if r.mode not in MODES or mixing.category_of(r) is None:
            raise ValueError(f"derived row {r.id} has no mode ({r.mode!r})")
    return out


class _Variants(beam.DoFn):
    def __init__(self, cfg: Config) -> None:
        self.variants = VideoVariants(cfg)

    def setup(self) -> None:
        self.variants.setup()

    def process(self, row: Sample):
        if not VideoVariants.wants(row):
            yield row
            return
        out = dead_letter(STAGE.value, row, lambda: self.variants(row))
        if isinstance(out, Rejected):
            yield TaggedOutput(MADE, (VARIANTS, (1, 0, 0, 0)))
            yield rejected_output(out)
            return
        yield TaggedOutput(MADE, (VARIANTS, (1, len(out), 0, 1)))
        yield from out


class Build(beam.PTransform):
    """Curated rows -> {KEPT: built rows (videos at each frame count), REJECTED: input-level no_mode and
    derived rejections, MADE, ENTERED}. `generator` / `sandbox` replace the recipe's clients (tests)."""

    def __init__(self, cfg: Config, generator=None, sandbox=None) -> None:
        super().__init__()
        self.cfg, self.generator, self.sandbox = cfg, generator, sandbox

    def expand(self, samples):
        built = (samples
                 | "Spread" >> beam.Reshuffle()     # builders generate and run code: spread rows over workers
                 | "Build" >> beam.ParDo(_Build(self.cfg, self.generator, self.sandbox)).with_outputs(
                     REJECTED, MADE, ENTERED, main=KEPT))
        variants = (built[KEPT]
                    | "SpreadVideos" >> beam.Reshuffle()
                    | "Variants" >> beam.ParDo(_Variants(self.cfg)).with_outputs(REJECTED, MADE, main=KEPT))
        return {KEPT: variants[KEPT],
                REJECTED: (built[REJECTED], variants[REJECTED]) | "BuildRejected" >> beam.Flatten(),
                MADE: (built[MADE], variants[MADE]) | "AllMade" >> beam.Flatten(),
                ENTERED: built[ENTERED]}


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
    """(category, rank, bin, weight) of a built row (mixing.row_rank)."""
    category = mixing.category_of(sample)
    rank = mixing.row_rank(cfg.mixture.mixing.seed, category, sample.id)
    return (category, rank, mixing.rank_bin(rank, cfg.mixture.mixing.rank_bins),
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
                    | "SumAchieved" >> beam.CombinePerKey(sum_tuples)
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


class _Upsample(beam.DoFn):
    """Keye-VL 1.5's quality tiers: a kept row scoring high enough is emitted again as copies
    (`<id>@r2` ...), after the shares (which count distinct rows)."""

    def __init__(self, cfg: Config) -> None:
        self.rules = cfg.mixture.mixing.upsample

    def process(self, row: Sample):
        n = mixing.repeats(row, self.rules)
        if n > 1:
            yield TaggedOutput(MADE, (UPSAMPLE, (1, n - 1, 0, 0)))
        yield from mixing.upsampled(row, n)


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


class HandedOn:
    """An input row a partition handed to the global pass (its id): one input row of that pass, whose
    bytes were read (and counted) by its partition. (Defined here, not in pipelines/build_mixture.py:
    that module runs as __main__ under `python -m`, where worker processes could not unpickle it.)"""

    unread_bytes = 0
    __slots__ = ("id",)

    def __init__(self, row_id: str) -> None:
        self.id = row_id


class Prepare(beam.PTransform):
    """Curated rows -> the mixture up to the shares: {CANDIDATES: built rows that passed the gates,
    INPUT_REJECTED: input-level rejections (no_mode; a row that failed routing), DERIVED_REJECTED:
    derived rows rejected by a builder, a variant or a gate, ENTERED: ids of input rows a builder
    took, MADE: (label, counts) per building input}. Row by row: no shuffle sees a category whole."""

    def __init__(self, cfg: Config, generator=None, sandbox=None) -> None:
        super().__init__()
        self.cfg, self.generator, self.sandbox = cfg, generator, sandbox

    def expand(self, curated):
        cfg = self.cfg
        built = curated | "Build" >> Build(cfg, self.generator, self.sandbox)
        by_level = built[REJECTED] | "InputOrDerived" >> beam.Partition(lambda r, _: int(mixing.is_derived(r.id)), 2)
        rows, derived_rejected = built[KEPT], [by_level[1]]
        gates = [("Tokens", Tokens(cfg))]
        if cfg.decontaminate.enabled and cfg.decontaminate.benchmarks:
            gates.append(("Decontaminate", Decontaminate(cfg)))
        for label, gate in gates:
            out = rows | label >> gate
            rows = out[KEPT]
            derived_rejected.append(out[REJECTED])
        return {CANDIDATES: rows, INPUT_REJECTED: by_level[0], ENTERED: built[ENTERED], MADE: built[MADE],
                DERIVED_REJECTED: tuple(derived_rejected) | "GateRejected" >> beam.Flatten()}


class Finish(beam.PTransform):
    """Prepare's output (a dict of its PCollections, from this pipeline or read back from a partitioned
    run's staged files) -> {KEPT: derived rows kept, REJECTED: derived rejections and the input-level
    rejections Settle makes, KEPT_INPUTS, MADE (upsampled copies added), SHARES}: the shares over every
    candidate it is given, then Settle."""

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.cfg = cfg

    def expand(self, prepared):
        cfg = self.cfg
        mixed = prepared[CANDIDATES] | "Mix" >> Mix(cfg)
        kept, made = mixed[KEPT], prepared[MADE]
        if cfg.mixture.mixing.upsample:
            up = kept | "Upsample" >> beam.ParDo(_Upsample(cfg)).with_outputs(MADE, main=KEPT)
            kept, made = up[KEPT], (made, up[MADE]) | "AllMadeUp" >> beam.Flatten()
        derived_rejected = (prepared[DERIVED_REJECTED], mixed[REJECTED]) | "DerivedRejected" >> beam.Flatten()
        settled = ({"entered": prepared[ENTERED] | "EnteredKey" >> beam.Map(lambda i: (i, None)),
                    "kept": kept | "KeptKey" >> beam.Map(lambda s: (mixing.root_id(s.id), None)),
                    "rejected": derived_rejected | "RejectedKey" >> beam.Map(lambda r: (mixing.root_id(r.id), r))}
                   | "ByInput" >> beam.CoGroupByKey()
                   | "Settle" >> beam.FlatMap(_settle).with_outputs(REJECTED, KEPT_INPUTS))
        rejected = (derived_rejected, settled[REJECTED]) | "SettledRejected" >> beam.Flatten()
        return {KEPT: kept, REJECTED: rejected, KEPT_INPUTS: settled[KEPT_INPUTS], MADE: made,
                SHARES: mixed[SHARES]}


class Mixture(beam.PTransform):
    """Curated rows -> {KEPT: derived rows kept, REJECTED: input-level and derived rejections,
    KEPT_INPUTS: ids of input rows with a kept derived row, MADE: (category, rows) per building input,
    SHARES: the share report}: Prepare then Finish in one pipeline (a partitioned run stages Prepare's
    output per partition and runs Finish once over all of it: pipelines/build_mixture.py)."""

    def __init__(self, cfg: Config, generator=None, sandbox=None) -> None:
        super().__init__()
        self.cfg, self.generator, self.sandbox = cfg, generator, sandbox

    def expand(self, curated):
        prepared = curated | "Prepare" >> Prepare(self.cfg, self.generator, self.sandbox)
        out = prepared | "Finish" >> Finish(self.cfg)
        rejected = (prepared[INPUT_REJECTED], out[REJECTED]) | "MixtureRejected" >> beam.Flatten()
        return {**out, REJECTED: rejected}
