"""`python -m bench.motion_capacity`: can the tiny Keye model learn the direction of motion at all?

    direction-only clips (synthetic/scenes.py: one shape, or --two of them with a second shape on the
    other axis or still), captioned by synthetic/language.py, laid out by trainer/template.py
      ─ the tiny recipe's model, optimizer and schedule (trainer/), a plain packed-batch loop ─▶
    trainer/motion_probe.py on fresh clips: the direction picked at "moves from ___", with the frames in
    order and reversed, before and after training

The evidence run (trainer.evidence) trains on such clips, curated, as its primer stage; this bench
isolates the architecture and the optimizer from the data and the loader (rows drawn at random, so a
step's clips are mixed). What it showed: the tiny model learns directions from
clean clips (fresh-clip accuracy 1.0, every pick flips when the frames are reversed), after a plateau
at chance whose length grows with the visual tokens per clip and with two-shape clips; a folder's
curated rows leave it after `--warm-steps` on generated clips (README, "Evidence"). One worker holds
the clips' encoded frames and the model; CPU minutes per 1,000 steps.
"""
from __future__ import annotations

import argparse
import io
import time
from typing import Optional

import numpy as np
import torch
from PIL import Image

from bench.common import emit, ratio


def clip_row(rng: np.random.Generator, index: int, width: int, height: int, frames: int, two: float,
             tokenizer, layout: str, fmt: str = "png", reversed_share: float = 0.0):
    """(training Sample, ProbeClip or None) of one synthetic clip, its token counts as the pipeline stores
    them; `reversed_share` of the captions name the first shape's direction backwards (as the corpus's
    wrong captions do), the probe clip keeps the true one."""
    from keye.chat import count_tokens
    from schemas.sample import ContentPart, MediaItem, Message, Sample
    from synthetic.language import motion_caption
    from synthetic.scenes import DIRECTIONS, Clip, clip_frames, random_scene
    from synthetic.sources import reversed_caption
    from trainer.motion_probe import ProbeClip

    scene = random_scene(rng, width, height, 2 if rng.random() < two else 1)
    first = DIRECTIONS[int(rng.integers(4))]
    other = (DIRECTIONS[2:] if first in DIRECTIONS[:2] else DIRECTIONS[:2]) + (None,)
    clip = Clip(scene, (first, other[int(rng.integers(3))])[:len(scene.shapes)], fps=2, frames=frames)
    blobs = []
    for frame in clip_frames(clip):
        buf = io.BytesIO()
        Image.fromarray(np.asarray(frame)).save(buf, "JPEG" if fmt == "jpg" else "PNG", quality=90)
        blobs.append(buf.getvalue())
    members = [f"c{index}.0.{k:03d}.{fmt}" for k in range(frames)]
    item = MediaItem(kind="video", uri=f"c{index}", width=width, height=height, members=members,
                     frame_timestamps=[k / clip.fps for k in range(frames)], frame_types=[0] * frames,
                     visual_tokens=(width // 28) * (height // 28) * frames)
    caption = motion_caption(clip)
    said = reversed_caption(clip) if rng.random() < reversed_share else caption
    sample = Sample(id=f"c{index}", source="motion_capacity", source_ref="", task="caption", media=[item],
                    messages=[Message("user", [ContentPart("video", media_index=0)]),
                              Message("assistant", [ContentPart("text", text=said)])],
                    blobs=dict(zip(members, blobs)))
    sample.text_tokens, sample.visual_tokens = count_tokens(sample.messages, sample.media, tokenizer, None, layout)
    return sample, (ProbeClip(item, blobs, caption) if len(scene.shapes) == 1 else None)


def resized(sample, scale: float):
    """The row with its video frames at `scale` of their side (multiples of 28) and its counts to match."""
    for item in sample.media:
        if item.kind != "video" or scale == 1.0 or item.fast_height:
            continue
        w, h = (max(28, round(v * scale / 28) * 28) for v in (item.width, item.height))
        for m in item.members:
            buf = io.BytesIO()
            Image.open(io.BytesIO(sample.blobs[m])).convert("RGB").resize((w, h), Image.BICUBIC).save(
                buf, "JPEG", quality=90)
            sample.blobs[m] = buf.getvalue()
        tokens = (w // 28) * (h // 28) * len(item.members)
        sample.visual_tokens += tokens - item.visual_tokens
        item.width, item.height, item.visual_tokens = w, h, tokens
    return sample


def folder_rows(data: str, fresh: int, scale: float):
    """(training rows, held-out ProbeClips, layout, system prompt): a pipeline output folder's video rows;
    the last `fresh` caption rows whose first shape moves are held out."""
    from trainer.folders import OutputFolder, folder_samples
    from trainer.motion_probe import row_clip

    folder = OutputFolder.open(data)
    rows, probes = [], []
    for s in folder_samples(folder):
        if len(s.media) == 1 and s.media[0].kind == "video":
            s = resized(s, scale)
            clip = row_clip(s)
            if clip is not None:
                probes.append((len(rows), clip))
            rows.append(s)
    held = {i for i, _ in probes[-fresh:]}
    return ([r for i, r in enumerate(rows) if i not in held], [p for _, p in probes[-fresh:]],
            folder.layout, folder.system_prompt)


def main(argv: Optional[list[str]] = None) -> int:
    from keye.tokenizer import KEYE_SPECIAL_TOKENS, load_tokenizer
    from schemas.train import load_train_config
    from trainer.data import frame_pixels
    from trainer.model import build_model, set_trainable
    from trainer.motion_probe import probe_model
    from trainer.template import encode_sample
    from trainer.train import lr_lambda, make_optimizer

    ap = argparse.ArgumentParser(prog="python -m bench.motion_capacity", description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="configs/train_tiny.yaml")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a trainer recipe override")
    ap.add_argument("--frame", default="168x168", help="frame WIDTHxHEIGHT in pixels (multiples of 28)")
    ap.add_argument("--frames", default="4", help="frames per clip, or a list to draw from: 4,6,8")
    ap.add_argument("--reversed-share", type=float, default=0.0, help="share of training captions reversed")
    ap.add_argument("--data", help="train on this pipeline output folder's video rows instead (the last --fresh "
                                   "caption rows held out)")
    ap.add_argument("--frame-scale", type=float, default=1.0, help="with --data: video frames at this share of the side")
    ap.add_argument("--warm-steps", type=int, default=0,
                    help="with --data: the first N steps on --clips generated clips instead (a curriculum)")
    ap.add_argument("--two", type=float, default=0.0, help="share of training clips with a second shape")
    ap.add_argument("--clips", type=int, default=800, help="training clips")
    ap.add_argument("--fresh", type=int, default=96, help="fresh one-shape clips to score")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=8, help="clips per step (one packed sequence)")
    ap.add_argument("--layout", default="keye_1_5")
    ap.add_argument("--format", choices=("png", "jpg"), default="png")
    ap.add_argument("--probe-every", type=int, default=0, help="also probe every N steps (the learning curve)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    width, height = (int(v) for v in args.frame.split("x"))
    counts = [int(v) for v in args.frames.split(",")]
    cfg = load_train_config(args.config, ["model.visual_positions=sincos2d", *args.set,    # evidence's default
                                          f"optim.max_steps={args.steps}", f"run.seed={args.seed}"])
    tok = load_tokenizer(cfg.model.tokenizer)

    def clips(seed: int, n: int, two: float, reversed_share: float):
        rng = np.random.default_rng(seed)
        return [clip_row(rng, i, width, height, int(rng.choice(counts)), two, tok, args.layout, args.format,
                         reversed_share) for i in range(n)]

    if args.data:
        train, fresh, layout, system_prompt = folder_rows(args.data, args.fresh, args.frame_scale)
    else:
        train = [s for s, _ in clips(args.seed, args.clips, args.two, args.reversed_share)]
        fresh = [p for _, p in clips(args.seed + 1_000, args.fresh, 0.0, 0.0)]
        layout, system_prompt = args.layout, None
    encoded = [encode_sample(s, tok, layout, system_prompt) for s in train]
    warm = [s for s, _ in clips(args.seed, args.clips, args.two, args.reversed_share)] if args.data and args.warm_steps else []
    warm_encoded = [encode_sample(s, tok, args.layout, None) for s in warm]
    vocab = set(KEYE_SPECIAL_TOKENS.values()).union(*(e.input_ids for e in encoded + warm_encoded))
    vocab.update(tok.encode(" ".join(p.caption for p in fresh)))
    model = build_model(cfg.model, tok, "cpu", cfg.run.seed, sorted(vocab) if cfg.model.vocab_subset else None)
    set_trainable(model, cfg.stage.trainable)
    optimizer = make_optimizer(model, cfg)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg))

    def scored() -> dict:
        model.eval()
        out = probe_model(model, tok, layout, system_prompt, fresh)
        model.train()
        return out

    before = scored()
    order = np.random.default_rng(args.seed + 1)
    t0, losses, curve = time.perf_counter(), [], []
    for step in range(1, args.steps + 1):
        rows, enc = (warm, warm_encoded) if warm and step <= args.warm_steps else (train, encoded)
        picked = order.integers(len(rows), size=args.batch)
        ids = torch.tensor([sum((enc[i].input_ids for i in picked), [])])
        labels = torch.tensor([sum((enc[i].labels for i in picked), [])])
        positions = torch.tensor([[p for i in picked for p in range(len(enc[i]))]])
        pixels = [p for i in picked for p in frame_pixels(rows[i], enc[i])]
        loss, n = model(ids, labels, positions, [[len(enc[i]) for i in picked]], pixels)
        (loss / n).backward()
        if cfg.optim.clip_norm:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.clip_norm)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()) / n)
        if args.probe_every and step % args.probe_every == 0 and step < args.steps:
            got = scored()
            curve.append({"step": step, "accuracy": got["accuracy"], "flips_when_reversed": got["flips_when_reversed"]})
    seconds = time.perf_counter() - t0
    after = scored()
    emit("motion_capacity", {
        "clips": {"train": len(train), "fresh": after["clips"], "data": args.data or "synthetic",
                  "warm_steps_on_generated_clips": args.warm_steps if warm else 0,
                  "frame": None if args.data else args.frame, "frames": None if args.data else args.frames,
                  "frame_scale": args.frame_scale,
                  "visual_tokens_per_clip": [min(s.visual_tokens for s in train), max(s.visual_tokens for s in train)],
                  "two_shape_share": args.two, "reversed_share": args.reversed_share},
        "steps": args.steps, "batch": args.batch, "overrides": args.set, "seconds": round(seconds, 1),
        "loss": {"first_50": round(float(np.mean(losses[:50])), 4), "last_50": round(float(np.mean(losses[-50:])), 4)},
        "untrained": before, "trained": after, "curve": curve,
        "accuracy_vs_untrained": ratio(after["accuracy"], before["accuracy"]),
        "accuracy_vs_chance": ratio(after["accuracy"], after["chance"])})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
