"""The encoder's estimate of every region's distortion at every level, without decoding.

`rdo` chooses the granularity map from D[l, i], the distortion of region i at level l. Measuring
it means decoding the picture three times (all coarse, all medium, all fine), which cost more
CPU than everything else the encoder does. This small network predicts both measures the tunes
use (squared error and 1 - SSIM, `rdo.region_distortion` and `rdo.ssim_distortion`) from what
the analysis already has: how far each level's code vectors lie from the encoder's latents, the
gate's score, and the region's pixel statistics. It was fitted by `training/train_distortion.py`
on training images (never Kodak); `benchmarks/distortion_estimate.py` measures what it costs in
rate-distortion against decoding. The decoder never needs it.
"""

from __future__ import annotations

import io
from functools import cache

import torch
import torch.nn.functional as F
from torch import nn

from dqcodec.models.dqvae import LEVEL_STRIDES, NUM_LEVELS, REGION
from dqcodec.models.shipped import DEFAULT_MODEL, estimator_bytes

FEATURES = 13
HIDDEN = 48


def _region_mean(t: torch.Tensor, per_region: int) -> torch.Tensor:
    """(C, h * per_region, w * per_region) -> (C, h, w) means over each region's cells."""
    return F.avg_pool2d(t[None], per_region)[0] if per_region > 1 else t


def region_features(
    picture: torch.Tensor,
    width: int,
    height: int,
    latents: list[torch.Tensor],
    idx: tuple[torch.Tensor, ...],
    codebook: torch.Tensor,
    score: torch.Tensor,
) -> torch.Tensor:
    """(FEATURES, h, w) float32 for a width x height picture padded to whole regions, (3, 16h, 16w)
    in [0, 1]; `latents` (1, dim, h*s, w*s) and `idx` (h*s, w*s) of each level; `score` (h, w)."""
    out = []
    for z, i, stride in zip(latents, idx, LEVEL_STRIDES):
        z = z[0].float()
        err = (z - codebook[i].permute(2, 0, 1)).pow(2).sum(0, keepdim=True)
        cells = REGION // stride
        out += [_region_mean(err, cells), _region_mean(z.pow(2).sum(0, keepdim=True), cells)]
    r, g, b = (picture.float() * 255).unbind(0)
    y = 0.299 * r + 0.587 * g + 0.114 * b
    chroma = torch.stack([b - y, r - y])
    for plane in (y[None], chroma):
        mean = _region_mean(plane, REGION)
        out.append((_region_mean(plane.pow(2), REGION) - mean.pow(2)).clamp(min=0).sum(0, keepdim=True))
    for factor in (1, 2, 4):  # detail at three scales: gradient energy of the luma averaged over factor x factor
        p = F.avg_pool2d(y[None, None], factor)[0] if factor > 1 else y[None]
        gx = F.pad((p[:, :, 1:] - p[:, :, :-1]).pow(2), (0, 1))
        gy = F.pad((p[:, 1:] - p[:, :-1]).pow(2), (0, 0, 0, 1))
        out.append(_region_mean(gx + gy, REGION // factor))
    inside = torch.zeros(1, *picture.shape[-2:])
    inside[:, :height, :width] = 1  # the padding is not part of the picture, nor of its distortion
    return torch.cat([torch.log1p(torch.cat(out)), score.float()[None], _region_mean(inside, REGION)])


class DistortionEstimator(nn.Module):
    """Region features (FEATURES, h, w) -> log1p of the squared error and of the 1 - SSIM measure
    at every level, (2, NUM_LEVELS, h, w); a 3x3 context of regions."""

    def __init__(self) -> None:
        super().__init__()
        self.shift = nn.Parameter(torch.zeros(FEATURES), requires_grad=False)
        self.scale = nn.Parameter(torch.ones(FEATURES), requires_grad=False)
        self.net = nn.Sequential(
            nn.Conv2d(FEATURES, HIDDEN, 3, padding=1),
            nn.SiLU(),
            nn.Conv2d(HIDDEN, HIDDEN, 3, padding=1),
            nn.SiLU(),
            nn.Conv2d(HIDDEN, 2 * NUM_LEVELS, 1),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        f = (features - self.shift[:, None, None]) / self.scale[:, None, None]
        return self.net(f[None])[0].view(2, NUM_LEVELS, *features.shape[-2:])


def estimator_from_bytes(raw: bytes) -> DistortionEstimator:
    """The shipped estimator's weights (torch.load with weights_only=True)."""
    est = DistortionEstimator()
    est.load_state_dict(torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True))
    return est.eval()


@torch.no_grad()
def estimate(est: DistortionEstimator, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Every region's squared error and 1 - SSIM measure at every level, (L, h, w) float64 each,
    in the units of `rdo.region_distortion` and `rdo.ssim_distortion`, from `region_features`."""
    squared, ssim = torch.expm1(est(features).double()).clamp(min=0).unbind(0)
    return squared, ssim


@cache
def distortion_estimator(name: str = DEFAULT_MODEL) -> DistortionEstimator | None:
    """The encoder's distortion estimate for shipped model `name` (None where it has none: the
    encoder then decodes to measure). Loaded on first use, so that decoding never reads it."""
    raw = estimator_bytes(name)
    return estimator_from_bytes(raw) if raw is not None else None
