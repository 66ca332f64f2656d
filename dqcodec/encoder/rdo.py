"""The Lagrangian behind `-q`: every region's level by least distortion + lambda x bits (tune
"psnr": each region its own least cost; tune "ssim": lambda sets the counts, the gate the order).

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
against the gate's ranking (docs/benchmarks.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from dqcodec.models.dqvae import NUM_LEVELS, REGION

MEDIUM = 1  # the level whose error is an image's reference
# Mean bits per region at each level under the shipped prior, measured on BSDS500 validation
# images (benchmarks, not Kodak): map symbol + 1, 4 or 16 codes.
REGION_BITS = (8.6, 26.7, 69.5)
# The default tune's measure: this share of squared error, the rest 1 - SSIM (benchmarks/allocation.py)
MSE_WEIGHT = 0.1


@dataclass(frozen=True)
class RegionCosts:
    """What coding each region at each level costs, measured on one image."""

    distortion: torch.Tensor  # (L, h, w) float64, squared 8-bit error summed over RGB
    rate: torch.Tensor  # (L, h, w) float64, bits (the encoder uses region_rate)
    pixels: int  # of the picture (padding excluded)


def region_rate(shape: tuple[int, ...] | torch.Size) -> torch.Tensor:
    """(L, h, w) bits of every region at every level (REGION_BITS)."""
    return torch.tensor(REGION_BITS, dtype=torch.float64)[:, None, None].expand(-1, *shape)


@dataclass(frozen=True)
class QualityScale:
    """quality -> slope: what one bit per pixel must buy to be spent, in decibels of the measure
    (10 log10 of its all-medium total over the map's). `mid` at quality 50, spread by
    ((100 - q) / q) ** spread, so that quality 0 is every region coarse (slope infinite) and
    100 the least distortion (slope 0)."""

    mid: float
    spread: float

    def slope(self, quality: float) -> float:
        if quality <= 0:
            return math.inf
        return self.mid * ((100.0 - quality) / quality) ** self.spread


# Calibrated on BSDS500 test images (benchmarks, not Kodak). Tune "psnr": quality 50 lands near
# the middle of the rate range. Default tune: the mean rate at qualities 25 and 75 is the old
# fixed shares' (benchmarks/quality_scale.py).
PSNR_SCALE = QualityScale(15.0, 1.2)
STRUCTURAL_SCALE = QualityScale(17.8, 0.64)


def region_distortion(decoded: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    """Squared error per 16x16 region. decoded (L, 3, H, W) uint8, one picture per level;
    original (3, H, W) uint8 -> (L, ceil(H/16), ceil(W/16)) float64."""
    return region_sums((decoded.double() - original.double()[None]).pow(2).sum(1, keepdim=True))


def region_sums(err: torch.Tensor) -> torch.Tensor:
    """Per-pixel errors (L, 1, H, W) -> their sums over each 16x16 region (L, ceil(H/16), ceil(W/16))."""
    h, w = err.shape[-2:]
    err = F.pad(err, (0, -w % REGION, 0, -h % REGION))  # padding is not part of the picture
    return F.avg_pool2d(err, REGION)[:, 0] * REGION * REGION


def _luma(x: torch.Tensor) -> torch.Tensor:
    """(L, 3, H, W) uint8 RGB -> (L, 1, H, W) float64 BT.601 luma."""
    r, g, b = x.double().unbind(-3)
    return (0.299 * r + 0.587 * g + 0.114 * b)[:, None]


def ssim_distortion(decoded: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    """1 - SSIM of luma (8x8 windows at a 4-pixel stride) summed per 16x16 region, in units of
    squared 8-bit error (x 255^2). Shapes as `region_distortion`."""
    x, y = _luma(decoded), _luma(original[None]).expand(len(decoded), -1, -1, -1)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2

    def mean(t: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(t, 8, stride=4, padding=2, count_include_pad=False)

    mx, my = mean(x), mean(y)
    vx, vy, cxy = mean(x * x) - mx**2, mean(y * y) - my**2, mean(x * y) - mx * my
    ssim = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return region_sums(F.interpolate(1 - ssim, size=x.shape[-2:], mode="nearest")) * 255.0**2


def structural_distortion(
    decoded: torch.Tensor, original: torch.Tensor, mse_weight: float = MSE_WEIGHT
) -> torch.Tensor:
    """The default tune's measure: `mse_weight` of squared error and the rest of 1 - SSIM, each
    relative to its total at the all-medium map (so the mix does not depend on their units)."""
    return structural_mix(region_distortion(decoded, original), ssim_distortion(decoded, original), mse_weight)


def structural_mix(squared: torch.Tensor, ssim: torch.Tensor, mse_weight: float = MSE_WEIGHT) -> torch.Tensor:
    """`structural_distortion` from its two measures, (L, h, w) each."""
    relative_squared = squared / squared[MEDIUM].sum().clamp(min=1e-9)
    return mse_weight * relative_squared + (1 - mse_weight) * ssim / ssim[MEDIUM].sum().clamp(min=1e-9)


def levels_at(costs: RegionCosts, lam: float) -> torch.Tensor:
    """(h, w) levels minimising D + lam * R per region (ties go to the coarser level)."""
    return torch.argmin(costs.distortion + lam * costs.rate, dim=0)


def ranked_levels(costs: RegionCosts, score: torch.Tensor, lam: float) -> torch.Tensor:
    """(h, w) levels that keep the gate's ranking (the highest scores fine, the next medium, the
    rest coarse) with the counts of least total D + lam * R over all such maps: prefix sums of
    each level's costs along the ranking, then the best fine count for every upper count."""
    n = score.numel()
    order = torch.argsort(score.reshape(n), descending=True, stable=True)
    c = (costs.distortion + lam * costs.rate).reshape(NUM_LEVELS, n)[:, order]
    prefix = torch.cat([torch.zeros(NUM_LEVELS, 1, dtype=c.dtype), c.cumsum(1)], 1)  # [l, k]: first k at l
    best_fine = torch.cummin(prefix[2] - prefix[1], 0)  # over fine counts <= the upper count
    total = best_fine.values + prefix[1] + (prefix[0, -1] - prefix[0])
    n_up = int(torch.argmin(total))
    n_fine = int(best_fine.indices[n_up])
    rank = torch.empty(n, dtype=torch.long)
    rank[order] = torch.arange(n)
    return ((rank < n_up).long() + (rank < n_fine).long()).view(score.shape)


def multiplier(costs: RegionCosts, quality: float, scale: QualityScale = PSNR_SCALE) -> float:
    """Lagrange multiplier of a quality: its slope times the all-medium map's error per pixel."""
    slope = scale.slope(quality)
    if math.isinf(slope):
        return math.inf
    reference = float(costs.distortion[MEDIUM].sum())
    return slope * math.log(10) / 10 * reference / costs.pixels


def choose_levels(
    costs: RegionCosts, quality: float, scale: QualityScale = PSNR_SCALE, ranking: torch.Tensor | None = None
) -> torch.Tensor:
    """The granularity map of a quality: every region at its least D + lambda * R, or, given a
    ranking (the gate's scores), the counts of least total cost along it."""
    lam = multiplier(costs, quality, scale)
    if math.isinf(lam):
        return torch.zeros(costs.distortion.shape[1:], dtype=torch.long)
    return levels_at(costs, lam) if ranking is None else ranked_levels(costs, ranking, lam)
