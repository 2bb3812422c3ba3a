"""64-bit DCT perceptual hash, and Keye-VL's set-of-set-bits MinHash over it.

`phash64` is the classic pHash (as in the `imagehash` package): grey levels (PIL "L"),
Lanczos resize to 32x32, 2-D DCT-II, the top-left 8x8 low frequencies, one bit per
coefficient above their median; bit 63 is coefficient (0, 0), row-major.

Keye-VL (appendix A) compares images through the *set of positions of set bits* of the
hash: a MinHash with 128 permutations of that set, LSH buckets, then Jaccard > 0.95 on the
candidates. With ~32 set bits, Jaccard > 0.95 means the two sets differ by at most one
position, so the rule is a strict "same hash or one bit off"; it catches re-encodes and
resizes (pHash is stable under them) and crops or edits only when they move at most one bit.
Candidates are verified with the exact Jaccard of the two bit sets, never the estimate.
"""
from __future__ import annotations

import functools
from typing import Iterable

import numpy as np

from filters.minhash import MinHasher

HASH_BITS = 64
_SIZE = 32
_LOW = 8


@functools.lru_cache(maxsize=1)
def _dct_rows() -> np.ndarray:
    """First 8 rows of the unnormalised DCT-II matrix for 32 samples (scipy's default type 2)."""
    k = np.arange(_LOW)[:, None]
    n = np.arange(_SIZE)[None, :]
    return 2.0 * np.cos(np.pi * k * (2 * n + 1) / (2 * _SIZE))


def phash64(rgb: np.ndarray) -> int:
    """64-bit pHash of an RGB (or grey) uint8 image array."""
    from PIL import Image

    arr = np.asarray(rgb, dtype=np.uint8)
    im = Image.fromarray(arr)
    grey = np.asarray(im.convert("L").resize((_SIZE, _SIZE), Image.Resampling.LANCZOS), dtype=np.float64)
    c = _dct_rows()
    low = c @ grey @ c.T                        # == dct(dct(grey, axis=0), axis=1)[:8, :8]
    bits = (low > np.median(low)).ravel()
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


def set_bits(h: int) -> list[int]:
    """Positions (0 = least significant) of the set bits of a 64-bit hash."""
    return [i for i in range(HASH_BITS) if (h >> i) & 1]


def bits_jaccard(a: int, b: int) -> float:
    """Exact Jaccard of the two set-bit sets; two empty sets compare as 0 (no evidence)."""
    union = (a | b).bit_count()
    return (a & b).bit_count() / union if union else 0.0


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


class SetBitsMinHasher:
    """MinHash of the set of set-bit positions; element i is the bytes of str(i), so the
    signature equals datasketch's MinHash(num_perm, seed).update_batch([b"3", b"17", ...]).
    All 64 permuted element hashes are precomputed: a signature is one min over <= 64 rows."""

    def __init__(self, num_perm: int = 128, seed: int = 1) -> None:
        self.num_perm, self.seed = num_perm, seed
        hasher = MinHasher(num_perm, seed)
        self.table = hasher.signatures([[str(i).encode()] for i in range(HASH_BITS)])  # (64, P)

    def signature(self, h: int) -> np.ndarray:
        bits = set_bits(h)
        if not bits:
            return np.full(self.num_perm, 0xFFFFFFFF, dtype=np.uint32)
        return self.table[bits].min(axis=0)

    def signatures(self, hashes: Iterable[int]) -> np.ndarray:
        rows = [self.signature(h) for h in hashes]
        return np.stack(rows) if rows else np.empty((0, self.num_perm), dtype=np.uint32)
