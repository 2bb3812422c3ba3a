"""`python -m bench.vision_probe --checkpoint BASE --checkpoint RUN [...]`: does the picture's shape
and motion reach the LLM?

Linear probes on what the LLM receives: each checkpoint's vision encoder + projector tokens of
synthetic pictures with ONE shape (its own seeded RNG: never training data), drawn at a few square
sizes (pixels; one visual token is 28x28), and of clips of one moving shape (4 frames):

    shape      from the picture's tokens pooled (mean and max: where the shape is does not matter)
    direction  from the first and last frames' tokens in place (flat: where the shape is, per frame),
               and pooled (the same tokens without their places: near chance, so the place is the signal)

A ridge classifier fits 70% of the items and is scored on the rest (best ridge strength of a few);
chance is 1/3 (shapes) and 1/4 (directions). The first checkpoint is the baseline the others are
compared with in the same run (`trainer.evidence` writes the untrained model as DIR/untrained).
"""
from __future__ import annotations

import argparse
from typing import Optional

import numpy as np
import torch

from bench.common import emit, ratio

RIDGE = (0.1, 1.0, 10.0, 100.0, 1000.0, 10000.0)


def pixels(rgb: np.ndarray) -> torch.Tensor:
    from trainer.data import PIXEL_MEAN, PIXEL_STD

    t = torch.from_numpy(np.asarray(rgb, dtype=np.float32).copy()).permute(2, 0, 1)
    return (t / 255.0 - PIXEL_MEAN) / PIXEL_STD


def probe_accuracy(x: np.ndarray, y: np.ndarray, classes: int, train_share: float = 0.7) -> float:
    """Held-out accuracy of a one-vs-rest ridge classifier (standardised features)."""
    n_train = int(len(y) * train_share)
    x = x.astype(np.float64)
    mu, sd = x[:n_train].mean(0), x[:n_train].std(0) + 1e-6
    x = (x - mu) / sd
    a, targets = x[:n_train], np.eye(classes)[y[:n_train]]
    best = 0.0
    for lam in RIDGE:   # the dual form when features outnumber items
        if a.shape[1] > a.shape[0]:
            w = a.T @ np.linalg.solve(a @ a.T + lam * np.eye(len(a)), targets)
        else:
            w = np.linalg.solve(a.T @ a + lam * np.eye(a.shape[1]), a.T @ targets)
        best = max(best, float(((x[n_train:] @ w).argmax(1) == y[n_train:]).mean()))
    return round(best, 3)


def probe_items(size: int, n_pictures: int, n_clips: int, seed: int):
    """(pictures, shape labels, clips as 4 frames, direction labels), single-shape, size x size px."""
    from synthetic.scenes import DIRECTIONS, SHAPES, Clip, clip_frames, draw, random_scene

    rng = np.random.default_rng([seed, size])
    pictures, shapes = [], []
    for _ in range(n_pictures):
        scene = random_scene(rng, size, size, 1)
        pictures.append(np.asarray(draw(scene)))
        shapes.append(SHAPES.index(scene.shapes[0].kind))
    clips, directions = [], []
    for i in range(n_clips):
        scene = random_scene(rng, size, size, 1)
        clips.append(list(clip_frames(Clip(scene, (DIRECTIONS[i % 4],), fps=2, frames=4))))
        directions.append(i % 4)
    return pictures, np.array(shapes), clips, np.array(directions)


@torch.inference_mode()
def probe(checkpoint: str, items_by_size: dict[int, tuple]) -> dict:
    from trainer.model import load_trained

    model, _ = load_trained(checkpoint)

    def tokens(frames) -> list[torch.Tensor]:
        return model.encode_frames([pixels(f) for f in frames])

    def pooled(t: torch.Tensor) -> np.ndarray:
        return torch.cat([t.mean(0), t.amax(0)]).float().numpy()

    out = {}
    for size, (pictures, shapes, clips, directions) in items_by_size.items():
        pic = np.stack([pooled(tokens([p])[0]) for p in pictures])
        ends = [tokens([c[0], c[-1]]) for c in clips]
        flat = np.stack([torch.cat([a.flatten(), b.flatten()]).float().numpy() for a, b in ends])
        pool = np.stack([np.concatenate([pooled(a), pooled(b)]) for a, b in ends])
        out[f"{size}px"] = {"shape": probe_accuracy(pic, shapes, 3),
                            "direction_flat": probe_accuracy(flat, directions, 4),
                            "direction_pooled": probe_accuracy(pool, directions, 4)}
    return out


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.vision_probe", description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", action="append", required=True,
                    help="trainer checkpoint folder; repeat it; the first is the baseline")
    ap.add_argument("--sizes", default="84,224", help="picture sides in pixels (84: a shape spans about one token)")
    ap.add_argument("--pictures", type=int, default=450)
    ap.add_argument("--clips", type=int, default=300)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    items = {s: probe_items(s, args.pictures, args.clips, args.seed) for s in sizes}
    results = {ckpt: probe(ckpt, items) for ckpt in args.checkpoint}
    base = results[args.checkpoint[0]]
    ratios = {ckpt: {size: {k: ratio(v, base[size][k]) for k, v in accs.items()} for size, accs in r.items()}
              for ckpt, r in list(results.items())[1:]}
    emit("vision_probe", {"chance": {"shape": round(1 / 3, 3), "direction": 0.25}, "accuracy": results,
                          "vs_baseline": ratios, "pictures": args.pictures, "clips": args.clips})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
