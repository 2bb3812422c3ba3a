"""pHash against a scipy DCT reference, and the set-bits MinHash against datasketch."""
import numpy as np
import scipy.fft
from datasketch import MinHash
from PIL import Image

from tests.dedupe_data import encode, synth_image
from filters.phash import SetBitsMinHasher, bits_jaccard, hamming, phash64, set_bits
from media.frames import decode_image


def _reference_phash(rgb):
    """imagehash.phash's recipe, written with scipy: grey, 32x32 Lanczos, DCT-II both axes,
    8x8 low frequencies above their median; first coefficient is the top bit."""
    grey = np.asarray(Image.fromarray(rgb).convert("L").resize((32, 32), Image.Resampling.LANCZOS), dtype=float)
    low = scipy.fft.dct(scipy.fft.dct(grey, axis=0), axis=1)[:8, :8]
    return int("".join("1" if b else "0" for b in (low > np.median(low)).ravel()), 2)


def test_phash_matches_reference_and_is_stable():
    for seed in range(10):
        arr = synth_image(seed)
        h = phash64(arr)
        assert h == _reference_phash(arr)
        assert len(set_bits(h)) == 32                   # median split: half the bits set
        assert phash64(decode_image(encode(arr, "PNG"))) == h
        assert hamming(phash64(decode_image(encode(arr, "JPEG", 70))), h) <= 4
    assert hamming(phash64(synth_image(1)), phash64(synth_image(2))) > 10


def test_bits_jaccard():
    assert bits_jaccard(0b1011, 0b1011) == 1.0
    assert bits_jaccard(0b1100, 0b0110) == 1 / 3
    assert bits_jaccard(0, 0) == 0.0                     # no bits: no evidence of a match
    assert set_bits(0b101) == [0, 2]


def test_set_bits_minhash_equals_datasketch():
    hasher = SetBitsMinHasher(128, 1)
    for seed in range(5):
        h = phash64(synth_image(seed))
        m = MinHash(num_perm=128, seed=1)
        m.update_batch([str(i).encode() for i in set_bits(h)])
        assert np.array_equal(hasher.signature(h), m.hashvalues)
    assert (hasher.signature(0) == 0xFFFFFFFF).all()
    assert hasher.signatures([]).shape == (0, 128)
