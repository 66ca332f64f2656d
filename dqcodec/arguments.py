"""Checks of the public API's arguments: a wrong one is a one-line ArgumentError before any work.

Python would otherwise report a string quality or an unknown device deep inside torch, or
take a NaN limit as no limit at all."""

from __future__ import annotations

import math
import numbers

from dqcodec.errors import ArgumentError

DEVICE_KINDS = ("cpu", "cuda")


def _number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):  # bool is not a number here
        raise ArgumentError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    return float(value)


def real(name: str, value: object, low: float, high: float) -> float:
    """A finite number in [low, high]."""
    number = _number(name, value)
    if not (math.isfinite(number) and low <= number <= high):
        raise ArgumentError(f"{name} must be between {low:g} and {high:g}, got {value}")
    return number


def positive_real(name: str, value: object) -> float:
    number = _number(name, value)
    if not (math.isfinite(number) and number > 0):
        raise ArgumentError(f"{name} must be a positive number, got {value}")
    return number


def count(name: str, value: object) -> int | None:
    """None (the default) or an integer >= 1, such as a number of threads."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ArgumentError(f"{name} must be a whole number or None, got {type(value).__name__} {value!r}")
    if value < 1:
        raise ArgumentError(f"{name} must be at least 1, got {value}")
    return int(value)


def pixel_limit(value: object) -> int | None:
    """None (no limit) or a positive number of pixels; NaN and strings are refused, not ignored."""
    if value is None:
        return None
    return math.floor(positive_real("max_pixels", value))


def device(value: object) -> str:
    """'cpu', 'cuda' or 'cuda:N', where torch here can run it."""
    import torch

    if not isinstance(value, str):
        raise ArgumentError(f"device must be a string such as 'cpu' or 'cuda', got {type(value).__name__}")
    try:
        parsed = torch.device(value)
    except RuntimeError:
        parsed = None
    if parsed is None or parsed.type not in DEVICE_KINDS:
        raise ArgumentError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {value!r}")
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise ArgumentError(f"device {value!r}: no CUDA device is available to torch here")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise ArgumentError(f"device {value!r}: torch sees {torch.cuda.device_count()} CUDA device(s)")
    return value


def blob(name: str, value: object) -> bytes | None:
    """None or bytes-like metadata (an ICC profile, an EXIF block, an XMP packet)."""
    if value is None:
        return None
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise ArgumentError(f"{name} must be bytes or None, got {type(value).__name__}")
    return bytes(value)
