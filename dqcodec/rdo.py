"""Rate-distortion optimized granularity map (the encoder's tune "psnr").

The encoder may code any region at any level: the decoder reads the map from the file. Instead
of the DGC gate's ranking, this measures what each level costs and gives:

    distortion  D[l, i]  squared error of region i when the whole image is decoded at level l
    rate        R[l]     bits a region costs at level l (map symbol + its codes), a constant

and codes every region at argmin_l D[l, i] + lambda * R[l]. One lambda for all regions is the
Lagrangian solution of "least total error for the bits spent".

Quality sets a PSNR slope s: the decibels one bit per pixel must buy. PSNR falls with log D, so
for an image of N pixels whose map has total error D the multiplier is

    lambda = s * (ln 10 / 10) * D / N

with D taken at the all-medium map, the image's reference error. An image that is hard to code
(large D) gets a larger lambda than an easy one at the same quality: a bit there buys fewer
decibels. Against one lambda for every image (the previous rule) this lowers the rate at equal
mean PSNR by about 15% on BSDS500 test images. (Iterating D and the map to a fixed point gave the
same curve with its low qualities bunched together.)

Decoding the image at one level everywhere ignores how neighbouring levels interact in the
decoder's receptive field. Measuring each region's bits under the prior (three teacher-forced
passes) instead of the constant rates gained about 1% BD-rate on BSDS500 test images and made
encoding five times slower, so the rates are constants.

Squared error favours mixing coarse and fine regions, which wins on PSNR and loses on MS-SSIM
against the gate's ranking (README, Results).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from dqcodec.models.dqvae import REGION

# quality -> PSNR slope: SLOPE_MID dB per bpp at quality 50, spread by ((100 - q) / q) ** SLOPE_SPREAD,
# so that quality 0 is every region coarse (slope infinite) and 100 the least distortion (slope 0).
# Calibrated on BSDS500 test images so that quality 50 lands near the middle of the rate range.
SLOPE_MID = 15.0
SLOPE_SPREAD = 1.2
MEDIUM = 1  # the level whose error is an image's reference
# Mean bits per region at each level under the shipped prior, measured on BSDS500 validation
# images (benchmarks, not Kodak): map symbol + 1, 4 or 16 codes.
REGION_BITS = (8.6, 26.7, 69.5)


@dataclass(frozen=True)
class RegionCosts:
    """What coding each region at each level costs, measured on one image."""

    distortion: torch.Tensor  # (L, h, w) float64, squared 8-bit error summed over RGB
    rate: torch.Tensor  # (L, h, w) float64, bits (the encoder uses region_rate)
    pixels: int  # of the picture (padding excluded)


def region_rate(shape: tuple[int, ...] | torch.Size) -> torch.Tensor:
    """(L, h, w) bits of every region at every level (REGION_BITS)."""
    return torch.tensor(REGION_BITS, dtype=torch.float64)[:, None, None].expand(-1, *shape)


def psnr_slope(quality: float) -> float:
    """Decibels of PSNR one bit per pixel must buy to be spent, for a quality 0..100."""
    if quality <= 0:
        return math.inf
    return SLOPE_MID * ((100.0 - quality) / quality) ** SLOPE_SPREAD


def region_distortion(decoded: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    """Squared error per 16x16 region. decoded (L, 3, H, W) uint8, one picture per level;
    original (3, H, W) uint8 -> (L, ceil(H/16), ceil(W/16)) float64."""
    return region_sums((decoded.double() - original.double()[None]).pow(2).sum(1, keepdim=True))


def region_sums(err: torch.Tensor) -> torch.Tensor:
    """Per-pixel errors (L, 1, H, W) -> their sums over each 16x16 region (L, ceil(H/16), ceil(W/16))."""
    h, w = err.shape[-2:]
    err = F.pad(err, (0, -w % REGION, 0, -h % REGION))  # padding is not part of the picture
    return F.avg_pool2d(err, REGION)[:, 0] * REGION * REGION


def levels_at(costs: RegionCosts, lam: float) -> torch.Tensor:
    """(h, w) levels minimising D + lam * R per region (ties go to the coarser level)."""
    return torch.argmin(costs.distortion + lam * costs.rate, dim=0)


def multiplier(costs: RegionCosts, quality: float) -> float:
    """Lagrange multiplier of a quality: its PSNR slope times the all-medium map's error per pixel."""
    slope = psnr_slope(quality)
    if math.isinf(slope):
        return math.inf
    reference = float(costs.distortion[MEDIUM].sum())
    return slope * math.log(10) / 10 * reference / costs.pixels


def choose_levels(costs: RegionCosts, quality: float) -> torch.Tensor:
    """The granularity map of a quality: every region at its least D + lambda * R."""
    lam = multiplier(costs, quality)
    if math.isinf(lam):
        return torch.zeros(costs.distortion.shape[1:], dtype=torch.long)
    return levels_at(costs, lam)
