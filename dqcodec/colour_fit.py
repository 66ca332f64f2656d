"""The encoder's colour correction (an encoder choice; the decoder's part is `colour`).

The residual of the decoded picture against the original is fitted, per channel, by the smooth
field the decoder will build: offsets on a grid of B x B blocks, interpolated bilinearly (least
squares, solved directly: the interpolation is separable). Each block size and
quantiser step gives a correction whose bits and whose squared error the encoder computes
exactly as the decoder will; it keeps the one with the best gain in PSNR net of what its bits
are worth at the file's quality (`PSNR_SCALE`'s slope: the decibels one bit per pixel must buy),
or none where none gains.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from dqcodec import colour
from dqcodec.entropy import PRECISION
from dqcodec.rdo import PSNR_SCALE

BLOCK_LOG2S = (3, 4, 5)  # 8 to 32 px; 8 only for pictures up to SMALL_PICTURE pixels
SMALL_PICTURE = 256 * 256
STEPS = (1, 2, 4)
DECAYS = (16384, 32768, 45875, 55705, 61604, 64225)  # ratios 0.25 .. 0.98 of the residuals' table
CHUNK_BITS = 8 * (12 + colour.HEADER.size + 4)  # framing, header and about a word of flush
# The rate's worth is counted over at least this many pixels: a tiny picture's file is mostly its
# header, and a 1x1 red pixel should not decode brown to save 20 bytes
MIN_RATE_PIXELS = 64 * 64


def _interpolation(n: int, blocks: int, block_log2: int) -> torch.Tensor:
    """(n, blocks) float64: the weights of each block's offset in each of n samples along an axis,
    the decoder's bilinear interpolation between block centres (colour._axis_weights)."""
    lo, hi, w0, w1 = colour._axis_weights(n, blocks, 1 << block_log2)
    u = torch.zeros(n, blocks, dtype=torch.float64)
    rows = torch.arange(n)
    scale = 2.0 * (1 << block_log2)
    u.index_put_((rows, torch.from_numpy(lo)), torch.from_numpy(w0 / scale), accumulate=True)
    u.index_put_((rows, torch.from_numpy(hi)), torch.from_numpy(w1 / scale), accumulate=True)
    return u


def least_squares_offsets(residual: torch.Tensor, block_log2: int) -> torch.Tensor:
    """Offsets (C, gh, gw) whose bilinear field best fits residual (C, H, W), in levels. The field
    is Uy Q Ux^T with small interpolation matrices, so the least-squares offsets are
    (Uy^T Uy)^-1 Uy^T R Ux (Ux^T Ux)^-1: no iterations (float64, on the caller's threads)."""
    _, height, width = residual.shape
    gh, gw = colour.grid(width, height, block_log2)
    uy, ux = _interpolation(height, gh, block_log2), _interpolation(width, gw, block_log2)
    projected = uy.T @ residual.double() @ ux  # (C, gh, gw)
    q = torch.linalg.solve(uy.T @ uy, projected)
    return torch.linalg.solve(ux.T @ ux, q.transpose(1, 2)).transpose(1, 2).float()


def _bits(residuals: np.ndarray) -> tuple[float, int]:
    """The least bits of the residuals under the tables of DECAYS, and that table's decay."""
    counts = np.bincount(residuals + 2 * colour.MAX_OFFSET, minlength=colour.RESIDUALS)
    best = min((float(-(counts * (np.log2(colour.residual_table(d)) - PRECISION)).sum()), d) for d in DECAYS)
    return best


def fit(original: np.ndarray, decoded: np.ndarray, quality: float, gray: bool = False) -> colour.Correction | None:
    """The correction for a decoded picture (H, W, 3) uint8 against the original, at -q quality:
    the best net gain over block sizes and steps, or None."""
    height, width = original.shape[:2]
    slope = PSNR_SCALE.slope(quality)
    if not math.isfinite(slope):
        return None
    ref = original.astype(np.float64)
    err0 = float(((ref - decoded.astype(np.float64)) ** 2).sum())
    if err0 == 0:
        return None
    residual = torch.from_numpy(ref - decoded.astype(np.float64)).permute(2, 0, 1).float()
    if gray:
        residual = residual.mean(0, keepdim=True)
    pixels = max(height * width, MIN_RATE_PIXELS)
    best: tuple[float, colour.Correction | None] = (0.0, None)
    for block_log2 in BLOCK_LOG2S:
        if block_log2 == 3 and height * width > SMALL_PICTURE:
            continue
        offsets = least_squares_offsets(residual, block_log2).numpy()
        for step in STEPS:
            q = np.clip(np.round(offsets / step), -colour.MAX_OFFSET, colour.MAX_OFFSET).astype(np.int64)
            if not q.any():
                continue
            bits, decay = _bits(colour.residuals_of(q))
            c = colour.Correction(block_log2, step, decay, q)
            err = float(((ref - colour.apply(decoded, c).astype(np.float64)) ** 2).sum())
            gain = 10 * math.log10(err0 / max(err, 1e-9)) - slope * (bits + CHUNK_BITS) / pixels
            if gain > best[0]:
                best = (gain, c)
    return best[1]
