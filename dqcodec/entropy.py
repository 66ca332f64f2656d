"""Entropy coding layer: integer probability quantization and constriction's range coder.

Encoder and decoder must see bit-identical probabilities, so model outputs are turned into
integer frequencies by one fixed procedure (`quantize_probabilities`) before they reach the coder.
The frequencies sum to exactly 2**PRECISION and every symbol gets at least 1, so any symbol can be
coded; the floats handed to constriction are these integers scaled by a power of two (exact).
"""

from __future__ import annotations

import constriction
import numpy as np
import torch

PRECISION = 20
_MODEL = constriction.stream.model.Categorical(perfect=False)


def quantize_probabilities(logits: torch.Tensor | np.ndarray) -> np.ndarray:
    """Integer frequencies (n, k) int64 summing to 2**PRECISION per row, each >= 1.

    float32 logits -> float64 softmax -> floor of the scaled probabilities (plus one); the
    remainder goes to the most probable symbol (lowest index on ties).
    """
    x = np.asarray(logits.detach().cpu().numpy() if isinstance(logits, torch.Tensor) else logits, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"logits must be 2-D (n, k), got shape {x.shape}")
    k = x.shape[1]
    total = 1 << PRECISION
    x = x - x.max(axis=1, keepdims=True)
    p = np.exp(x)
    p /= p.sum(axis=1, keepdims=True)
    freq = np.floor(p * (total - k)).astype(np.int64) + 1
    rest = total - freq.sum(axis=1)
    freq[np.arange(len(freq)), np.argmax(freq, axis=1)] += rest
    return freq


def _as_model_input(freq: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(freq, dtype=np.float64) / float(1 << PRECISION)


class SymbolEncoder:
    """Collects symbols with their quantized frequencies and writes one range-coded stream."""

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
