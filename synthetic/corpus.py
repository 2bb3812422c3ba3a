"""The synthetic sample corpus: a small, deterministic input tree that every stage is tested on.

`generate(out_dir, seed, scale)` writes, relative to out_dir:

    manifests/                  the pipeline's input (--input out_dir/manifests); a folder input
                                names each row's source after its top-level entry (captions, shards...)
      captions.jsonl            image caption pairs {"id", "image", "caption"}
      videos.jsonl              video captions {"id", "video", "caption"} and video QA
                                {"id", "video", "question", "answer"[, "reasoning"]}
      qa.jsonl                  image QA {"id", "image", "question", "answer"}; cold-start rows add "reasoning"
      chat.jsonl                own layout {"messages": [...]}: multi-turn QA, interleaved images and
                                text, a cold-start turn; pure text rows {"text": ...}
      llava.json                LLaVA list {"id", "image"|"images", "conversations"} with <image> markers
      table.parquet             caption pairs in Parquet: embedded bytes {"image": {"bytes", "path"}}, or a
                                file path in the "images" list column (a Parquet column has one type)
      shards/00000.tar          img2dataset WebDataset: KEY.jpg, KEY.json (metadata), KEY.txt (caption)
      shards/00001.tar          the same, cut in the middle of a member
      broken.jsonl              one row per planted input defect
      broken.json               a LLaVA list cut off after a few good elements
    media/images/, media/videos/    files the manifests name (as ../media/... from manifests/)
      agentic.jsonl             hand-built think-with-image QA (synthetic/coldstart.py): a word in faint
                                letters ({"task": "ocr"}), scenes turned by 90/180/270 degrees
    benchmark/bench.jsonl, benchmark/media/   "synthbench": QA items for decontamination
    scenes.jsonl                one record per picture and clip (synthetic/coldstart.py): what the synthetic
                                reasoner (mixture/reasoner.py) knows about each picture
    truth.jsonl                 one line per input row the pipeline sees, sorted by (source, source_ref)

A truth line says what the row is and what must happen to it:

    source, source_ref, id      as the pipeline names the row (id = schemas.sample.sample_id)
    kind                        caption_image | caption_video | qa_image | qa_video | cold_start | chat |
                                interleaved | text, or broken when the row never becomes a Sample
    task                        the task validate gives the row; null for broken rows
    expect                      null if the current pipeline keeps the row, else {stage, reason, detected_by}
    future                      null, or what a later stage (decode, near_dedupe, semantic_dedupe,
                                decontaminate) will do to a row the current pipeline keeps
    caption_correct             for caption pairs: false where one fact was changed on purpose
    dup_group, dup_kept         exact-duplicate group; the member with the smallest id is kept
    near_dup_of, near_dup_kind, jaccard     near duplicates: source_ref of the original, text|image|video,
                                and for text the word 5-gram Jaccard (synthetic.language.jaccard)
    contaminated_by             {"benchmark": "synthbench", "item": "b003", "kind": "image"|"text"}
    media_defect, scene_cut     what is wrong with (or special about) the row's media
    media                       [{path (relative to out_dir; "#" marks a member of a container), kind,
                                width, height, fps, frames, duration_s}], null where unknown

Every count of ordinary rows is multiplied by `scale`; each planted defect appears once.
Each section draws from its own RNG, seeded from (seed, section name), so the bytes depend
only on (seed, scale) and the library versions, never on the clock or the file system.
"""
from __future__ import annotations

import json
import os
from collections import Counter, defaultdict
from typing import Optional


from synthetic import sources
from synthetic.tree import Row, Tree


def generate(out_dir: str, seed: int = 0, scale: int = 1, video_scale: Optional[int] = None) -> dict:
    """Write the corpus under out_dir (replacing a previous one there) and return summary counts.
    `video_scale` (default: scale) multiplies the motion clips alone (caption and QA videos): a
    video-heavy corpus for `trainer.evidence` without scaling every other section too."""
    tree = Tree(out_dir, seed)
    bench = sources.benchmark(tree)
    captions, table_copy = sources.captions(tree, scale)
    tree.jsonl("captions.jsonl", captions)
    tree.parquet("table.parquet", sources.table(tree, scale, table_copy))
    sources.shards(tree, scale)
    tree.jsonl("qa.jsonl", sources.qa(tree, scale, bench))
    tree.jsonl("videos.jsonl", sources.videos(tree, scale if video_scale is None else video_scale))
    tree.json_array("llava.json", sources.llava(tree, scale))
    tree.jsonl("chat.jsonl", sources.chat(tree, scale))
    tree.jsonl("agentic.jsonl", sources.agentic(tree, scale))
    tree.jsonl("broken.jsonl", sources.broken_lines(tree))
    tree.json_array("broken.json", sources.broken_array(tree), cut_in_last=True)
    _resolve_exact_duplicates(tree.rows)
    return _finish(tree, len(bench))


def generate_primer(out_dir: str, seed: int = 0, clips: int = 800) -> dict:
    """A curriculum's first corpus under out_dir: `clips` one-shape motion clips with correct captions
    (manifests/primer.jsonl), and the benchmark a curation recipe decontaminates against."""
    tree = Tree(out_dir, seed)
    bench = sources.benchmark(tree)
    tree.jsonl("primer.jsonl", sources.primer_videos(tree, clips))
    return _finish(tree, len(bench))


def _finish(tree: Tree, bench_items: int) -> dict:
    """scenes.jsonl and truth.jsonl of every row written, and the summary counts."""
    rows = sorted(tree.rows, key=lambda r: (r.source, r.ref))
    tree.save("scenes.jsonl", b"".join(json.dumps(r, sort_keys=True).encode() + b"\n"
                                       for r in sorted(tree.scenes, key=lambda r: r["path"])))
    tree.save("truth.jsonl", b"".join(json.dumps(r.truth(), ensure_ascii=False).encode() + b"\n"
                                      for r in rows))
    return _summary(rows, tree, bench_items)


def corpus_recipe(cfg, root: str):
    """`cfg` (a schemas.config.Config) set to read the corpus at root: its manifests as the
    input, its media folder as an allowed media root (manifests name media as ../media/...,
    outside the input's own folder), and its benchmark, synthbench, when the recipe names none."""
    import dataclasses

    from schemas.config import BenchmarkConfig, InputConfig

    ingest = dataclasses.replace(cfg.ingest, media_roots=[*cfg.ingest.media_roots, corpus_media_root(root)])
    cfg = dataclasses.replace(cfg, ingest=ingest)
    if not cfg.decontaminate.benchmarks:
        bench = BenchmarkConfig(name="synthbench", path=os.path.join(root, "benchmark", "bench.jsonl"))
        cfg = dataclasses.replace(cfg, decontaminate=dataclasses.replace(cfg.decontaminate, benchmarks=[bench]))
    return cfg.with_inputs([InputConfig(path=os.path.join(root, "manifests"), source=None, format="auto")])


def corpus_media_root(root: str) -> str:
    """The corpus's media folder: what `ingest.media_roots` must allow for its manifests."""
    return os.path.join(root, "media")


# --- duplicates and summary ----------------------------------------------------------------
def _resolve_exact_duplicates(rows: list[Row]) -> None:
    """In each exact-duplicate group the row with the smallest id is kept (filters.exact)."""
    groups: dict[str, list[Row]] = defaultdict(list)
    for r in rows:
        if r.dup_group:
            groups[r.dup_group].append(r)
    for members in groups.values():
        kept = min(members, key=lambda r: r.id)
        for r in members:
            r.dup_kept = r is kept
            if r is not kept:
                r.expect = ("exact_dedupe", "exact_duplicate")


def _summary(rows: list[Row], tree: Tree, bench_items: int) -> dict:
    def counts(values) -> dict:
        return dict(sorted(Counter(v for v in values if v is not None).items()))

    return {
        "rows": len(rows),
        "kept_now": sum(r.expect is None for r in rows),
        "kinds": counts(r.kind for r in rows),
        "tasks": counts(r.task for r in rows),
        "rejected_now": counts(f"{r.expect[0]}/{r.expect[1]}" for r in rows if r.expect),
        "rejected_later": counts(f"{r.future[0]}/{r.future[1]}" for r in rows if r.future),
        "media_defects": counts(r.media_defect for r in rows),
        "wrong_captions": sum(r.caption_correct is False for r in rows),
        "scene_cuts": sum(r.scene_cut for r in rows),
        "exact_duplicate_groups": len({r.dup_group for r in rows if r.dup_group}),
        "near_duplicates": counts(r.near_dup_kind for r in rows),
        "contaminated": counts(r.contaminated_by["kind"] for r in rows if r.contaminated_by),
        "benchmark_items": bench_items,
        "image_files": sum(rel.startswith("media/images/") for rel in tree.sizes),
        "video_files": sum(rel.startswith("media/videos/") for rel in tree.sizes),
        "files": len(tree.sizes),
        "bytes": sum(tree.sizes.values()),
    }
