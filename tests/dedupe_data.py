"""Planted test data for dedupe and decontamination: texts with known Jaccard, real images.

`planted_texts` builds base documents from a large random vocabulary (unrelated documents
share no word 5-gram) and derives variants by replacing words, some of them variants of
variants (transitive chains). The truth is not the plan: `exact_pairs` recomputes the exact
Jaccard of every pair that shares a shingle (every other pair has Jaccard 0), which is the
brute-force all-pairs answer.
"""
from __future__ import annotations

import io
import random
from collections import defaultdict
from typing import Optional

import numpy as np

from filters.cluster import UnionFind
from filters.minhash import word_shingles
from schemas.sample import ContentPart, MediaItem, Message, Sample, sample_id


def _word(rng: random.Random) -> str:
    return "".join(rng.choice("bcdfghjklmnpqrstvwxz") + rng.choice("aeiou") for _ in range(rng.randint(2, 4)))


def planted_texts(n_docs: int, seed: int = 0, dup_share: float = 0.45,
                  jaccard_ranges: tuple[tuple[float, float], ...] = ((0.5, 1.0),)) -> list[str]:
    """n_docs texts; about dup_share of them are edited copies of an earlier text, with a
    target Jaccard drawn uniformly from one of jaccard_ranges (each range equally likely);
    the achieved Jaccard is what the tests measure, never the target."""
    rng = random.Random(seed)
    vocab = sorted({_word(rng) for _ in range(60000)})
    docs: list[list[str]] = []
    while len(docs) < n_docs:
        if docs and rng.random() < dup_share:
            src = rng.choice(docs[-2000:])          # recent: chains of variants form
            lo, hi = rng.choice(jaccard_ranges)
            target = rng.uniform(lo, hi)
            docs.append(_edit(src, target, vocab, rng))
        else:
            docs.append([rng.choice(vocab) for _ in range(rng.randint(40, 160))])
    return [" ".join(d) for d in docs]


def _edit(words: list[str], target: float, vocab: list[str], rng: random.Random, n: int = 5) -> list[str]:
    """Replace random words until the shingle Jaccard with the source drops to about target."""
    src = set(word_shingles(" ".join(words), n))
    out = list(words)
    while True:
        i = rng.randrange(len(out))
        trial = out[:i] + [rng.choice(vocab)] + out[i + 1:]
        got = set(word_shingles(" ".join(trial), n))
        if len(src & got) / len(src | got) < target:
            return out
        out = trial


def exact_pairs(texts: list[str], threshold: float, n: int = 5) -> dict[tuple[int, int], float]:
    """Every pair (i < j) with exact shingle Jaccard >= threshold, via an inverted index
    (pairs that share no shingle have Jaccard 0, so this is the all-pairs answer)."""
    sets = [set(word_shingles(t, n)) for t in texts]
    postings = defaultdict(list)
    for i, s in enumerate(sets):
        for sh in s:
            postings[sh].append(i)
    inter: dict[tuple[int, int], int] = defaultdict(int)
    for ids in postings.values():
        for a in range(len(ids)):
            for b in range(a + 1, len(ids)):
                inter[ids[a], ids[b]] += 1
    out = {}
    for (i, j), k in inter.items():
        jac = k / (len(sets[i]) + len(sets[j]) - k)
        if jac >= threshold:
            out[i, j] = jac
    return out


def cluster_pairs(labels: list) -> set[tuple[int, int]]:
    """Pairs (i < j) in the same cluster, from one label per item."""
    groups = defaultdict(list)
    for i, lab in enumerate(labels):
        groups[lab].append(i)
    return {(a, b) for g in groups.values() for x, a in enumerate(g) for b in g[x + 1:]}


def closure(n: int, pairs) -> set[tuple[int, int]]:
    uf = UnionFind(n)
    for i, j in pairs:
        uf.union(i, j)
    return cluster_pairs([uf.find(i) for i in range(n)])


def text_sample(text: str, ref: str, source: str = "t", score: Optional[float] = None) -> Sample:
    s = Sample(id=sample_id(source, ref), source=source, source_ref=ref, task="text",
               messages=[Message("assistant", [ContentPart("text", text=text)])])
    s.scores["text_chars"] = float(len(text)) if score is None else score
    return s


# --- images --------------------------------------------------------------------------------
def synth_image(seed: int, w: int = 160, h: int = 120) -> np.ndarray:
    """A procedural RGB image: smooth colour waves, random shapes and sensor-like noise."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(w, h)
    img = np.zeros((h, w, 3))
    for c in range(3):
        for _ in range(3):
            fx, fy, ph = rng.uniform(0.5, 6), rng.uniform(0.5, 6), rng.uniform(0, 2 * np.pi)
            img[..., c] += rng.uniform(20, 60) * np.sin(2 * np.pi * (fx * xx + fy * yy) + ph)
        img[..., c] += rng.uniform(60, 190)
    pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(pil)
    for _ in range(int(rng.integers(3, 9))):
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
        x1, y1 = x0 + int(rng.integers(10, w // 2)), y0 + int(rng.integers(10, h // 2))
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)([x0, y0, x1, y1], fill=colour)
    arr = np.asarray(pil).astype(np.float32) + rng.normal(0, 6, (h, w, 3))
    return np.clip(arr, 0, 255).astype(np.uint8)


def encode(arr: np.ndarray, fmt: str = "JPEG", quality: int = 90, size: Optional[tuple[int, int]] = None) -> bytes:
    from PIL import Image

    im = Image.fromarray(arr)
    if size:
        im = im.resize(size, Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    im.save(buf, fmt, **({"quality": quality} if fmt == "JPEG" else {}))
    return buf.getvalue()


def synth_clip(seed: int, frames: int = 6, w: int = 160, h: int = 120) -> list[np.ndarray]:
    """Frames of a synthetic clip: one scene panning right, with a moving bright square."""
    base = synth_image(seed, w + 8 * frames, h)
    out = []
    for t in range(frames):
        f = base[:, 8 * t:8 * t + w].copy()
        x = 10 + 15 * t
        f[40:60, x:x + 20] = 255
        out.append(np.ascontiguousarray(f))
    return out


def media_sample(ref: str, members: dict[str, bytes], kind: str = "image", text: str = "a caption",
                 source: str = "m", task: Optional[str] = None) -> Sample:
    """A sample with one media item whose members (image, or video frames) are given bytes."""
    sid = sample_id(source, ref)
    names = [f"{sid}.0.{i}.{name}" for i, name in enumerate(members)]
    s = Sample(id=sid, source=source, source_ref=ref, task=task or ("video" if kind == "video" else "caption"),
               messages=[Message("user", [ContentPart(kind, media_index=0)]),
                         Message("assistant", [ContentPart("text", text=text)])],
               media=[MediaItem(kind=kind, uri=f"/x/{ref}", members=names)])
    s.blobs = dict(zip(names, members.values()))
    return s
