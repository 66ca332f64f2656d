"""Separable Lanczos-3 resampling, as bitstream_spec/FORMAT.md specifies it for RSMP files.

The encoder may code a picture at another size than the image (smaller for rates below the
model's coarsest level, larger for rates above its finest); the decoder resamples the decoded
picture back with `resize`, so the filter is part of the format.
"""

from __future__ import annotations

import math

import torch

LOBES = 3


def _lanczos(t: torch.Tensor) -> torch.Tensor:
    pt = math.pi * t
    safe = torch.where(t == 0, torch.ones_like(pt), pt)
    w = torch.where(t == 0, torch.ones_like(t), LOBES * torch.sin(safe) * torch.sin(safe / LOBES) / safe**2)
    return torch.where(t.abs() < LOBES, w, torch.zeros_like(t))


def filter_taps(n_in: int, n_out: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Input indices and weights (n_out, k) float64 mapping n_in samples to n_out.

    Output sample i is centred at input coordinate c = (i + 0.5) * n_in / n_out; input sample j
    (centred at j + 0.5) gets weight lanczos3((j + 0.5 - c) / f), with f = max(n_in / n_out, 1)
    widening the filter when shrinking. Samples outside 0..n_in-1 are dropped and the weights
    normalised to sum to 1.
    """
    scale = n_in / n_out
    stretch = max(scale, 1.0)
    support = LOBES * stretch
    centre = (torch.arange(n_out, dtype=torch.float64) + 0.5) * scale
    first = torch.floor(centre - support).to(torch.long)
    idx = first[:, None] + torch.arange(math.ceil(2 * support) + 2)[None]
    w = _lanczos((idx.double() + 0.5 - centre[:, None]) / stretch)
    w = torch.where((idx >= 0) & (idx < n_in), w, torch.zeros_like(w))
    return idx.clamp(0, n_in - 1), w / w.sum(1, keepdim=True)


def _resize_axis(x: torch.Tensor, n_out: int, dim: int) -> torch.Tensor:
    idx, w = filter_taps(x.shape[dim], n_out)
    shape = [1] * x.dim()
    shape[dim] = n_out
    out = torch.zeros([n_out if d == dim else s for d, s in enumerate(x.shape)], dtype=torch.float64)
    for k in range(idx.shape[1]):
        out += w[:, k].reshape(shape) * x.index_select(dim, idx[:, k])
    return out


def resize(img: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """(C, H, W) uint8 -> (C, height, width) uint8: rows first, then columns, in float64, then
    clamped to 0..255 and rounded half to even. One channel at a time to bound memory."""
    if img.shape[-2:] == (height, width):
        return img.clone()
    out = torch.empty(img.shape[0], height, width, dtype=torch.uint8)
    for c in range(img.shape[0]):
        x = _resize_axis(img[c].double(), width, 1)
        out[c] = _resize_axis(x, height, 0).clamp(0, 255).round().to(torch.uint8)
    return out
