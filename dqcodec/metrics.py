"""Image quality measures (PSNR, SSIM, MS-SSIM, SSIMULACRA2), for `--target`, `dqc compare`, the
demo, training and the benchmarks (images as float tensors in [0, 1])."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

_MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = F.mse_loss(a.double(), b.double()).item()
    return float("inf") if mse == 0 else 10 * math.log10(1.0 / mse)


def psnr_of_pictures(reference: np.ndarray, decoded: np.ndarray) -> float:
    """PSNR in dB of two uint8 pictures of the same shape (all channels together; inf if equal)."""
    mse = float(np.mean((reference.astype(np.float64) - decoded.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * math.log10(255**2 / mse)


def _gaussian_window(size: int, sigma: float, channels: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """The 1-D Gaussian (channels, 1, 1, size): the 2-D window is separable, a row pass then a column pass."""
    coords = torch.arange(size, device=device, dtype=dtype) - size // 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    return g.expand(channels, 1, 1, size).contiguous()


def _blur(t: torch.Tensor, win: torch.Tensor) -> torch.Tensor:
    ch = t.shape[1]
    return F.conv2d(F.conv2d(t, win, groups=ch), win.transpose(2, 3), groups=ch)


def _ssim_terms(x: torch.Tensor, y: torch.Tensor, win: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    c1, c2 = 0.01**2, 0.03**2
    # the five blurred maps in one pass
    blurred = _blur(torch.cat([x, y, x * x, y * y, x * y], 1), win.repeat(5, 1, 1, 1))
    mu_x, mu_y, xx, yy, xy = blurred.chunk(5, 1)
    sxx = xx - mu_x**2
    syy = yy - mu_y**2
    sxy = xy - mu_x * mu_y
    cs = (2 * sxy + c2) / (sxx + syy + c2)
    ssim = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1) * cs
    return ssim.mean((1, 2, 3)), cs.mean((1, 2, 3))


def ms_ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Multi-scale SSIM (Wang et al. 2003), per image of a (B, C, H, W) batch.

    Images need at least 161 px on the short side for the five scales with an 11-tap window;
    smaller images use as many scales as fit.
    """
    x, y = x.float(), y.float()
    win = _gaussian_window(11, 1.5, x.shape[1], x.device, x.dtype)
    scales = max(1, min(5, int(math.log2(min(x.shape[-2:]) / 11)) + 1))
    weights = torch.tensor(_MS_SSIM_WEIGHTS[:scales], device=x.device)
    weights = weights / weights.sum()
    values = []
    for i in range(scales):
        ssim, cs = _ssim_terms(x, y, win)
        values.append(ssim if i == scales - 1 else cs)
        if i < scales - 1:
            x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
    stacked = torch.stack(values, 1).clamp_min(1e-6)
    return torch.prod(stacked ** weights[None], 1)
