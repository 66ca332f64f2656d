"""The encoder's colour corrections (encoder choices; the decoder's parts are `colour` and `flat`).

The smooth correction (CCOR): the residual of the decoded picture against the original is
fitted, per channel, by the smooth field the decoder will build: offsets on a grid of B x B
blocks, interpolated bilinearly (least squares, solved directly: the interpolation is
separable). Each block size and quantiser step gives a correction whose bits and whose squared
error the encoder computes exactly as the decoder will; it keeps the one with the best gain in PSNR net of what its bits
are worth at the file's quality (`PSNR_SCALE`'s slope: the decibels one bit per pixel must buy),
or none where none gains. One bound comes first, where it is affordable: the mean colour of every
64 x 64 block (aligned to the picture's corner) must end within MEAN_TOLERANCE levels of the
original's, in every channel (a tint that costs little PSNR is still seen), by a correction whose
net gain is at most MEAN_MARGIN below the best; at low qualities, where a bit must buy more than
a correction's tint is worth, that leaves the bound out.

The flat blocks (FLAT, `flat_blocks`): B x B blocks whose original is one colour (within a level)
and whose decoded picture is not, painted that colour, where that gains net of their bits.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from dqcodec.encoder.rdo import PSNR_SCALE
from dqcodec.format import colour, flat
from dqcodec.format.entropy import PRECISION

BLOCK_LOG2S = (3, 4, 5, 6)  # 8 to 64 px; 8 only for pictures up to SMALL_PICTURE pixels
SMALL_PICTURE = 256 * 256
STEPS = (1, 2, 4)
DECAYS = (16384, 32768, 45875, 55705, 61604, 64225)  # ratios 0.25 .. 0.98 of the residuals' table
CHUNK_BITS = 8 * (12 + colour.HEADER.size + 4)  # framing, header and about a word of flush
# The rate's worth is counted over at least this many pixels: a tiny picture's file is mostly its
# header, and a 1x1 red pixel should not decode brown to save 20 bytes
MIN_RATE_PIXELS = 64 * 64
MEAN_BLOCK = 64
MEAN_TOLERANCE = 2.5  # levels: the largest error of a MEAN_BLOCK block's mean colour a correction must keep to
# dB of net gain the bound may give up. Chosen on 12 BSDS500 test images at -q 10 to 70
# (`python -m benchmarks.colour_margin`, benchmarks/results/colour_margin.json): the bound then costs
# +0.7% / +0.7% / -0.6% BD-rate (PSNR / MS-SSIM / SSIMULACRA2) over leaving it out, and keeps their
# worst block mean at -q 50 within 2.7 levels (6.0 without it); at any price (dqc 0.4.0) it took
# 700-1,000 bytes of a 481x321 file at every -q up to 50, +23% / +44% / +17%
MEAN_MARGIN = 0.1
FLAT_BLOCK_LOG2S = (3, 4)
FLAT_SPREAD = 1  # levels: a block is flat where every sample is this close to its rounded mean
FLAT_SHARES = (64, 4096, 32768, 61440, 65535)  # of the flags' table, in 1/65536 (FLAT's header)
FLAT_DECAYS = (4096, 32768, 58982)  # of the colours' table


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


def worst_block_mean(original: np.ndarray, picture: np.ndarray) -> float:
    """The largest error, in levels, of the mean of a channel over a MEAN_BLOCK block (the blocks
    at the right and bottom edges may be smaller)."""
    height, width = original.shape[:2]
    rows, cols = np.arange(0, height, MEAN_BLOCK), np.arange(0, width, MEAN_BLOCK)
    diff = picture.astype(np.int64) - original.astype(np.int64)
    sums = np.add.reduceat(np.add.reduceat(diff, rows, axis=0), cols, axis=1)
    counts = np.minimum(MEAN_BLOCK, height - rows)[:, None] * np.minimum(MEAN_BLOCK, width - cols)[None, :]
    return float((np.abs(sums) / counts[..., None]).max())


def choose(
    original: np.ndarray, decoded: np.ndarray, quality: float, gray: bool = False
) -> tuple[bytes | None, bytes | None]:
    """The CCOR and FLAT payloads for a decoded picture (H, W, 3) uint8 against the original, at
    -q quality, each None where it does not pay. The flat blocks are chosen first, and the smooth
    correction is fitted to what they leave (the decoder paints them over it)."""
    found = flat_blocks(original, decoded, quality, gray)
    paint = (lambda picture: flat.apply(picture, found[0])) if found else None
    correction = fit(original, paint(decoded) if paint else decoded, quality, gray, paint)
    return (colour.pack(correction) if correction is not None else None), (found[1] if found else None)


def fit(
    original: np.ndarray,
    decoded: np.ndarray,
    quality: float,
    gray: bool = False,
    after: Callable[[np.ndarray], np.ndarray] | None = None,
) -> colour.Correction | None:
    """The correction for a decoded picture (H, W, 3) uint8 against the original, at -q quality:
    of those whose net gain is within MEAN_MARGIN of the best (None's is 0) and that keep every
    block's mean colour within MEAN_TOLERANCE (if none does, the one that comes nearest), the best
    net gain over block sizes and steps; or None. `after`: what the decoder does to the corrected
    picture next (it paints the flat blocks)."""
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
    candidates: list[tuple[float, float, colour.Correction | None]] = [(0.0, worst_block_mean(original, decoded), None)]
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
            corrected = colour.apply(decoded, c)
            if after is not None:
                corrected = after(corrected)
            err = float(((ref - corrected.astype(np.float64)) ** 2).sum())
            gain = 10 * math.log10(err0 / max(err, 1e-9)) - slope * (bits + CHUNK_BITS) / pixels
            candidates.append((gain, worst_block_mean(original, corrected), c))
    best = max(c[0] for c in candidates)
    affordable = [c for c in candidates if c[0] >= best - MEAN_MARGIN]
    within = [c for c in affordable if c[1] <= MEAN_TOLERANCE]
    if within:
        return max(within, key=lambda c: c[0])[2]
    return min(affordable, key=lambda c: (c[1], -c[0]))[2]


def _flat_candidates(original: np.ndarray, picture: np.ndarray, block_log2: int) -> tuple[np.ndarray, np.ndarray]:
    """Flags (gh, gw) of the blocks whose original is flat and whose picture gains by being
    painted, and every block's colour (gh, gw, 3) uint8."""
    block = 1 << block_log2
    gh, gw = flat.grid(original.shape[1], original.shape[0], block_log2)
    pad = ((0, gh * block - original.shape[0]), (0, gw * block - original.shape[1]), (0, 0))
    ref = np.pad(original, pad, mode="edge").astype(np.int64).reshape(gh, block, gw, block, 3)
    out = np.pad(picture, pad, mode="edge").astype(np.int64).reshape(gh, block, gw, block, 3)
    value = np.floor(ref.mean((1, 3)) + 0.5).astype(np.int64)  # (gh, gw, 3)
    spread = np.abs(ref - value[:, None, :, None]).max((1, 3, 4))
    painted = ((ref - value[:, None, :, None]) ** 2).sum((1, 3, 4))
    kept = ((ref - out) ** 2).sum((1, 3, 4))
    return (spread <= FLAT_SPREAD) & (painted < kept), value.astype(np.uint8)


def flat_blocks(
    original: np.ndarray, picture: np.ndarray, quality: float, gray: bool = False
) -> tuple[flat.FlatBlocks, bytes] | None:
    """The flat blocks and their FLAT payload for a decoded picture (H, W, 3) uint8 against the
    original, at -q quality: the block size with the best net gain, or None where none gains."""
    height, width = original.shape[:2]
    slope = PSNR_SCALE.slope(quality)
    if not math.isfinite(slope):
        return None
    ref = original.astype(np.float64)
    err0 = float(((ref - picture.astype(np.float64)) ** 2).sum())
    if err0 == 0:
        return None
    pixels = max(height * width, MIN_RATE_PIXELS)
    best: tuple[float, tuple[flat.FlatBlocks, bytes] | None] = (0.0, None)
    for block_log2 in FLAT_BLOCK_LOG2S:
        flags, value = _flat_candidates(original, picture, block_log2)
        if not flags.any():
            continue
        colours = value[flags][:, :1] if gray else value[flags]
        blocks = flat.FlatBlocks(block_log2, flags, colours)
        payload = min((flat.pack(blocks, share, decay) for share in FLAT_SHARES for decay in FLAT_DECAYS), key=len)
        err = float(((ref - flat.apply(picture, blocks).astype(np.float64)) ** 2).sum())
        gain = 10 * math.log10(err0 / max(err, 1e-9)) - slope * 8 * (len(payload) + 12) / pixels
        if gain > best[0]:
            best = (gain, (blocks, payload))
    return best[1]
