"""filters/minhash.py against datasketch, the reference it must equal bit for bit."""
import random

import numpy as np
import pytest
from datasketch import LeanMinHash, MinHash, MinHashLSH

from filters.minhash import (MinHasher, band_hashes, candidate_probability, char_shingles, estimate_jaccard,
                             exact_jaccard, optimal_bands, pairwise_estimates, sha1_hash32_many, shingles,
                             word_shingles)


def _docs(n, seed=0):
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(3000)]
    docs = [[s.encode() for s in {" ".join(rng.choice(vocab) for _ in range(3)) for _ in range(rng.randint(0, 300))}]
            for _ in range(n)]
    docs[3] = []                       # an empty document
    docs[4] = [b"only one shingle"]
    return docs


@pytest.mark.parametrize("num_perm, seed", [(128, 1), (64, 7), (256, 42)])
def test_signatures_equal_datasketch_bulk_and_update(num_perm, seed):
    docs = _docs(200, seed)
    ours = MinHasher(num_perm, seed, chunk_shingles=997).signatures(docs)   # odd chunk: docs straddle chunks
    ref = np.stack([m.hashvalues for m in MinHash.bulk(docs, num_perm=num_perm, seed=seed)])
    assert ours.dtype == np.uint32 and ours.shape == (200, num_perm)
    assert np.array_equal(ours, ref)
    for d, sig in list(zip(docs, ours))[:20]:
        m = MinHash(num_perm=num_perm, seed=seed)
        for x in d:
            m.update(x)
        assert np.array_equal(sig, m.hashvalues)
        assert np.array_equal(sig, LeanMinHash(m).hashvalues)


def test_empty_batch_and_empty_doc():
    h = MinHasher(16, 1)
    assert h.signatures([]).shape == (0, 16)
    assert (h.signatures([[]]) == 0xFFFFFFFF).all()
    assert np.array_equal(h.signature([b"a", b"b"]), h.signatures([[b"b", b"a", b"a"]])[0])


def test_sha1_hash32_matches_datasketch():
    from datasketch.hashfunc import sha1_hash32

    items = [b"", b"x", "ünïcode".encode(), b"a" * 1000]
    assert sha1_hash32_many(items).tolist() == [sha1_hash32(x) for x in items]
    assert sha1_hash32_many([]).shape == (0,)


def test_estimate_matches_datasketch_jaccard_and_tracks_exact():
    rng = random.Random(3)
    base = [f"t{i}".encode() for i in range(400)]
    other = base[:300] + [f"u{i}".encode() for i in range(100)]
    h = MinHasher(128, 1)
    a, b = h.signatures([base, other])
    ma, mb = MinHash(num_perm=128), MinHash(num_perm=128)
    ma.update_batch(base)
    mb.update_batch(other)
    assert estimate_jaccard(a, b) == ma.jaccard(mb)
    assert abs(estimate_jaccard(a, b) - exact_jaccard(base, other)) < 0.12   # 3 sd at 128 perms
    sigs = h.signatures([base, other, [f"z{rng.random()}".encode() for _ in range(50)]])
    est = pairwise_estimates(sigs, block=2)
    assert est[0, 0] == 1.0 and est[0, 1] == pytest.approx(ma.jaccard(mb)) and est[0, 2] < 0.1
    assert np.allclose(est, est.T)


@pytest.mark.parametrize("threshold", [0.5, 0.8, 0.95])
def test_bands_are_datasketch_choice(threshold):
    lsh = MinHashLSH(threshold=threshold, num_perm=128)
    assert optimal_bands(threshold, 128) == (lsh.b, lsh.r)
    b, r = optimal_bands(threshold, 128, 0.1, 0.9)
    assert b * r <= 128 and b >= lsh.b      # weighting misses more gives more bands
    assert candidate_probability(1.0, b, r) == 1.0 and candidate_probability(0.0, b, r) == 0.0


def test_band_hashes_deterministic_and_band_separated():
    h = MinHasher(128, 1)
    sigs = h.signatures(_docs(50))
    k1 = band_hashes(sigs, 9, 13)
    assert k1.shape == (50, 9) and k1.dtype == np.uint64
    assert np.array_equal(k1, band_hashes(sigs.copy(), 9, 13))
    same = np.tile(sigs[:1, :13], (1, 9))[:, :117]          # identical values in every band
    assert len(set(band_hashes(np.pad(same, ((0, 0), (0, 11))), 9, 13)[0].tolist())) == 9
    twin = sigs[1].copy()
    twin[20] ^= 1                                           # differs in band 1 only
    k = band_hashes(np.stack([sigs[1], twin]), 9, 13)
    assert (k[0] == k[1]).tolist() == [True, False] + [True] * 7
    with pytest.raises(ValueError):
        band_hashes(sigs, 10, 13)


def test_shingles():
    assert set(word_shingles("One two, THREE four five six")) == {b"one two three four five",
                                                                  b"two three four five six"}
    assert len(word_shingles("a b c d e " * 3)) == 5          # distinct shingles only
    assert word_shingles("too short") == [b"too short"]
    assert word_shingles("  ...  ") == []
    assert set(char_shingles("ab  cd", 3)) == {b"ab ", b"b c", b" cd"}
    assert char_shingles("日本語", 5) == ["日本語".encode()]
    assert shingles("a b c d e", "word", 5) == [b"a b c d e"]
    with pytest.raises(ValueError):
        shingles("x", "sentence")


def test_bbit_estimates_track_full_signatures():
    """8-bit values, corrected for chance agreement, estimate Jaccard as well as full ones."""
    from filters.minhash import bbit_correct, low_bits

    rng = random.Random(5)
    h = MinHasher(128, 1)
    errors_full, errors_8 = [], []
    for _ in range(300):
        n = rng.randint(50, 300)
        base = [f"s{rng.random()}".encode() for _ in range(n)]
        k = rng.randint(0, n)
        other = base[:k] + [f"o{rng.random()}".encode() for _ in range(n - k)]
        a, b = h.signatures([base, other])
        truth = exact_jaccard(base, other)
        errors_full.append(estimate_jaccard(a, b) - truth)
        short = low_bits(np.stack([a, b]), 8)
        assert short.dtype == np.uint8
        est8 = pairwise_estimates(short, bits=8)[0, 1]
        errors_8.append(est8 - truth)
    assert abs(np.mean(errors_8)) < 0.01                     # unbiased after the correction
    assert np.std(errors_8) < np.std(errors_full) * 1.15     # and barely noisier
    assert float(bbit_correct(1 / 256, 8)) == 0.0 and float(bbit_correct(1.0, 8)) == 1.0
    with pytest.raises(ValueError):
        low_bits(np.zeros((1, 4), np.uint32), 4)
