"""Rate-distortion optimized granularity map (the encoder's tune "psnr").

The encoder may code any region at any level: the decoder reads the map from the file. Instead
of the DGC gate's ranking, this measures what each level costs and gives:

    distortion  D[l, i]  squared error of region i when the whole image is decoded at level l
    rate        R[l]     bits a region costs at level l (map symbol + its codes), a constant

and codes every region at argmin_l D[l, i] + lambda * R[l]. One lambda for all regions (and all
images at one quality) is the Lagrangian solution of "least total error for the bits spent".
Decoding the image at one level everywhere ignores how neighbouring levels interact in the
decoder's receptive field. Squared error favours mixing coarse and fine regions, which wins on
PSNR and loses on MS-SSIM against the gate's ranking (README, Results).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from dqcodec.models.dqvae import NUM_LEVELS, REGION

# Mean bits per region at each level under the shipped prior, measured on BSDS500 validation
# images (benchmarks, not Kodak): map symbol + 1, 4 or 16 codes.
REGION_BITS = (8.6, 26.7, 69.5)

# quality -> lambda: LAMBDA_MID at quality 50, spread by ((100 - q) / q) ** LAMBDA_SPREAD, so that
# quality 0 is every region coarse (lambda infinite) and 100 the least distortion (lambda 0).
LAMBDA_MID = 4000.0
LAMBDA_SPREAD = 1.36


def lagrange_multiplier(quality: float) -> float:
    """Squared 8-bit error (summed over RGB) one bit must save to be spent, for a quality 0..100."""
    if quality <= 0:
        return math.inf
    return LAMBDA_MID * ((100.0 - quality) / quality) ** LAMBDA_SPREAD


def region_distortion(decoded: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    """Squared error per 16x16 region. decoded (L, 3, H, W) uint8, one picture per level;
    original (3, H, W) uint8 -> (L, ceil(H/16), ceil(W/16)) float64."""
    err = (decoded.double() - original.double()[None]).pow(2).sum(1, keepdim=True)
    h, w = err.shape[-2:]
    err = F.pad(err, (0, -w % REGION, 0, -h % REGION))  # padding is not part of the picture
    return F.avg_pool2d(err, REGION)[:, 0] * REGION * REGION


def choose_levels(distortion: torch.Tensor, quality: float) -> torch.Tensor:
    """(3, h, w) region distortions -> (h, w) levels minimising D + lambda * R per region."""
    lam = lagrange_multiplier(quality)
    if math.isinf(lam):
        return torch.zeros(distortion.shape[1:], dtype=torch.long)
    rate = torch.tensor(REGION_BITS, dtype=distortion.dtype)[:NUM_LEVELS, None, None]
    return torch.argmin(distortion + lam * rate, dim=0)
