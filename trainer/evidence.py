"""`python -m trainer.evidence --work DIR`: does the engine's output train a model?

    make_sample --scale 4 --video-scale 64 (seed 0) ─ curate (configs/evidence.yaml) ─▶ DIR/data
    make_sample --primer-clips 800 (one moving shape a clip) ─ curate (the same recipe) ─▶ DIR/primer_data
                                                    (subprocesses: the trainer never imports Beam)
    tiny model (+ model.visual_positions: sincos2d, or --set model.visual_positions=mrope)
      ─ [stage 0: SigLIP pre-training of the vision tower, --stage0-steps] ─ stage 1 (projector only)
      ─ primer (all parameters, DIR/primer_data: the easy end of a curriculum, --primer-steps; 0: none)
      ─▶ stage 2 (all parameters, DIR/data)
    held-out: the corpus generator with another seed (seed 1): its correct image and video captions
    caption each held-out picture (trainer.generate: the pipeline's media code, the data's chat layout)
    score per attribute against the truth: F1 of the colours, shapes, motion directions and background
    named, over all items and over the items with one shape (where a list of shape kinds cannot be
    half right by naming several)

Chance is measured, not assumed: each held-out item scored against every other held-out item's true
caption (a fluent caption that ignores the picture), plus 1/K for K possible values. `picture_gain`
compares the true captions' loss given the picture and given a grey one (does the model look?);
`trainer.motion_probe` asks whether it reads motion, on training clips and held-out ones.
Prints one JSON report; README ("Evidence") holds a run's table and how its causes were found.
`--phase train` stops after the checkpoints (a GPU machine without Beam or PyAV, given DIR/data built
elsewhere: bench/evidence_gpu.py runs several such trainings at once); `--phase score` scores them.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from typing import Callable, Optional, Sequence, Union

from trainer.vision_pretrain import VISION_FOLDER, PretrainConfig, pretrain

COLOURS = ("red", "green", "blue", "yellow", "purple", "orange")
SHAPES = ("circle", "square", "triangle")
DIRECTIONS = ("left to right", "right to left", "top to bottom", "bottom to top")
# Scored per kind: the attributes (colour, shape, direction), plus the background, the picture's
# largest area (does the model read the picture at all?).
KIND_ATTRS = (("image", ("colour", "shape", "background")), ("video", ("colour", "shape", "direction", "background")))
PAIR = re.compile(rf"\b({'|'.join(COLOURS)}) ({'|'.join(SHAPES)})s?\b")      # "red circle(s)"
MOTION = re.compile(rf"\b({'|'.join(SHAPES)})s? (moves? from ({'|'.join(DIRECTIONS)})|stays? still)")
BACKGROUNDS = ("white", "light gray", "cream", "pale blue", "dark gray")
BACKGROUND = re.compile(rf" on an? ({'|'.join(BACKGROUNDS)}) (?:gradient )?background")


def attributes(caption: str) -> dict[str, set]:
    """What a caption says: colours and shapes of the named shapes, and directions of motion
    ("still" for a shape that stays still). The background phrase is dropped first (its
    "pale blue" is not a shape's colour)."""
    low = caption.lower()
    text = low.split(" on a ")[0]
    pairs = PAIR.findall(text)
    return {"colour": {c for c, _ in pairs}, "shape": {k for _, k in pairs},
            "direction": {d or "still" for _, _, d in MOTION.findall(text)},
            "background": set(BACKGROUND.findall(low)[:1])}


def f1(pred: set, true: set) -> float:
    if not pred and not true:
        return 1.0
    hit = len(pred & true)
    return 0.0 if hit == 0 else 2 * hit / (len(pred) + len(true))


def score(captions: list[str], truths: list[str], attrs: tuple[str, ...]) -> dict[str, float]:
    out = {}
    for a in attrs:
        vals = [f1(attributes(c)[a], attributes(t)[a]) for c, t in zip(captions, truths)]
        out[a] = round(sum(vals) / max(1, len(vals)), 4)
    return out


def shape_count(caption: str) -> int:
    return len(PAIR.findall(caption.lower().split(" on a ")[0]))


def groups(items: list[dict]) -> dict[str, tuple[list[int], tuple[str, ...]]]:
    """Scored groups: each kind, and each kind's one-shape items (where a set of shape kinds cannot be
    half right by listing several, so shape and direction are scored on one named object)."""
    out = {}
    for kind, attrs in KIND_ATTRS:
        idx = [i for i, it in enumerate(items) if it["kind"] == kind]
        out[kind] = (idx, attrs)
        out[f"{kind}_one_shape"] = ([i for i in idx if shape_count(items[i]["caption"]) == 1], attrs)
    return out


def heldout(root: str, seed: int, images: int, videos: int) -> list[dict]:
    """Correct caption rows of the corpus generated with `seed`: [{kind, path, caption}]. Videos get
    their own scale (about 7 correct caption clips per unit), so many held-out videos cost no more images."""
    from synthetic.corpus import generate

    scales = {"seed": seed, "scale": max(1, -(-images // 30)), "video_scale": max(1, -(-videos // 7))}
    made = os.path.join(root, "heldout.json")
    if not os.path.exists(made) or json.load(open(made, encoding="utf-8")) != scales:
        generate(root, **scales)
        with open(made, "w", encoding="utf-8") as f:
            json.dump(scales, f)
    good = set()
    for line in open(os.path.join(root, "truth.jsonl"), encoding="utf-8"):
        t = json.loads(line)
        if t["caption_correct"] and not (t["media_defect"] or t["scene_cut"] or t["near_dup_of"] or t["dup_group"]):
            good.add(t["source_ref"])
    items = {"image": [], "video": []}
    for name in ("captions.jsonl", "videos.jsonl"):
        for i, line in enumerate(open(os.path.join(root, "manifests", name), encoding="utf-8"), start=1):
            row = json.loads(line)
            if f"{name}:{i}" not in good or "caption" not in row:
                continue
            kind = "image" if "image" in row else "video"
            path = os.path.normpath(os.path.join(root, "manifests", row[kind]))
            items[kind].append({"kind": kind, "path": path, "caption": row["caption"], "id": row["id"]})
    return items["image"][:images] + items["video"][:videos]


def caption_all(checkpoint: str, items: list[dict], max_new_tokens: int) -> list[str]:
    from trainer.generate import Generator

    gen = Generator(checkpoint)
    return [gen.answer_file(it["path"], it["kind"], "", max_new_tokens=max_new_tokens) for it in items]


def evaluate(checkpoint: str, items: list[dict], max_new_tokens: int) -> dict:
    caps = caption_all(checkpoint, items, max_new_tokens)
    out = {"examples": [{"id": it["id"], "truth": it["caption"], "caption": c} for it, c in zip(items, caps)][:6]}
    for name, (idx, attrs) in groups(items).items():
        out[name] = score([caps[i] for i in idx], [items[i]["caption"] for i in idx], attrs)
    return out


def picture_gain(checkpoint: str, items: list[dict]) -> dict:
    """Does the model read the picture? Per kind, the true caption's loss (nats per token, teacher
    forced) given the picture, and given a flat grey picture of the same size: equal losses mean the
    captions are written from the language alone."""
    import torch

    from schemas.sample import ContentPart, Message, Sample
    from trainer.data import decode_frame
    from trainer.generate import Generator
    from trainer.template import IGNORE, encode_sample

    gen = Generator(checkpoint)
    model, tok = gen.model, gen.tokenizer
    sums: dict[str, list[float]] = {}
    with torch.inference_mode():
        for it in items:
            with open(it["path"], "rb") as f:
                item, blobs = gen.process(it["kind"], f.read())
            sample = Sample(id=it["id"], source="evidence", source_ref="", task="caption", media=[item],
                            messages=[Message("user", [ContentPart(it["kind"], media_index=0)])],
                            blobs=dict(zip(item.members, blobs)))
            enc = encode_sample(sample, tok, gen.layout, gen.system_prompt, prompt_only=True)
            answer = tok.encode(it["caption"]) + [gen.stop[0]]
            ids = torch.tensor([enc.input_ids + answer])
            labels = torch.tensor([[IGNORE] * len(enc.input_ids) + answer])
            pixels = [decode_frame(sample.blobs[fr.member], fr.height, fr.width, sample.id) for fr in enc.frames]
            row = sums.setdefault(it["kind"], [0.0, 0.0, 0])
            for k, pix in enumerate((pixels, [torch.zeros_like(p) for p in pixels])):   # 0: mid-grey
                loss, n = model(ids, labels, torch.arange(ids.shape[1])[None], [[ids.shape[1]]], pix)
                row[k] += float(loss)
            row[2] += n
    return {kind: {"loss": round(a / n, 4), "loss_grey_picture": round(b / n, 4)} for kind, (a, b, n) in sums.items()}


def chance(items: list[dict]) -> dict:
    """1/K, and each item scored against every other item's true caption in its group (a fluent
    caption that ignores the picture), averaged over all such pairs."""
    out = {"uniform": {"colour": round(1 / len(COLOURS), 4), "shape": round(1 / len(SHAPES), 4),
                       "direction": round(1 / len(DIRECTIONS), 4), "background": round(1 / len(BACKGROUNDS), 4)}}
    for name, (idx, attrs) in groups(items).items():
        truths = [items[i]["caption"] for i in idx]
        pairs = [(truths[j], t) for i, t in enumerate(truths) for j in range(len(truths)) if j != i]
        out[f"{name}_other_caption"] = score([c for c, _ in pairs], [t for _, t in pairs], attrs)
    out["items"] = {name: len(idx) for name, (idx, _) in groups(items).items()}
    return out


def run(cmd: list[str]) -> None:
    print("+", " ".join(cmd), file=sys.stderr)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def curated(work: str, name: str, make_args: list[str], recipe: str) -> str:
    """WORK/NAME: the corpus `make_sample make_args` writes (WORK/NAME_corpus) curated with `recipe`;
    reused when rerun with the same values (WORK/NAME.json keeps them)."""
    from synthetic.corpus import corpus_media_root

    corpus, data = os.path.join(work, f"{name}_corpus"), os.path.join(work, name)
    made, wanted = os.path.join(work, f"{name}.json"), {"make_sample": make_args, "recipe": recipe}
    if os.path.exists(os.path.join(data, "manifest.json")):
        built = json.load(open(made, encoding="utf-8")) if os.path.exists(made) else wanted
        if "scale" in built:        # written before the primer: {scale, video_scale, recipe}
            built = {"make_sample": ["--scale", str(built["scale"]), "--video-scale", str(built["video_scale"])],
                     "recipe": built["recipe"]}
        if built != wanted:
            raise SystemExit(f"{data} was built with {built}, not {wanted}: use another --work")
        return data
    run([sys.executable, "-m", "pipelines.make_sample", "--output", corpus, *make_args])
    bench = os.path.join(corpus, "benchmark", "bench.jsonl")
    run([sys.executable, "-m", "pipelines.curate", "--config", recipe,
         "--input", os.path.join(corpus, "manifests"), "--output", data, "--progress_s", "0",
         "--set", f"decontaminate.benchmarks=[{{name: synthbench, path: {bench}}}]",
         "--set", f"ingest.media_roots={json.dumps([corpus_media_root(corpus)])}"])
    with open(made, "w", encoding="utf-8") as f:
        json.dump(wanted, f)
    return data


def build_data(work: str, scale: int, video_scale: int, recipe: str) -> str:
    """The training data: the corpus (seed 0) curated with `recipe`: WORK/data."""
    return curated(work, "data", ["--scale", str(scale), "--video-scale", str(video_scale)], recipe)


def build_primer(work: str, clips: int, recipe: str) -> str:
    """The curriculum's first data: `clips` one-shape motion clips (seed 0) curated with `recipe`: WORK/primer_data."""
    return curated(work, "primer_data", ["--primer-clips", str(clips)], recipe)


def untrained(work: str, data: str, overrides: list[str]) -> str:
    """The stage-1 recipe's model before any step, saved as a checkpoint (the 'before' row)."""
    from keye.tokenizer import load_tokenizer
    from schemas.train import load_train_config
    from trainer.data import data_vocab, open_sources
    from trainer.model import build_model, save_weights

    folder = os.path.join(work, "untrained")
    cfg = load_train_config(os.path.join("configs", "train_tiny_stage1.yaml"), overrides)
    tok = load_tokenizer(cfg.model.tokenizer)
    sources = open_sources([(data, 1.0)])
    model = build_model(cfg.model, tok, "cpu", cfg.run.seed, data_vocab(sources, tok))
    save_weights(model, folder, cfg.model.tokenizer, cfg.model.merge, sources[0].folder.render_info())
    return folder


def train_stage(recipe: str, run_dir: str, data: str, overrides: list[str]) -> str:
    from schemas.train import load_train_config
    from trainer.checkpoint import latest
    from trainer.train import train

    cfg = load_train_config(os.path.join("configs", recipe), overrides)
    if not (latest(run_dir) or "").endswith(f"step-{cfg.optim.max_steps:06d}"):
        train(cfg, run_dir, [(data, 1.0)])
    return latest(run_dir)


OVERRIDES = "overrides.json"


def recipe_overrides(seed: int, pack_length: int, device: str, extra: list[str]) -> list[str]:
    """The trainer overrides both stages share (and the untrained model is built with)."""
    return [f"run.seed={seed}", "run.tensorboard=false", "run.progress=never", f"data.pack_length={pack_length}",
            "run.checkpoint_every=500", "model.visual_positions=sincos2d", f"run.device={device}", *extra]


def train_all(work: str, data: str, overrides: list[str], stage1_steps: int,
              stage2_steps: Union[int, Callable[[str], int]], stage2_overrides: Sequence[str] = (),
              stage0: Optional[PretrainConfig] = None, primer: Optional[tuple[str, int]] = None) -> dict[str, str]:
    """The before checkpoint, (stage 0: the vision tower's SigLIP pre-training), stage 1, (the primer:
    all parameters on `primer`'s (folder, steps) one-shape clips, a curriculum's easy end) and stage 2:
    {before, stage1, [primer], stage2} checkpoint folders. `stage2_steps` may be a function of stage 1's
    run folder (bench.evidence_gpu fits stage 2 to a time budget from stage 1's step time). The
    overrides are kept in WORK/overrides.json, so a scoring machine rebuilds the same untrained model
    instead of receiving it (stage 0's tower is in the stage checkpoints' weights)."""
    os.makedirs(work, exist_ok=True)
    with open(os.path.join(work, OVERRIDES), "w", encoding="utf-8") as f:
        json.dump(overrides, f)
    before = untrained(work, data, overrides)
    vision = []
    if stage0 is not None and stage0.steps > 0:
        folder = os.path.join(work, "stage0", VISION_FOLDER)
        if not os.path.exists(os.path.join(folder, "config.json")):
            pretrain(os.path.join("configs", "train_tiny_stage1.yaml"), overrides, [data],
                     os.path.join(work, "stage0"), stage0)
        vision = [f"model.vision={folder}"]
    stage1 = os.path.join(work, "stage1")
    out = {"before": before,
           "stage1": train_stage("train_tiny_stage1.yaml", stage1, data,
                                 overrides + vision + [f"optim.max_steps={stage1_steps}"])}
    init = out["stage1"]
    if primer is not None and primer[1] > 0:
        init = out["primer"] = train_stage("train_tiny.yaml", os.path.join(work, "primer"), primer[0],
                                           overrides + [f"optim.max_steps={primer[1]}", f"model.init={init}"])
    steps = stage2_steps(stage1) if callable(stage2_steps) else stage2_steps
    out["stage2"] = train_stage("train_tiny.yaml", os.path.join(work, "stage2"), data,
                                overrides + [f"optim.max_steps={steps}", f"model.init={init}", *stage2_overrides])
    return out


def trained(work: str, data: str) -> dict[str, str]:
    """The checkpoints of a `--phase train` run (perhaps made on another machine); the untrained model
    is rebuilt from WORK/overrides.json when it did not travel."""
    from trainer.checkpoint import latest

    ckpts = {"before": os.path.join(work, "untrained"), "stage1": latest(os.path.join(work, "stage1")),
             "stage2": latest(os.path.join(work, "stage2"))}
    missing = [k for k, v in ckpts.items() if not v]
    if os.path.isdir(os.path.join(work, "primer")):
        ckpts["primer"] = latest(os.path.join(work, "primer"))
    if missing:
        raise SystemExit(f"{work}: no {', '.join(missing)} checkpoint to score (run --phase train first)")
    if not os.path.exists(os.path.join(ckpts["before"], "model.safetensors")):
        with open(os.path.join(work, OVERRIDES), encoding="utf-8") as f:
            untrained(work, data, json.load(f))
    return ckpts


def score_all(args, ckpts: dict[str, str], items: list[dict], data: str) -> dict:
    """The report: chance, each checkpoint's scores on the held-out items, the picture gain, and the
    motion probe on training and held-out clips (trainer/motion_probe.py: fitted, generalised, or
    blind to the order of frames)."""
    from trainer.motion_probe import probe

    out = {"heldout": {"images": sum(i["kind"] == "image" for i in items),
                       "videos": sum(i["kind"] == "video" for i in items)},
           "chance": chance(items),
           "before": evaluate(ckpts["before"], items, args.max_new_tokens),
           "after_stage1": evaluate(ckpts["stage1"], items, args.max_new_tokens)}
    if ckpts.get("primer"):
        out["after_primer"] = evaluate(ckpts["primer"], items, args.max_new_tokens)
        out["motion_probe_after_primer"] = probe(ckpts["primer"], data, items)
    out["after_stage2"] = evaluate(ckpts["stage2"], items, args.max_new_tokens)
    out["picture_gain_after_stage2"] = picture_gain(ckpts["stage2"], items)
    out["motion_probe_after_stage2"] = probe(ckpts["stage2"], data, items)
    return out


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m trainer.evidence", description=__doc__.split("\n")[0])
    ap.add_argument("--work", required=True, help="folder for the data, runs and report (reused when rerun)")
    ap.add_argument("--scale", type=int, default=4, help="synthetic corpus scale for the training data")
    ap.add_argument("--video-scale", type=int, default=64, help="... and for its caption and QA videos alone")
    ap.add_argument("--primer-clips", type=int, default=800, help="one-shape motion clips of the primer's data")
    ap.add_argument("--primer-steps", type=int, default=2000,
                    help="steps on them after stage 1, before stage 2 (a curriculum; 0: none)")
    ap.add_argument("--recipe", default=os.path.join("configs", "evidence.yaml"), help="curation recipe")
    ap.add_argument("--stage1-steps", type=int, default=40)
    ap.add_argument("--stage2-steps", type=int, default=1500)
    ap.add_argument("--stage0-steps", type=int, default=0,
                    help="SigLIP pre-training steps of the vision tower before stage 1 (trainer.vision_pretrain)")
    ap.add_argument("--stage0-batch", type=int, default=PretrainConfig.batch_size)
    ap.add_argument("--pack-length", type=int, default=2048,
                    help="tokens a step (about 11 primer clips): 1,024 (5-6 clips) left directions at chance")
    ap.add_argument("--images", type=int, default=120, help="held-out images (about a quarter show one shape)")
    ap.add_argument("--videos", type=int, default=48, help="held-out videos")
    ap.add_argument("--max-new-tokens", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto", help="training device (run.device): auto, cpu, cuda")
    ap.add_argument("--phase", choices=("all", "data", "train", "score"), default="all",
                    help="data: build --work's data only; train: data and checkpoints only (a GPU machine "
                         "without Beam or PyAV needs the data built elsewhere); score: score the checkpoints "
                         "already in --work")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a trainer recipe override for both stages (e.g. optim.lr_scale={vision.*: 0.5})")
    ap.add_argument("--set-stage2", action="append", default=[], metavar="KEY=VALUE",
                    help="a trainer recipe override for stage 2 alone")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    t0 = time.time()
    data = build_data(args.work, args.scale, args.video_scale, args.recipe)
    primer = None
    if args.primer_steps and args.phase != "score":        # scoring reads the stage checkpoints, not the primer's rows
        primer = (build_primer(args.work, args.primer_clips, args.recipe), args.primer_steps)
    if args.phase == "data":
        print(json.dumps({"data": data, "primer": primer and primer[0], "seconds": round(time.time() - t0)}))
        return 0
    if args.phase == "score":
        ckpts = trained(args.work, data)
    else:
        overrides = recipe_overrides(args.seed, args.pack_length, args.device, args.set)
        stage0 = PretrainConfig(steps=args.stage0_steps, batch_size=args.stage0_batch, seed=args.seed)
        ckpts = train_all(args.work, data, overrides, args.stage1_steps, args.stage2_steps, args.set_stage2, stage0,
                          primer)
        if args.phase == "train":
            print(json.dumps({"checkpoints": ckpts, "seconds": round(time.time() - t0)}))
            return 0
    t_train = time.time() - t0
    items = heldout(os.path.join(args.work, "heldout"), seed=1, images=args.images, videos=args.videos)
    report = score_all(args, ckpts, items, data)
    report["seconds"] = {"data_and_training": round(t_train), "total": round(time.time() - t0)}
    with open(os.path.join(args.work, "evidence.json"), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1)
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
