"""Share mixing, Beam-free: which category a row belongs to, its seeded hash rank, the per-category
quotas that meet the target shares, and the exact rank cutoff that fills each quota.

Selection never sorts a category in one place. Each row gets a rank, a 64-bit hash of
(seed, category, input id); a category keeps the rows of lowest rank until its quota is full. The cutoff is
found in two small steps: a histogram of rank bins per category (a combiner: `rank_bins`
counters per category) locates the one bin where the quota runs out, and only that bin's rows
(about rows / rank_bins) are ranked exactly. Rows below the cutoff bin are kept, rows above
are left out (`over_share`), and rows inside it are kept up to the exact cutoff key.

Quotas scale the targets to the data available: the largest mixture whose every category fits
in what that category has, `T = min_c available_c / share_c` over categories that have rows;
a category with no rows is reported as missing and the shares of the others renormalised. The
bottleneck category keeps all its rows; the others get `floor(T * share_c)` samples, or in
token units the longest rank prefix whose tokens stay within `T * share_c` (so a category's
achieved share is within one row of its target).
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass, field
from typing import Optional, Sequence

from schemas.sample import CATEGORIES, Sample

RANK_BITS = 64
# A cutoff key: rows whose (rank, id) is at most this are kept.
CutoffKey = tuple[int, str]


def root_id(row_id: str) -> str:
    """The input row a derived row comes from (`abc@think@16f` -> `abc`)."""
    return row_id.split("@", 1)[0]


def is_derived(row_id: Optional[str]) -> bool:
    return bool(row_id) and "@" in row_id


def category_of(sample: Sample) -> Optional[str]:
    """A built row's mixture category, from its mode and media (a pure function of the row)."""
    video = any(m.kind == "video" for m in sample.media)
    if sample.mode == "think":
        return "video_think" if video else "thinking"
    if sample.mode == "no_think":
        return "video_no_think" if video else "non_thinking"
    if sample.mode == "auto_think":
        return "auto_think"
    if sample.mode == "agentic_think":
        return "think_with_image"
    return None


def hash_rank(seed: int, row_id: str) -> int:
    """A row's rank within its category: 64 bits of BLAKE2b over (seed, id), the same on any runner."""
    digest = hashlib.blake2b(f"{seed}\x1f{row_id}".encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def row_rank(seed: int, category: str, row_id: str) -> int:
    """A built row's rank in its category: the hash of (category, its input row's id). The rows one
    input made in a category (a video at 16 and 32 frames) share it and sit side by side (ties are
    broken by id), so they are kept or left out together unless the exact cutoff falls between them;
    across categories the ranks are independent, so one question is not favoured in every mode."""
    return hash_rank(seed, f"{category}\x1f{root_id(row_id)}")


def rank_bin(rank: int, bins: int) -> int:
    return (rank * bins) >> RANK_BITS


def row_weight(sample: Sample, unit: str) -> int:
    return 1 if unit == "samples" else sample.text_tokens + sample.visual_tokens


def repeats(sample: Sample, rules) -> int:
    """How many times a kept row appears (Keye-VL 1.5 upsamples its best-scored samples): the first
    rule whose score the row has at or above `min` decides; 1 when none matches."""
    for rule in rules:
        value = sample.scores.get(rule.score)
        if value is not None and value >= rule.min:
            return rule.repeats
    return 1


def upsampled(sample: Sample, n: int) -> list[Sample]:
    """The row and its n - 1 copies `<id>@r2` ... `<id>@r<n>` (members renamed under each copy's id)."""
    import dataclasses

    from mixture.base import derived_id
    from schemas.blobs import renamed_blobs

    out = [sample]
    for k in range(2, n + 1):
        new_id = derived_id(sample.id, f"r{k}")
        rename = {name: new_id + name[len(sample.id):] for name in sample.blobs if name.startswith(sample.id + ".")}
        media = [dataclasses.replace(m, members=[rename.get(x, x) for x in m.members],
                                     source_member=rename.get(m.source_member, m.source_member))
                 for m in sample.media]
        out.append(dataclasses.replace(sample, id=new_id, media=media,
                                       blobs=renamed_blobs(sample.blobs, rename)))
    return out


# --- per-category histogram (the combiner's accumulator is a plain dict) ------------------------------
def empty_histogram() -> dict:
    return {"samples": 0, "tokens": 0, "bins": {}}


def add_to_histogram(h: dict, bin_index: int, tokens: int) -> dict:
    h["samples"] += 1
    h["tokens"] += tokens
    cell = h["bins"].setdefault(bin_index, [0, 0])
    cell[0] += 1
    cell[1] += tokens
    return h


def merge_histograms(hs: Sequence[dict]) -> dict:
    out = empty_histogram()
    for h in hs:
        out["samples"] += h["samples"]
        out["tokens"] += h["tokens"]
        for b, (n, t) in h["bins"].items():
            cell = out["bins"].setdefault(b, [0, 0])
            cell[0] += n
            cell[1] += t
    return out


# --- quotas ----------------------------------------------------------------------------------------------
@dataclass
class CategoryPlan:
    category: str
    target_weight: float             # the recipe's weight (Keye-VL's count)
    target_share: float              # of the whole mixture, renormalised over categories that have rows
    available_samples: int
    available_tokens: int
    quota: float                     # in the unit: T * target_share (the target amount)
    cutoff_bin: Optional[int] = None  # rows in lower bins are kept, in higher bins left out; None: keep all
    budget_in_bin: float = 0.0       # what is left of the quota when the cutoff bin starts
    missing: bool = False            # a target > 0 but no rows: left out of the renormalised shares


@dataclass
class MixPlan:
    unit: str
    scale: float                     # T: the mixture's size in the unit
    categories: dict[str, CategoryPlan] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"unit": self.unit, "scale": self.scale,
                "categories": {c: asdict(p) for c, p in sorted(self.categories.items())}}


def plan_mixture(histograms: dict[str, dict], targets: dict[str, float], unit: str) -> MixPlan:
    """Quotas and cutoff bins per category from the rank histograms of the rows available."""
    def available(c: str) -> int:
        h = histograms.get(c)
        return 0 if h is None else h["samples" if unit == "samples" else "tokens"]

    present = {c: w for c, w in targets.items() if w > 0 and available(c) > 0}
    total_weight = sum(present.values())
    scale = min((available(c) * total_weight / w for c, w in present.items()), default=0.0)
    plan = MixPlan(unit=unit, scale=scale)
    for c in sorted(set(targets) | set(histograms), key=_category_order):
        h = histograms.get(c) or empty_histogram()
        weight = float(targets.get(c, 0.0))
        share = weight / total_weight if c in present else 0.0
        quota = scale * share
        cp = CategoryPlan(category=c, target_weight=weight, target_share=share,
                          available_samples=h["samples"], available_tokens=h["tokens"], quota=quota,
                          missing=weight > 0 and c not in present)
        _locate_cutoff(cp, h, unit)
        plan.categories[c] = cp
    return plan


def _category_order(c: str) -> tuple:
    return (CATEGORIES.index(c) if c in CATEGORIES else len(CATEGORIES), c)


def _locate_cutoff(cp: CategoryPlan, h: dict, unit: str) -> None:
    """The first bin whose rows no longer all fit in the quota (None when every row fits)."""
    limit = _limit(cp.quota, unit)
    used = 0
    for b in sorted(h["bins"]):
        n, t = h["bins"][b]
        w = n if unit == "samples" else t
        if used + w > limit:
            cp.cutoff_bin, cp.budget_in_bin = b, limit - used
            return
        used += w
    cp.cutoff_bin = None


def _limit(quota: float, unit: str) -> float:
    """Samples are whole rows: floor the quota (with a tolerance for float error in T * share)."""
    return math.floor(quota + 1e-9) if unit == "samples" else quota + 1e-9


def exact_cutoff(boundary_rows: Sequence[tuple[int, str, int]], budget: float, unit: str) -> Optional[CutoffKey]:
    """The largest (rank, id) of the cutoff bin's rows that still fit in the budget: the bin's rows
    in rank order, kept while the running weight stays within the budget. None: none fits."""
    limit = _limit(budget, unit)
    used, key = 0, None
    for rank, row_id, weight in sorted(boundary_rows):
        if used + weight > limit:
            break
        used += weight
        key = (rank, row_id)
    return key


def selected(cp: CategoryPlan, bin_index: int, rank: int, row_id: str, cutoff: Optional[CutoffKey]) -> bool:
    """Whether a row of this category is kept, given the plan and the cutoff bin's exact key."""
    if cp.cutoff_bin is None or bin_index < cp.cutoff_bin:
        return True
    if bin_index > cp.cutoff_bin or cutoff is None:
        return False
    return (rank, row_id) <= cutoff


def share_report(plan: MixPlan, achieved: dict[str, dict]) -> dict:
    """Target and achieved shares per category, in samples and in tokens (for the manifest)."""
    kept_samples = sum(a["samples"] for a in achieved.values())
    kept_tokens = sum(a["tokens"] for a in achieved.values())
    out = {}
    for c, cp in plan.categories.items():
        a = achieved.get(c, {"samples": 0, "tokens": 0})
        out[c] = {
            "target_weight": cp.target_weight, "target_share": round(cp.target_share, 6),
            "target_" + plan.unit: round(cp.quota, 3), "missing": cp.missing,
            "available_samples": cp.available_samples, "available_tokens": cp.available_tokens,
            "achieved_samples": a["samples"], "achieved_tokens": a["tokens"],
            "achieved_share_samples": round(a["samples"] / kept_samples, 6) if kept_samples else 0.0,
            "achieved_share_tokens": round(a["tokens"] / kept_tokens, 6) if kept_tokens else 0.0,
        }
    return {"unit": plan.unit, "scale": round(plan.scale, 3), "categories": out}
