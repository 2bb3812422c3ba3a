"""MinHash signatures, LSH banding and Jaccard estimates, vectorised over batches of documents.

The reference is datasketch 2.x (`MinHash`, default scheme "affine32", default hash
`sha1_hash32`): for the same seed and number of permutations, `MinHasher.signatures`
returns exactly the `hashvalues` that `datasketch.MinHash.bulk` computes for the same
shingles, bit for bit (tests/test_minhash.py checks it). The permutation parameters are
taken from datasketch itself, so they cannot drift.

What is faster than `MinHash.bulk`: bulk builds one MinHash object per document and runs a
few small numpy calls per document; here a batch of documents is one flat array of shingle
hashes, permuted in one (shingles x num_perm) uint32 operation and reduced per document with
`np.minimum.reduceat`. SHA-1 per shingle stays (it is the definition of the hash), but its
digests are joined and read with one `np.frombuffer` instead of a `struct.unpack` each.

Banding: (bands, rows) come from datasketch's `_optimal_param` for the Jaccard threshold and
the false positive / negative weights; each band's `rows` values hash to a 64-bit bucket key.
"""
from __future__ import annotations

import functools
import hashlib
import re
import unicodedata
from typing import Iterable, Sequence

import numpy as np

MAX_HASH32 = np.uint32(0xFFFFFFFF)
_FMIX32 = (np.uint32(16), np.uint32(0x85EBCA6B), np.uint32(13), np.uint32(0xC2B2AE35), np.uint32(16))
WORD_RE = re.compile(r"\w+", re.UNICODE)
_SPACE_RE = re.compile(r"\s+", re.UNICODE)


# --- shingles -------------------------------------------------------------------------------
def normalize_for_shingles(text: str, lowercase: bool = True) -> str:
    """NFKC, optional lower-casing: the text that shingles are cut from."""
    text = unicodedata.normalize("NFKC", text)
    return text.lower() if lowercase else text


def words(text: str, lowercase: bool = True) -> list[str]:
    """Runs of \\w in the normalised text: the one tokenizer of word shingles and of
    decontamination n-grams, so the two never split a text differently."""
    return WORD_RE.findall(normalize_for_shingles(text, lowercase))


def word_shingles(text: str, n: int = 5, lowercase: bool = True) -> list[bytes]:
    """Distinct word n-grams (words: runs of \\w, so punctuation never splits a match).
    A text with fewer than n words gives one shingle of all its words; no words: none."""
    ws = words(text, lowercase)
    if not ws:
        return []
    if len(ws) < n:
        return [" ".join(ws).encode("utf-8")]
    return list({" ".join(ws[i:i + n]).encode("utf-8") for i in range(len(ws) - n + 1)})


def char_shingles(text: str, n: int = 5, lowercase: bool = True) -> list[bytes]:
    """Distinct character n-grams over the whitespace-collapsed text (for scripts that do not
    separate words with spaces). Shorter texts give one shingle of the whole text."""
    text = _SPACE_RE.sub(" ", normalize_for_shingles(text, lowercase)).strip()
    if not text:
        return []
    if len(text) < n:
        return [text.encode("utf-8")]
    return list({text[i:i + n].encode("utf-8") for i in range(len(text) - n + 1)})


def shingles(text: str, kind: str = "word", n: int = 5, lowercase: bool = True) -> list[bytes]:
    if kind == "word":
        return word_shingles(text, n, lowercase)
    if kind == "char":
        return char_shingles(text, n, lowercase)
    raise ValueError(f"unknown shingle kind {kind!r} (word | char)")


# --- hashing --------------------------------------------------------------------------------
def sha1_hash32_many(items: Iterable[bytes]) -> np.ndarray:
    """datasketch.hashfunc.sha1_hash32 of each item (first 4 bytes of SHA-1, little endian)."""
    sha1 = hashlib.sha1
    joined = b"".join(map(lambda b: sha1(b).digest(), items))
    digests = np.frombuffer(joined, dtype=np.uint8).reshape(-1, 20)
    return np.ascontiguousarray(digests[:, :4]).view("<u4").ravel().astype(np.uint32, copy=False)


def fmix32(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finaliser (datasketch pre-mixes every input hash with it)."""
    s1, m1, s2, m2, s3 = _FMIX32
    h = h ^ (h >> s1)
    h = h * m1
    h = h ^ (h >> s2)
    h = h * m2
    return h ^ (h >> s3)


@functools.lru_cache(maxsize=16)
def _permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from datasketch import MinHash

    m = MinHash(num_perm=num_perm, seed=seed, scheme="affine32")
    a, b = m.permutations
    return np.ascontiguousarray(a, dtype=np.uint32), np.ascontiguousarray(b, dtype=np.uint32)


class MinHasher:
    """Signatures for many documents at once; equal to datasketch's MinHash (affine32, SHA-1)."""

    def __init__(self, num_perm: int = 128, seed: int = 1, chunk_shingles: int = 16384) -> None:
        if num_perm < 1:
            raise ValueError("num_perm must be positive")
        self.num_perm, self.seed = num_perm, seed
        self.a, self.b = _permutations(num_perm, seed)
        # shingles permuted per step: a (num_perm x chunk) uint32 buffer, 8 MB at 128 x 16384,
        # small enough to stay in cache-friendly territory (one big temporary is ~20x slower)
        self._chunk = max(1, chunk_shingles)

    def signatures(self, docs: Sequence[Sequence[bytes]]) -> np.ndarray:
        """(len(docs), num_perm) uint32; a document without shingles gets all 0xFFFFFFFF
        (datasketch's empty MinHash)."""
        out = np.full((len(docs), self.num_perm), MAX_HASH32, dtype=np.uint32)
        lengths = np.fromiter((len(d) for d in docs), dtype=np.int64, count=len(docs))
        if not lengths.sum():
            return out
        hv = fmix32(sha1_hash32_many(b for d in docs for b in d))
        self._reduce(hv, lengths, out)
        return out

    def _reduce(self, hv: np.ndarray, lengths: np.ndarray, out: np.ndarray) -> None:
        """Permute and min-reduce in cache-sized chunks of the flat shingle array: a
        (num_perm, chunk) buffer is reused, documents may straddle chunk boundaries."""
        nonempty = np.flatnonzero(lengths)
        ends = np.cumsum(lengths)
        ne_starts = (ends - lengths)[nonempty]
        ne_ends = ends[nonempty]
        total = int(ends[-1])
        chunk = self._chunk
        a, b = self.a[:, None], self.b[:, None]
        buf = np.empty((self.num_perm, min(chunk, total)), dtype=np.uint32)
        for lo in range(0, total, chunk):
            hi = min(lo + chunk, total)
            i0 = int(np.searchsorted(ne_ends, lo, side="right"))
            i1 = int(np.searchsorted(ne_starts, hi, side="left"))
            view = buf[:, :hi - lo]
            np.multiply(a, hv[None, lo:hi], out=view)
            view += b
            red = np.minimum.reduceat(view, np.maximum(ne_starts[i0:i1], lo) - lo, axis=1)
            docs = nonempty[i0:i1]
            out[docs] = np.minimum(out[docs], red.T)

    def signature(self, doc: Sequence[bytes]) -> np.ndarray:
        return self.signatures([doc])[0]


# --- LSH ------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=64)
def optimal_bands(threshold: float, num_perm: int, false_positive_weight: float = 0.5,
                  false_negative_weight: float = 0.5) -> tuple[int, int]:
    """(bands, rows) minimising the weighted false positive and negative probability mass,
    exactly as datasketch.MinHashLSH chooses them."""
    from datasketch.lsh import _optimal_param

    return tuple(int(x) for x in _optimal_param(threshold, num_perm, false_positive_weight,
                                                false_negative_weight))


def candidate_probability(jaccard: float, bands: int, rows: int) -> float:
    """Probability that two documents with this Jaccard share at least one band (the S-curve)."""
    return 1.0 - (1.0 - jaccard ** rows) ** bands


def band_hashes(sigs: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """(n, bands) uint64 bucket keys: a 64-bit hash of each band's `rows` signature values.
    The band index is mixed in, so equal values in different bands never share a bucket."""
    sigs = np.asarray(sigs, dtype=np.uint32)
    if bands * rows > sigs.shape[1]:
        raise ValueError(f"{bands} bands x {rows} rows > {sigs.shape[1]} permutations")
    n = sigs.shape[0]
    out = np.empty((n, bands), dtype=np.uint64)
    prime = np.uint64(0x100000001B3)
    for band in range(bands):
        h = np.full(n, np.uint64(0xCBF29CE484222325) ^ np.uint64(band * 0x9E3779B97F4A7C15 & (2**64 - 1)),
                    dtype=np.uint64)
        for j in range(band * rows, (band + 1) * rows):
            h ^= sigs[:, j].astype(np.uint64)
            h *= prime
        out[:, band] = fmix64(h)
    return out


def fmix64(h: np.ndarray) -> np.ndarray:
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xFF51AFD7ED558CCD)
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xC4CEB9FE1A85EC53)
    return h ^ (h >> np.uint64(33))


# --- Jaccard --------------------------------------------------------------------------------
def estimate_jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Share of equal signature values: datasketch's MinHash.jaccard."""
    return float(np.count_nonzero(np.asarray(a) == np.asarray(b))) / len(a)


def pairwise_estimates(sigs: np.ndarray, block: int = 64, bits: int = 32) -> np.ndarray:
    """(k, k) float32 matrix of estimated Jaccard between every pair of k signatures; for
    b-bit signatures (`low_bits`) the share of equal values is corrected for chance matches."""
    sigs = np.asarray(sigs)
    k, m = sigs.shape
    out = np.empty((k, k), dtype=np.float32)
    for lo in range(0, k, block):
        eq = sigs[lo:lo + block, None, :] == sigs[None, :, :]
        out[lo:lo + block] = eq.sum(axis=2, dtype=np.int32) / np.float32(m)
    return bbit_correct(out, bits) if bits < 32 else out


# --- b-bit signatures -----------------------------------------------------------------------
_BIT_DTYPES = {8: np.uint8, 16: np.uint16, 32: np.uint32}


def bits_dtype(bits: int) -> np.dtype:
    """The dtype `low_bits` returns, so readers of b-bit bytes need not build an array to learn it."""
    if bits not in _BIT_DTYPES:
        raise ValueError(f"bits must be one of {sorted(_BIT_DTYPES)}")
    return np.dtype(_BIT_DTYPES[bits])


def low_bits(sigs: np.ndarray, bits: int) -> np.ndarray:
    """The lowest `bits` bits of each signature value (b-bit minwise hashing, Li and Koenig
    2010): what LSH buckets carry for verification, 4x smaller at 8 bits than the full
    signature. Two values of a pair agree with probability J + (1 - J) / 2^bits."""
    return np.asarray(sigs, dtype=np.uint32).astype(bits_dtype(bits))


def bbit_correct(share_equal, bits: int):
    """Unbiased Jaccard estimate from the share of equal b-bit values: (p - c) / (1 - c),
    c = 2^-bits the chance that two unrelated values agree; clipped at 0."""
    c = 2.0 ** -bits
    return np.maximum((np.asarray(share_equal, dtype=np.float64) - c) / (1.0 - c), 0.0).astype(np.float32)


def exact_jaccard(a: Iterable, b: Iterable) -> float:
    a, b = set(a), set(b)
    if not a and not b:
        return 0.0
    return len(a & b) / len(a | b)
