"""Benchmark decontamination: the benchmark index and the three rules (Keye-VL appendix A + text).

Rules, each against every benchmark item:

* pHash (pre-training rows, Keye-VL): each image or frame -> 64-bit pHash -> set of set bits
  -> MinHash (128 permutations) -> LSH bands -> candidates -> exact Jaccard of the bit sets
  > threshold (0.95). A row with several images is contaminated if any one matches.
* CLIP (post-training rows, Keye-VL): CLIP image cosine > 0.98 AND CLIP text cosine > 0.5
  against the *same* benchmark item. Needs `clip_image` and `clip_text` vectors on both sides:
  training rows get them from the CLIP stage (Sample.embeddings), benchmark rows from that
  stage or precomputed in the manifest (`"embeddings": {"clip_image": [...], "clip_text": [...]}`).
  Without vectors the rule is inactive, never a reason to drop.
* n-grams: a word n-gram (13 by default, NeMo Curator's legacy TaskDecontamination; datatrove
  uses 12) of the row's texts that also occurs in a benchmark item's question or answer.
  Texts shorter than n words contribute no n-gram (short questions are left to the image
  rules: matching them verbatim would drop every "What is in the image?"), and n-grams found
  in more than `max_items_per_ngram` benchmark items are the benchmark's prompt template, not
  its content, and are left out of the index.

The index holds only the benchmarks (thousands to tens of thousands of items), so it is
built once and broadcast to every worker as a side input (pipelines/decontaminate.py); the
training corpus is streamed past it. N-grams are 64-bit BLAKE2b hashes: stable across
processes (Python's hash() is salted), so index and rows may be built on different workers.
"""
from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Iterable, Optional

import numpy as np

from filters.minhash import band_hashes, optimal_bands, words
from filters.phash import SetBitsMinHasher, bits_jaccard
from filters.semantic import normalize_rows


def text_ngrams(texts: Iterable[str], n: int = 13, lowercase: bool = True) -> np.ndarray:
    """Distinct 64-bit hashes of the word n-grams of each text (n-grams never span texts)."""
    out = set()
    for text in texts:
        ws = words(text, lowercase)
        for i in range(len(ws) - n + 1):
            gram = " ".join(ws[i:i + n]).encode("utf-8")
            out.add(int.from_bytes(hashlib.blake2b(gram, digest_size=8).digest(), "little"))
    return np.fromiter(out, dtype=np.uint64, count=len(out))


@dataclass
class BenchmarkItem:
    benchmark: str
    item_id: str
    phashes: list[int] = field(default_factory=list)       # every image / frame of the item
    ngrams: np.ndarray = field(default_factory=lambda: np.empty(0, np.uint64))
    clip_image: Optional[np.ndarray] = None                 # (n_images, d) unit rows
    clip_text: Optional[np.ndarray] = None                  # (d,) unit


@dataclass(frozen=True)
class Match:
    benchmark: str
    item_id: str
    rule: str                      # phash | clip | ngram
    similarity: float              # Jaccard, image cosine or shared n-grams
    extra: dict = field(default_factory=dict)

    def detail(self) -> str:
        return json.dumps({"benchmark": self.benchmark, "item": self.item_id, "rule": self.rule,
                           "similarity": round(self.similarity, 4), **self.extra}, sort_keys=True)


@dataclass
class RowFeatures:
    phashes: list[int]                      # every image / frame of the row
    ngrams: np.ndarray
    clip_image: Optional[np.ndarray] = None  # (n, d)
    clip_text: Optional[np.ndarray] = None   # (d,)


@dataclass
class Verdict:
    match: Optional[Match]
    ngram_overlap: float = 0.0
    phash_jaccard: float = 0.0
    clip_image_cos: Optional[float] = None


def _unit_rows(x) -> Optional[np.ndarray]:
    """A vector or (n, d) matrix as unit rows; None for a missing or empty one."""
    if x is None:
        return None
    x = np.asarray(x, dtype=np.float32)
    return normalize_rows(x.reshape(1, -1) if x.ndim == 1 else x) if x.size else None


class DecontamIndex:
    """Everything the rules need about the benchmarks, in one picklable object."""

    def __init__(self, items: list[BenchmarkItem], phash_threshold: float = 0.95, num_perm: int = 128,
                 seed: int = 1, false_positive_weight: float = 0.05, false_negative_weight: float = 0.95,
                 image_threshold: float = 0.98, text_threshold: float = 0.5, min_ngram_matches: int = 1,
                 max_items_per_ngram: int = 0) -> None:
        self.items = sorted(items, key=lambda it: (it.benchmark, it.item_id))
        self.phash_threshold, self.image_threshold = phash_threshold, image_threshold
        self.text_threshold, self.min_ngram_matches = text_threshold, min_ngram_matches
        self.hasher = SetBitsMinHasher(num_perm, seed)
        self.bands, self.rows = optimal_bands(phash_threshold, num_perm, false_positive_weight,
                                              false_negative_weight)
        # pHash LSH: (band, bucket) -> [(item index, hash)]
        self.buckets: dict[tuple[int, int], list[tuple[int, int]]] = defaultdict(list)
        entries = [(i, h) for i, it in enumerate(self.items) for h in dict.fromkeys(it.phashes) if h]
        if entries:
            keys = band_hashes(self.hasher.signatures([h for _, h in entries]), self.bands, self.rows)
            for (i, h), row in zip(entries, keys):
                for band, key in enumerate(row.tolist()):
                    self.buckets[band, key].append((i, h))
        self.buckets = dict(self.buckets)
        self.num_images = len(entries)
        # n-grams: hash -> item indices
        grams: dict[int, list[int]] = defaultdict(list)
        for i, it in enumerate(self.items):
            for g in it.ngrams.tolist():
                grams[g].append(i)
        # An n-gram shared by many items is the benchmark's prompt template ("answer with the
        # option's letter from the given choices ..."), not its content: matching it would drop
        # every training row that uses the same instruction. 0 keeps all.
        limit = max_items_per_ngram or len(self.items) + 1
        self.template_ngrams = sum(1 for owners in grams.values() if len(owners) > limit)
        self.grams = {g: owners for g, owners in grams.items() if len(owners) <= limit}
        # CLIP: stacked unit image rows with their item, and per-item unit text vectors
        rows, owners, self.clip_texts = [], [], {}
        for i, it in enumerate(self.items):
            img = _unit_rows(it.clip_image)
            if img is not None and it.clip_text is not None:
                rows.append(img)
                owners.extend([i] * len(img))
                self.clip_texts[i] = _unit_rows(it.clip_text)[0]
        self.clip_images = np.concatenate(rows) if rows else None
        self.clip_owner = np.asarray(owners, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.items)

    def stats(self) -> dict:
        return {"items": len(self.items), "images": self.num_images, "ngrams": len(self.grams),
                "template_ngrams_dropped": self.template_ngrams,
                "clip_items": len(self.clip_texts), "bands": self.bands, "rows": self.rows}

    # --- rules ------------------------------------------------------------------------------
    def match_phash(self, phashes: list[int]) -> tuple[Optional[Match], float]:
        hashes = [h for h in dict.fromkeys(phashes) if h]
        if not hashes or not self.buckets:
            return None, 0.0
        keys = band_hashes(self.hasher.signatures(hashes), self.bands, self.rows)
        best, best_j = None, 0.0
        for h, row in zip(hashes, keys):
            seen = set()
            for band, key in enumerate(row.tolist()):
                for i, bh in self.buckets.get((band, key), ()):
                    if (i, bh) in seen:
                        continue
                    seen.add((i, bh))
                    j = bits_jaccard(h, bh)
                    if j > best_j or (j == best_j and best is not None and i < best[0]):
                        best, best_j = (i, h, bh), j
        if best is None or best_j <= self.phash_threshold:
            return None, best_j
        i, h, bh = best
        it = self.items[i]
        return Match(it.benchmark, it.item_id, "phash", best_j,
                     {"phash": f"{h:016x}", "benchmark_phash": f"{bh:016x}"}), best_j

    def match_clip(self, image: Optional[np.ndarray], text: Optional[np.ndarray]) -> tuple[Optional[Match], Optional[float]]:
        img, txt = _unit_rows(image), _unit_rows(text)
        if self.clip_images is None or img is None or txt is None:
            return None, None
        sims = img @ self.clip_images.T                       # (row images, benchmark images)
        best_img = float(sims.max())
        per_item: dict[int, float] = {}
        for bi in np.flatnonzero((sims > self.image_threshold).any(axis=0)).tolist():
            i = int(self.clip_owner[bi])
            per_item[i] = max(per_item.get(i, -1.0), float(sims[:, bi].max()))
        hits = []
        for i, img_cos in per_item.items():
            text_cos = float(self.clip_texts[i] @ txt[0])
            if text_cos > self.text_threshold:
                hits.append((-img_cos, -text_cos, i))
        if not hits:
            return None, best_img
        img_cos, text_cos, i = min(hits)
        it = self.items[i]
        return Match(it.benchmark, it.item_id, "clip", -img_cos, {"text_cosine": round(-text_cos, 4)}), best_img

    def match_ngrams(self, grams: np.ndarray) -> tuple[Optional[Match], float]:
        if not len(grams):
            return None, 0.0
        counts: dict[int, int] = defaultdict(int)
        found = 0
        for g in grams.tolist():
            owners = self.grams.get(g)
            if owners:
                found += 1
                for i in owners:
                    counts[i] += 1
        overlap = found / len(grams)
        if not counts:
            return None, overlap
        n, neg_i = max((c, -i) for i, c in counts.items())
        if n < self.min_ngram_matches:
            return None, overlap
        it = self.items[-neg_i]
        return Match(it.benchmark, it.item_id, "ngram", float(n), {"row_ngram_overlap": round(overlap, 4)}), overlap

    def judge(self, row: RowFeatures, use_phash: bool = True, use_clip: bool = True,
              use_ngram: bool = True) -> Verdict:
        """All enabled rules; the first match in the order phash, clip, ngram is the verdict."""
        v = Verdict(match=None)
        matches = []
        if use_phash:
            m, v.phash_jaccard = self.match_phash(row.phashes)
            matches.append(m)
        if use_clip:
            m, v.clip_image_cos = self.match_clip(row.clip_image, row.clip_text)
            matches.append(m)
        if use_ngram:
            m, v.ngram_overlap = self.match_ngrams(row.ngrams)
            matches.append(m)
        v.match = next((m for m in matches if m is not None), None)
        return v
