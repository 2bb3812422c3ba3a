"""`python -m bench.mixture`: the share-mixing stage (pipelines/mixture.py:Mix) on synthetic built rows,
against the rule computed by a plain global sort in the same run.

Rows of the six categories with random token counts go through `Mix` on the DirectRunner (rank
histogram combiner, cutoff-bin side input, exact cutoff, select) and through a plain loop that
sorts every category by rank and takes the longest prefix within its quota. The report gives both
times, their ratio, whether the kept sets are identical, and the largest |achieved - target| per
category (samples; tokens: in units of the category's largest row).
"""
from __future__ import annotations

import argparse
import json
import random
import time


def rows(n: int, seed: int = 0):
    from schemas.sample import MediaItem, Sample

    rng = random.Random(seed)
    cats = [("non_thinking", "no_think", None), ("thinking", "think", None), ("auto_think", "auto_think", None),
            ("think_with_image", "agentic_think", None), ("video_think", "think", "video"),
            ("video_no_think", "no_think", "video")]
    weights = [33, 23, 2, 10, 3, 8]
    out = []
    for i in range(n):
        c, mode, kind = rng.choices(cats, weights=[w + 5 for w in weights])[0]
        media = [MediaItem(kind=kind, uri="v")] if kind else []
        out.append(Sample(id=f"{i:08x}@{c}", source="bench", source_ref=str(i), task="cold_start", mode=mode,
                          media=media, messages=[], text_tokens=rng.randint(50, 4000)))
    return out


def global_sort(samples, cfg):
    """The rule with a global sort per category (what Mix must equal), in one process."""
    from mixture import mixing

    unit, seed = cfg.mixture.shares.unit, cfg.mixture.mixing.seed
    hist = {}
    for s in samples:
        c = mixing.category_of(s)
        mixing.add_to_histogram(hist.setdefault(c, mixing.empty_histogram()), 0, s.text_tokens + s.visual_tokens)
    plan = mixing.plan_mixture(hist, dict(cfg.mixture.shares.targets), unit)
    kept = set()
    by_cat = {}
    for s in samples:
        c = mixing.category_of(s)
        by_cat.setdefault(c, []).append((mixing.row_rank(seed, c, s.id), s.id, mixing.row_weight(s, unit)))
    for c, items in by_cat.items():
        limit, used = plan.categories[c].quota + 1e-9, 0
        for _, rid, w in sorted(items):
            if used + w > limit:
                break
            used += w
            kept.add(rid)
    return plan, kept


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=50000)
    ap.add_argument("--unit", choices=["samples", "tokens"], default="samples")
    args = ap.parse_args(argv)

    from pipelines.common import KEPT
    from pipelines.mixture import Mix
    from schemas.config import load_config
    from tests.beam_util import run_collect

    cfg = load_config(None, [f"mixture.shares.unit={args.unit}"])
    samples = rows(args.rows)
    t = time.perf_counter()
    plan, expected = global_sort(samples, cfg)
    loop_s = time.perf_counter() - t
    t = time.perf_counter()
    out = run_collect(samples, lambda pc: {"kept": (pc | Mix(cfg))[KEPT]})
    beam_s = time.perf_counter() - t
    got = {s.id for s in out["kept"]}
    tokens = {s.id: s.text_tokens for s in samples}
    worst = {}
    for c, cp in plan.categories.items():
        mine = [s for s in out["kept"] if s.id.endswith("@" + c)]
        achieved = len(mine) if args.unit == "samples" else sum(tokens[s.id] for s in mine)
        scale = 1 if args.unit == "samples" else max((tokens[s.id] for s in samples if s.id.endswith("@" + c)),
                                                     default=1)
        worst[c] = round(abs(achieved - cp.quota) / scale, 4)
    report = {"rows": args.rows, "unit": args.unit, "kept": len(got), "identical_to_global_sort": got == expected,
              "global_sort_s": round(loop_s, 3), "beam_mix_s": round(beam_s, 3),
              "ratio_beam_over_sort": round(beam_s / loop_s, 2), "max_abs_error_in_rows": worst}
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
