"""`--target METRIC=VALUE`: the lowest quality whose decoded picture reaches a measured quality
(an encoder choice, like `cjxl --distance`; the decoder never needs it).

The encoder decodes the map of a quality as the decoder will (synthesis, then resampling back to
the image's size) and measures it against the original; a bisection over -q finds the lowest
quality that reaches the target. One synthesis and one measurement per step, no prior pass.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from dqcodec.errors import DQCError
from dqcodec.metrics import ms_ssim, psnr

TARGET_STEPS = 7  # halvings of the quality range: a quality within 0.8 of the lowest that reaches the target
# metric -> (lowest, highest) value a target may ask for
TARGET_RANGES = {"psnr": (10.0, 60.0), "ms-ssim": (0.5, 1.0), "ssimulacra2": (-100.0, 100.0)}


@dataclass(frozen=True)
class QualityTarget:
    metric: str
    value: float

    def __str__(self) -> str:
        return f"{self.metric}={self.value:g}"


def parse_target(text: str) -> QualityTarget:
    """'psnr=30', 'ms-ssim=0.95' or 'ssimulacra2=70' -> QualityTarget; a DQCError says what is wrong."""
    metric, sep, value = text.partition("=")
    metric = metric.strip().lower()
    if not sep or metric not in TARGET_RANGES:
        raise DQCError(f"a quality target is METRIC=VALUE with METRIC one of {', '.join(TARGET_RANGES)}, got {text!r}")
    try:
        number = float(value)
    except ValueError:
        raise DQCError(f"the value of quality target {text!r} is not a number") from None
    lo, hi = TARGET_RANGES[metric]
    if not (math.isfinite(number) and lo <= number <= hi):
        raise DQCError(f"a {metric} target must be between {lo:g} and {hi:g}, got {value.strip()}")
    return QualityTarget(metric, number)


def measure(metric: str, reference: np.ndarray, decoded: np.ndarray) -> float:
    """Quality of a decoded uint8 (H, W, 3) picture against its reference; higher is better."""
    if metric in ("psnr", "ms-ssim"):
        r, d = (torch.from_numpy(a.copy()).permute(2, 0, 1)[None].float() / 255 for a in (reference, decoded))
        return psnr(r, d) if metric == "psnr" else float(ms_ssim(r, d)[0])
    try:
        from ssimulacra2 import compute_ssimulacra2
    except ImportError:
        raise DQCError("a ssimulacra2 target needs the ssimulacra2 package: pip install 'dqcodec[metrics]'") from None
    return float(compute_ssimulacra2(_bmp(reference), _bmp(decoded)))


def _bmp(a: np.ndarray) -> io.BytesIO:  # the package reads files
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="BMP")
    buf.seek(0)
    return buf


def quality_for_target(
    picture_of: Callable[[float], np.ndarray], original: torch.Tensor, target: QualityTarget
) -> tuple[float, float]:
    """The lowest quality (within 100 / 2**TARGET_STEPS) whose picture reaches `target`, and the
    value measured there; quality 100 where none does. `picture_of(q)` is the decoded picture of
    quality q, (H, W, 3) uint8; `original` (1, 3, H, W) in [0, 1] the image."""
    reference = (original[0] * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    measured: dict[float, float] = {}

    def value(q: float) -> float:
        if q not in measured:
            measured[q] = measure(target.metric, reference, picture_of(q))
        return measured[q]

    if value(100.0) < target.value:
        return 100.0, value(100.0)
    lo, hi = 0.0, 100.0  # lo: not taken to reach it, hi: reaches it
    if value(lo) >= target.value:
        return lo, value(lo)
    for _ in range(TARGET_STEPS):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if value(mid) >= target.value else (mid, hi)
    return hi, value(hi)
