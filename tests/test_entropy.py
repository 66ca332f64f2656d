"""The range coder over integer frequency tables, and the integer softmax that makes them."""

import numpy as np
import pytest
import torch

from dqcodec.format.entropy import PRECISION, SymbolDecoder, SymbolEncoder
from dqcodec.format.intmath import LOG2_FRAC, frequencies


def integer_logits(rng: np.random.Generator, n: int, k: int, spread_bits: float) -> torch.Tensor:
    """Logits in the prior's units (2^-10 bit) spread over about `spread_bits` bits."""
    return torch.from_numpy(np.round(rng.normal(0, spread_bits, (n, k)) * 2**LOG2_FRAC).astype(np.int64))


@pytest.mark.parametrize("k", [2, 3, 17, 1024])
def test_frequencies_are_valid_integers(k: int) -> None:
    rng = np.random.default_rng(k)
    logits = integer_logits(rng, 50, k, 8)
    logits[0] = 0  # uniform row
    logits[1, 0] = 10**7  # nearly one-hot row
    freq = frequencies(logits, PRECISION)
    assert freq.dtype == torch.int64 and freq.shape == (50, k)
    assert (freq >= 1).all()
    assert (freq.sum(1) == 1 << PRECISION).all()
    # a uniform row: equal frequencies within 2^-10 of 2^20 / k, but for the first symbol, which
    # takes the rest (RECIP bounds the reciprocal from below)
    assert (freq[0, 1:] == freq[0, 1]).all() and abs(freq[0, 1] * k / (1 << PRECISION) - 1) < 2**-10 + k / 2**20
    assert freq[1, 0] == (1 << PRECISION) - (k - 1)


def test_frequencies_follow_the_softmax() -> None:
    rng = np.random.default_rng(3)
    logits = integer_logits(rng, 200, 1024, 2)
    freq = frequencies(logits, PRECISION).double() / 2**PRECISION
    p = torch.softmax(logits.double() / 2**LOG2_FRAC * np.log(2), dim=1)
    # the integer softmax: cubic exponent (1.5e-4), 2^-11 reciprocal, the 1-per-symbol floor
    kl_bits = (p * (p / freq).log2()).sum(1)
    assert kl_bits.max() < 2e-3


def test_range_coder_round_trip() -> None:
    rng = np.random.default_rng(5)
    for k, n in ((3, 1), (3, 500), (1024, 300), (256, 2000)):
        freq = frequencies(integer_logits(rng, n, k, 4), PRECISION).numpy()
        p = freq / freq.sum(1, keepdims=True)
        symbols = np.array([rng.choice(k, p=row) for row in p])
        enc = SymbolEncoder()
        # code in several calls, as the codec does per group; one call with an F-ordered array
        enc.encode(symbols[: n // 2], freq[: n // 2])
        enc.encode(np.asfortranarray(symbols[n // 2 :]), np.asfortranarray(freq[n // 2 :]))
        data = enc.finish()
        dec = SymbolDecoder(data)
        out = np.concatenate([dec.decode(freq[: n // 2]), dec.decode(np.asfortranarray(freq[n // 2 :]))])
        assert np.array_equal(out, symbols)
        ideal = -np.log2(p[np.arange(n), symbols]).sum()
        assert 8 * len(data) <= ideal * 1.001 + 64  # within two words of the information content


def test_improbable_symbols_still_code() -> None:
    logits = torch.zeros(4, 1024, dtype=torch.int64)
    logits[:, 0] = 50 << LOG2_FRAC  # symbol 0 takes almost all the mass
    freq = frequencies(logits, PRECISION).numpy()
    symbols = np.array([1023, 5, 0, 77])
    enc = SymbolEncoder()
    enc.encode(symbols, freq)
    assert np.array_equal(SymbolDecoder(enc.finish()).decode(freq), symbols)


def test_rejects_out_of_alphabet_symbols() -> None:
    freq = frequencies(torch.zeros(2, 3, dtype=torch.int64), PRECISION).numpy()
    with pytest.raises(ValueError):
        SymbolEncoder().encode(np.array([0, 3]), freq)
