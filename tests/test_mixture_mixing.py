"""Share mixing: quotas, the histogram + cutoff-bin selection against a brute-force global sort,
and the Beam `Mix` stage (no single-worker sort, same rows as the brute force)."""
from __future__ import annotations

import random

import pytest

from mixture import mixing
from schemas.sample import ContentPart, Message, Sample


def _rows(counts: dict[str, int], seed: int = 0) -> list[tuple[str, str, int]]:
    """(category, id, tokens) rows; every id is an input id (no fan-out)."""
    rng = random.Random(seed)
    return [(c, f"{c}-{i:05d}", rng.randint(50, 5000)) for c, n in counts.items() for i in range(n)]


def _select(rows, targets, unit, bins, seed=0):
    """The mixing rule run in plain Python over histograms, as the Beam stage runs it."""
    hist = {}
    for c, rid, tok in rows:
        rank = mixing.row_rank(seed, c, rid)
        mixing.add_to_histogram(hist.setdefault(c, mixing.empty_histogram()), mixing.rank_bin(rank, bins), tok)
    plan = mixing.plan_mixture(hist, targets, unit)
    boundary = {}
    for c, rid, tok in rows:
        rank = mixing.row_rank(seed, c, rid)
        if plan.categories[c].cutoff_bin == mixing.rank_bin(rank, bins):
            boundary.setdefault(c, []).append((rank, rid, 1 if unit == "samples" else tok))
    cutoffs = {c: mixing.exact_cutoff(b, plan.categories[c].budget_in_bin, unit) for c, b in boundary.items()}
    kept = set()
    for c, rid, _ in rows:
        rank = mixing.row_rank(seed, c, rid)
        if mixing.selected(plan.categories[c], mixing.rank_bin(rank, bins), rank, rid, cutoffs.get(c)):
            kept.add(rid)
    return plan, kept


def _brute_force(rows, plan, unit, seed=0):
    """Sort every category by rank and take the longest prefix within the quota."""
    kept = set()
    for c in plan.categories:
        ordered = sorted((mixing.row_rank(seed, c, rid), rid, tok) for cc, rid, tok in rows if cc == c)
        limit = plan.categories[c].quota + 1e-9
        used = 0
        for _, rid, tok in ordered:
            w = 1 if unit == "samples" else tok
            if used + w > limit:
                break
            used += w
            kept.add(rid)
    return kept


KEYE = {"non_thinking": 330, "thinking": 230, "auto_think": 20, "think_with_image": 100,
        "video_think": 24, "video_no_think": 80}


@pytest.mark.parametrize("unit", ["samples", "tokens"])
@pytest.mark.parametrize("bins", [1, 7, 4096])
def test_histogram_selection_equals_global_sort(unit, bins):
    rows = _rows({"non_thinking": 900, "thinking": 400, "auto_think": 30, "think_with_image": 250,
                  "video_think": 60, "video_no_think": 500})
    plan, kept = _select(rows, KEYE, unit, bins)
    assert kept == _brute_force(rows, plan, unit)
    tokens = {rid: tok for _, rid, tok in rows}
    for c, cp in plan.categories.items():
        mine = [rid for cc, rid, _ in rows if cc == c and rid in kept]
        achieved = len(mine) if unit == "samples" else sum(tokens[r] for r in mine)
        biggest = 1 if unit == "samples" else max(tokens[rid] for cc, rid, _ in rows if cc == c)
        assert cp.quota - biggest < achieved <= cp.quota + 1e-6, (c, cp.quota, achieved)


def test_quotas_scale_to_the_bottleneck_and_skip_missing_categories():
    rows = _rows({"non_thinking": 1000, "thinking": 23, "video_no_think": 400})   # thinking is scarce
    plan, kept = _select(rows, KEYE, "samples", 64)
    cats = plan.categories
    assert cats["thinking"].quota == pytest.approx(23)                      # the bottleneck keeps all
    assert cats["non_thinking"].quota == pytest.approx(23 * 330 / 230)
    assert cats["video_no_think"].quota == pytest.approx(23 * 80 / 230)
    assert cats["auto_think"].missing and cats["auto_think"].quota == 0
    assert sum(cp.target_share for cp in cats.values()) == pytest.approx(1.0)
    got = {c: sum(1 for cc, rid, _ in rows if cc == c and rid in kept) for c in cats}
    assert got == {"non_thinking": 33, "thinking": 23, "auto_think": 0, "think_with_image": 0,
                   "video_think": 0, "video_no_think": 8}


def test_zero_target_drops_the_category_and_seed_changes_the_pick():
    rows = _rows({"non_thinking": 200, "thinking": 200})
    plan, kept = _select(rows, {"non_thinking": 1, "thinking": 0}, "samples", 16)
    assert not [r for r in kept if r.startswith("thinking")] and len(kept) == 200
    _, half = _select(rows, {"non_thinking": 1, "thinking": 1, "auto_think": 2}, "samples", 16)
    _, other = _select(rows, {"non_thinking": 1, "thinking": 1, "auto_think": 2}, "samples", 16, seed=7)
    assert len(half) == len(other) == 400 and half == other          # auto_think missing: all fit
    _, a = _select(rows + _rows({"auto_think": 50}), KEYE, "samples", 16)
    _, b = _select(rows + _rows({"auto_think": 50}), KEYE, "samples", 16, seed=7)
    assert len(a) == len(b) and a != b


def test_category_of_and_derived_ids():
    def row(mode, kind=None):
        from schemas.sample import MediaItem

        media = [MediaItem(kind=kind, uri="x")] if kind else []
        return Sample(id="a@t", source="s", source_ref="r", task="cold_start", mode=mode, media=media,
                      messages=[Message(role="user", content=[ContentPart(type="text", text="q")])])

    assert [mixing.category_of(row(m)) for m in ("think", "no_think", "auto_think", "agentic_think", None)] == \
        ["thinking", "non_thinking", "auto_think", "think_with_image", None]
    assert mixing.category_of(row("think", "video")) == "video_think"
    assert mixing.category_of(row("no_think", "video")) == "video_no_think"
    assert mixing.category_of(row("no_think", "image")) == "non_thinking"
    assert mixing.root_id("abc@think@16f") == "abc" and mixing.is_derived("abc@16f")
    assert not mixing.is_derived("abc") and not mixing.is_derived(None)


@pytest.mark.parametrize("unit", ["samples", "tokens"])
def test_mix_stage_on_beam_matches_the_rule(cfg, unit):
    """The Beam stage picks exactly the rule's rows; its report gives target and achieved shares."""
    import dataclasses

    from pipelines.common import KEPT, REJECTED
    from pipelines.mixture import SHARES, Mix
    from tests.beam_util import run_collect

    mixing_cfg = dataclasses.replace(cfg.mixture.mixing, rank_bins=8)
    shares = dataclasses.replace(cfg.mixture.shares, unit=unit)
    cfg = dataclasses.replace(cfg, mixture=dataclasses.replace(cfg.mixture, mixing=mixing_cfg, shares=shares))
    spec = _rows({"non_thinking": 120, "thinking": 40, "video_no_think": 30}, seed=3)
    mode = {"non_thinking": "no_think", "thinking": "think", "video_no_think": "no_think"}
    samples = []
    for c, rid, tok in spec:
        from schemas.sample import MediaItem

        media = [MediaItem(kind="video", uri="v")] if c.startswith("video") else []
        samples.append(Sample(id=f"{rid}@x", source="s", source_ref=rid, task="cold_start", mode=mode[c],
                              media=media, text_tokens=tok, messages=[]))
    out = run_collect(samples, lambda pc: (lambda o: {"kept": o[KEPT], "rejected": o[REJECTED],
                                                       "shares": o[SHARES]})(pc | Mix(cfg)))
    # ranks hash the input row's id (rid), not the derived id
    plan, expected = _select([(c, rid, t) for c, rid, t in spec], cfg.mixture.shares.targets, unit, 8)
    assert {s.id.split("@")[0] for s in out["kept"]} == expected
    assert len(out["kept"]) + len(out["rejected"]) == len(samples)
    assert {(r.stage, r.reason) for r in out["rejected"]} == {("mixture", "over_share")}
    (report,) = out["shares"]
    for c in plan.categories:
        got = report["categories"][c]
        mine = [s for s in out["kept"] if mixing.category_of(s) == c]
        assert got["achieved_samples"] == len(mine) and got["achieved_tokens"] == sum(s.text_tokens for s in mine)
        biggest = 1 if unit == "samples" else max((t for cc, _, t in spec if cc == c), default=1)
        assert abs(got["achieved_" + unit] - got["target_" + unit]) < biggest, (c, got)


def test_upsampling_repeats_the_best_scored_rows():
    from schemas.config import UpsampleRule
    from schemas.sample import MediaItem

    rules = [UpsampleRule(score="gen_path_score", min=0.8, repeats=3), UpsampleRule("gen_pass_rate", 0.5, 2)]
    row = Sample(id="abc@think", source="s", source_ref="r", task="cold_start", mode="think", messages=[],
                 media=[MediaItem(kind="image", uri="x", members=["abc@think.0.000.jpg"])],
                 blobs={"abc@think.0.000.jpg": b"jpeg"}, scores={"gen_path_score": 0.9})
    assert mixing.repeats(row, rules) == 3
    assert mixing.repeats(Sample(**{**row.__dict__, "scores": {"gen_pass_rate": 0.6}}), rules) == 2
    assert mixing.repeats(Sample(**{**row.__dict__, "scores": {"gen_path_score": 0.1}}), rules) == 1
    copies = mixing.upsampled(row, 3)
    assert [c.id for c in copies] == ["abc@think", "abc@think@r2", "abc@think@r3"]
    for c in copies:
        assert list(c.blobs) == c.media[0].members == [c.id + ".0.000.jpg"] and mixing.root_id(c.id) == "abc"
    assert row.media[0].members == ["abc@think.0.000.jpg"]            # the original is not touched
