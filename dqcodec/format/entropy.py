"""Range coding of symbols under integer frequencies (constriction's queue range coder).

Each symbol comes with its integer frequency table (k entries, each >= 1, summing to
2^PRECISION) from the integer prior (`dqcodec.format.intmath.frequencies`). constriction's lazy
categorical model (`Categorical(perfect=False)`) turns a table into its 24-bit CDF:
cdf(i) = floor(F(i) * (2^24 - k) / 2^PRECISION) + i, with F(i) the sum of the frequencies of the
symbols below i, and cdf(k) = 2^24. Handing it f / 2^PRECISION as float64 is exact (every value,
sum and product involved is a float64 integer multiple of 2^-PRECISION below 2^53), so the coder
sees the same CDF on every machine (FORMAT.md, section 4).
"""

from __future__ import annotations

import constriction
import numpy as np

PRECISION = 20  # bits of the integer frequencies
_MODEL = constriction.stream.model.Categorical(perfect=False)


def _as_model_input(freq: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(freq, dtype=np.float64) / float(1 << PRECISION)


def geometric_frequencies(distance: np.ndarray, decay: int) -> np.ndarray:
    """A table that falls off geometrically with each symbol's `distance` from the likeliest
    (FORMAT.md sections 10.2 and 12.2): h_0 = 2^16, h_k = max(1, (h_(k-1) * decay) >> 16), raw
    frequencies h_distance scaled to 2^PRECISION with at least 1 each, the remainder to the first
    symbol at distance 0. Exact integers, so the same table on every machine."""
    half = np.empty(int(distance.max()) + 1, dtype=np.int64)
    half[0] = 1 << 16
    for k in range(1, len(half)):
        half[k] = max(1, (int(half[k - 1]) * decay) >> 16)
    raw = half[distance]
    scale = ((1 << PRECISION) - len(distance) << 32) // int(raw.sum())
    freq = 1 + ((raw * scale) >> 32)
    freq[int(np.argmin(distance))] += (1 << PRECISION) - int(freq.sum())
    return freq


class SymbolEncoder:
    """Collects symbols with their frequency tables and writes one range-coded stream."""

    def __init__(self) -> None:
        self._coder = constriction.stream.queue.RangeEncoder()

    def encode(self, symbols: np.ndarray, freq: np.ndarray) -> None:
        sym = np.ascontiguousarray(symbols, dtype=np.int32)
        if sym.shape[0] != freq.shape[0]:
            raise ValueError("one row of frequencies per symbol is needed")
        if sym.size and (sym.min() < 0 or sym.max() >= freq.shape[1]):
            raise ValueError("symbol out of the alphabet")
        if sym.size:
            self._coder.encode(sym, _MODEL, _as_model_input(freq))

    def encode_iid(self, symbols: np.ndarray, freq: np.ndarray) -> None:
        """Symbols that all share one frequency table."""
        sym = np.ascontiguousarray(symbols, dtype=np.int32)
        if sym.size and (sym.min() < 0 or sym.max() >= freq.shape[0]):
            raise ValueError("symbol out of the alphabet")
        if sym.size:
            self._coder.encode(sym, constriction.stream.model.Categorical(_as_model_input(freq), perfect=False))

    def finish(self) -> bytes:
        words = np.ascontiguousarray(self._coder.get_compressed(), dtype="<u4")
        return words.tobytes()


class SymbolDecoder:
    def __init__(self, data: bytes) -> None:
        if len(data) % 4:
            raise ValueError("range-coded data must be a whole number of 32-bit words")
        words = np.ascontiguousarray(np.frombuffer(data, dtype="<u4").astype(np.uint32))
        self._coder = constriction.stream.queue.RangeDecoder(words)

    def decode(self, freq: np.ndarray) -> np.ndarray:
        if freq.shape[0] == 0:
            return np.zeros(0, dtype=np.int64)
        return np.asarray(self._coder.decode(_MODEL, _as_model_input(freq)), dtype=np.int64)

    def decode_iid(self, freq: np.ndarray, count: int) -> np.ndarray:
        """`count` symbols that all share one frequency table."""
        if count == 0:
            return np.zeros(0, dtype=np.int64)
        model = constriction.stream.model.Categorical(_as_model_input(freq), perfect=False)
        return np.asarray(self._coder.decode(model, count), dtype=np.int64)
