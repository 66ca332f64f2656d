import numpy as np
import pytest

from dqcodec.entropy import PRECISION, SymbolDecoder, SymbolEncoder, quantize_probabilities


@pytest.mark.parametrize("k", [2, 3, 17, 1024])
def test_quantized_probabilities_are_valid_integers(k: int) -> None:
    rng = np.random.default_rng(k)
    logits = rng.normal(0, 8, (50, k)).astype(np.float32)
    logits[0] = 0  # uniform row
    logits[1, 0] = 1e4  # nearly one-hot row
    freq = quantize_probabilities(logits)
    assert freq.dtype == np.int64 and freq.shape == (50, k)
    assert (freq >= 1).all()
    assert (freq.sum(1) == 1 << PRECISION).all()


def test_quantization_is_a_pure_function_of_the_logits() -> None:
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 3, (20, 100)).astype(np.float32)
    assert np.array_equal(quantize_probabilities(logits), quantize_probabilities(logits.copy()))
    assert np.array_equal(quantize_probabilities(logits), quantize_probabilities(np.asfortranarray(logits)))


@pytest.mark.parametrize("k,n", [(3, 1), (3, 500), (1024, 300), (256, 2000)])
def test_range_coder_round_trip(k: int, n: int) -> None:
    rng = np.random.default_rng(k * n)
    logits = rng.normal(0, 4, (n, k)).astype(np.float32)
    freq = quantize_probabilities(logits)
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
    assert 8 * len(data) <= ideal + 64  # within two words of the information content


def test_improbable_symbols_still_code() -> None:
    logits = np.zeros((4, 1024), np.float32)
    logits[:, 0] = 50.0  # symbol 0 takes almost all the mass
    freq = quantize_probabilities(logits)
    symbols = np.array([1023, 5, 0, 77])
    enc = SymbolEncoder()
    enc.encode(symbols, freq)
    assert np.array_equal(SymbolDecoder(enc.finish()).decode(freq), symbols)


def test_rejects_out_of_alphabet_symbols() -> None:
    freq = quantize_probabilities(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError):
        SymbolEncoder().encode(np.array([0, 3]), freq)
