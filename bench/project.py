"""`python -m bench.project --tokens 600e9 [--mix video=0.5,image=0.4,text=0.1] [--from bench.json ...]`

What curating a corpus of that many kept tokens costs: per stage, the work (clips, video seconds,
pictures, documents, recaption tokens), the rate one core or one GPU sustains, core-hours and
GPU-hours, and the cluster that finishes it in --days. Every figure is a flag with a default;
the rates default to what this repository's stage benchmarks printed (README, "Benchmarks") or,
for GPU paths never run here, to published figures (flag help says which), and `--from` reads
the JSON a benchmark printed (`python -m bench.decode > decode.json`) instead:

    bench.decode    throughput.video_seconds_per_s_per_core      -> --video_s_per_core_s
    bench.dedupe    minhash.vectorised.from_text_docs_per_s      -> --minhash_docs_per_core_s
    bench.score     clip.stage_images_per_s (CPU)                -> --clip_images_per_core_s
    bench.pipeline  per_row_ms.direct_in_process                 -> --cpu_ms_per_row

    kept tokens x mix ─▶ kept samples per modality ─▶ input samples (/ (1 - reject_share))
        ─▶ per stage: work / rate ─▶ core-hours, GPU-hours ─▶ nodes for --days at --utilisation

Prints one JSON report (`--markdown` adds the README table). A projection, not a measurement:
every assumption is in the report next to the result.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any, Optional

MODALITIES = ("video", "image", "text")
# (flag, JSON path in a benchmark report) for --from
FROM_BENCH = {
    "video_s_per_core_s": ("decode", ("throughput", "video_seconds_per_s_per_core")),
    "minhash_docs_per_core_s": ("dedupe", ("minhash", "vectorised", "from_text_docs_per_s")),
    "clip_images_per_core_s": ("score", ("clip", "stage_images_per_s")),
    "cpu_ms_per_row": ("pipeline", ("per_row_ms", "direct_in_process")),
}


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.project", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    a = ap.add_argument
    a("--tokens", type=float, default=600e9, help="kept tokens (text + visual) the corpus should hold")
    a("--mix", default="video=0.5,image=0.4,text=0.1", help="share of kept tokens by modality")
    a("--from", dest="bench_files", nargs="*", default=[], help="benchmark JSON reports to take rates from")
    a("--days", type=float, default=14.0, help="wall-clock days the run may take")
    a("--utilisation", type=float, default=0.7, help="share of paid machine time doing useful work")
    a("--cores_per_node", type=int, default=32, help="vCPUs per CPU worker (e.g. n2-standard-32)")
    a("--gpus_per_node", type=int, default=8, help="GPUs per GPU node")
    a("--reject_share", type=float, default=0.35, help="share of input rows rejected by all stages together")
    # the corpus
    a("--video_s", type=float, default=30.0, help="average video length, seconds")
    a("--video_tokens", type=float, default=11_000.0,
      help="tokens per kept video sample (Keye preview: 2 fps, ~180 tokens per frame, capped at 24,576)")
    a("--image_tokens", type=float, default=900.0, help="tokens per kept image sample (visual + text)")
    a("--text_tokens", type=float, default=700.0, help="tokens per kept text-only sample")
    a("--clip_frames_per_video", type=float, default=8.0, help="frames CLIP scores per video (score.video_max_frames)")
    a("--recaption_share", type=float, default=0.2, help="share of kept caption rows sent to the VLM")
    a("--caption_share", type=float, default=0.6, help="share of kept image/video rows that are captions")
    a("--recaption_output_tokens", type=float, default=150.0, help="tokens a VLM writes per recaption request")
    a("--recaption_rates", type=float, default=3.0, help="requests per video row (recaption.video_fps has 3 rates)")
    # rates: measured here (CPU) or published (GPU)
    a("--video_s_per_core_s", type=float, default=15.2,
      help="seconds of video one core decodes, samples, resizes, measures and encodes per second (bench.decode)")
    a("--images_per_core_s", type=float, default=60.0,
      help="images one core decodes, resizes, measures and encodes per second (assumed: ~4x a 30-frame clip's work)")
    a("--minhash_docs_per_core_s", type=float, default=13_140.0,
      help="documents one core shingles and signs per second (bench.dedupe, from raw text)")
    a("--lsh_us_per_doc", type=float, default=190.0,
      help="LSH bucketing + connected components, core-microseconds per document (bench.dedupe, DirectRunner)")
    a("--faiss_vectors_per_core_s", type=float, default=26_000.0,
      help="vectors per core-second through k-means assignment + in-cluster range search (bench.dedupe: 200k in 7.7 s)")
    a("--cpu_ms_per_row", type=float, default=1.0,
      help="core-ms per row for ingest, validate, text, tokens and writing (bench.pipeline without media)")
    a("--clip_images_per_gpu_s", type=float, default=1500.0,
      help="CLIP ViT-B images per GPU-second (clip-retrieval: ~1,500/s on one RTX 3080; anchors.md)")
    a("--clip_images_per_core_s", type=float, default=11.0, help="CLIP images per core-second (bench.score, CPU)")
    a("--vlm_output_tokens_per_gpu_s", type=float, default=6400.0,
      help="VLM output tokens per GPU-second (datatrove vLLM sweep: Qwen3-8B ~6.4k/s on H100; anchors.md)")
    a("--nemo_clips_per_node_s", type=float, default=12.0,
      help="NeMo Curator nightly gate: split + transcode + embed at >= 12.0 clips/s on one 8-GPU node (anchors.md)")
    a("--nemo_clip_s", type=float, default=10.0, help="seconds per NeMo clip (its splitter's typical clip length)")
    a("--markdown", action="store_true", help="also print the README table")
    return ap.parse_args(argv)


def _dig(d: Any, path: tuple[str, ...]) -> Optional[float]:
    for key in path:
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    return float(d) if isinstance(d, (int, float)) else None


def apply_bench_files(args: argparse.Namespace) -> dict[str, str]:
    """Take rates from benchmark reports; returns flag -> where the value came from."""
    used = {}
    for path in args.bench_files:
        with open(path, encoding="utf-8") as f:
            report = json.load(f)
        for flag, (bench, keys) in FROM_BENCH.items():
            if str(report.get("bench", "")).endswith(bench) and (value := _dig(report, keys)) is not None:
                setattr(args, flag, value)
                used[flag] = f"{path}: {'.'.join(keys)}"
    return used


def parse_mix(text: str) -> dict[str, float]:
    mix = {}
    for part in text.split(","):
        name, _, share = part.partition("=")
        if name.strip() not in MODALITIES:
            raise SystemExit(f"--mix: {name!r} is not one of {MODALITIES}")
        mix[name.strip()] = float(share)
    total = sum(mix.values())
    if total <= 0:
        raise SystemExit("--mix: shares must add up to more than 0")
    return {m: mix.get(m, 0.0) / total for m in MODALITIES}


def project(args: argparse.Namespace) -> dict[str, Any]:
    mix = parse_mix(args.mix)
    per_sample = {"video": args.video_tokens, "image": args.image_tokens, "text": args.text_tokens}
    kept = {m: args.tokens * mix[m] / per_sample[m] for m in MODALITIES}
    inputs = {m: kept[m] / (1 - args.reject_share) for m in MODALITIES}
    rows_in = sum(inputs.values())
    recaption_rows = (kept["video"] + kept["image"]) * args.caption_share * args.recaption_share
    recaption_requests = recaption_rows + kept["video"] * args.caption_share * args.recaption_share * (
        args.recaption_rates - 1)
    clip_pictures = (kept["video"] * args.clip_frames_per_video + kept["image"]) / (1 - args.reject_share / 2)
    stages = [  # (stage, work, unit, rate, per) ; per: "core" or "gpu"
        ("ingest, validate, text, tokens, write", rows_in, "rows", 1e3 / args.cpu_ms_per_row, "core"),
        ("media: video decode + sampling", inputs["video"] * args.video_s, "video seconds",
         args.video_s_per_core_s, "core"),
        ("media: images", inputs["image"], "images", args.images_per_core_s, "core"),
        ("near dedupe: MinHash", rows_in, "documents", args.minhash_docs_per_core_s, "core"),
        ("near dedupe: LSH + components", rows_in, "documents", 1e6 / args.lsh_us_per_doc, "core"),
        ("CLIP scoring", clip_pictures, "pictures", args.clip_images_per_gpu_s, "gpu"),
        ("semantic dedupe + decontamination", inputs["video"] + inputs["image"], "vectors",
         args.faiss_vectors_per_core_s, "core"),
        ("recaptioning (VLM)", recaption_requests * args.recaption_output_tokens, "output tokens",
         args.vlm_output_tokens_per_gpu_s, "gpu"),
    ]
    rows = []
    for name, work, unit, rate, per in stages:
        hours = work / rate / 3600
        rows.append({"stage": name, "work": round(work), "unit": unit, "rate": rate, "per": per,
                     "core_hours": round(hours) if per == "core" else 0, "gpu_hours": round(hours) if per == "gpu" else 0})
    core_h = sum(r["core_hours"] for r in rows)
    gpu_h = sum(r["gpu_hours"] for r in rows)
    wall_h = args.days * 24 * args.utilisation
    cpu_nodes = math.ceil(core_h / wall_h / args.cores_per_node)
    gpu_nodes = math.ceil(gpu_h / wall_h / args.gpus_per_node)
    clip_cpu_h = clip_pictures / args.clip_images_per_core_s / 3600
    nemo_clips = inputs["video"] * args.video_s / args.nemo_clip_s
    return {
        "bench": "project", "tokens": args.tokens, "mix": mix,
        "kept_samples": {m: round(v) for m, v in kept.items()}, "input_rows": round(rows_in),
        "stages": rows, "core_hours": core_h, "gpu_hours": gpu_h,
        "cluster": {"days": args.days, "utilisation": args.utilisation,
                    "cpu_nodes": cpu_nodes, "cores_per_node": args.cores_per_node,
                    "gpu_nodes": gpu_nodes, "gpus_per_node": args.gpus_per_node},
        "clip_on_cpu_core_hours_instead": round(clip_cpu_h),
        "nemo_curator": {"clips": round(nemo_clips), "node_hours_at_gate": round(nemo_clips / args.nemo_clips_per_node_s / 3600),
                         "ours_video_core_hours": next(r["core_hours"] for r in rows if r["stage"].startswith("media: video"))},
        "assumptions": {k: v for k, v in vars(args).items() if k not in ("markdown", "bench_files")},
    }


def markdown(report: dict[str, Any]) -> str:
    lines = ["| stage | work | rate | core-hours | GPU-hours |", "|---|---|---|---|---|"]
    for r in report["stages"]:
        lines.append(f"| {r['stage']} | {r['work']:.3g} {r['unit']} | {r['rate']:,.0f} per {r['per']}-s | "
                     f"{r['core_hours']:,} | {r['gpu_hours']:,} |")
    c = report["cluster"]
    lines.append(f"| **total** | {report['input_rows']:.3g} input rows | | **{report['core_hours']:,}** | "
                 f"**{report['gpu_hours']:,}** |")
    lines.append("")
    lines.append(f"Cluster for {c['days']:g} days at {c['utilisation']:.0%} utilisation: {c['cpu_nodes']} CPU nodes of "
                 f"{c['cores_per_node']} cores and {c['gpu_nodes']} GPU nodes of {c['gpus_per_node']} GPUs.")
    n = report["nemo_curator"]
    lines.append(f"NeMo Curator's video gate (split + transcode + embed, 12 clips/s per 8-GPU node) would spend "
                 f"{n['node_hours_at_gate']:,} 8-GPU node-hours on the same video ({n['clips']:.3g} clips); this "
                 f"engine's video stage: {n['ours_video_core_hours']:,} core-hours "
                 f"({n['ours_video_core_hours'] / c['cores_per_node']:,.0f} {c['cores_per_node']}-core node-hours).")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    used = apply_bench_files(args)
    report = project(args)
    report["rates_from_benchmarks"] = used
    json.dump(report, sys.stdout, indent=2)
    sys.stdout.write("\n")
    if args.markdown:
        print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
