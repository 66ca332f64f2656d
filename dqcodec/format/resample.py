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


BLOCK = 256  # output rows and columns resampled at a time: bounds the float64 intermediates


def _weighted(x: torch.Tensor, idx: torch.Tensor, w: torch.Tensor, dim: int) -> torch.Tensor:
    """sum over k of w[:, k] * x.index_select(dim, idx[:, k]), summed in k order from zero."""
    shape = [1] * x.dim()
    shape[dim] = idx.shape[0]
    out = torch.zeros([idx.shape[0] if d == dim else n for d, n in enumerate(x.shape)], dtype=torch.float64)
    for k in range(idx.shape[1]):
        out += w[:, k].reshape(shape) * x.index_select(dim, idx[:, k])
    return out


def resize(img: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """(C, H, W) uint8 -> (C, height, width) uint8: rows first, then columns, in float64, then
    clamped to 0..255 and rounded half to even. Block by block of the output (each sample sums
    the same products in the same order), so memory stays bounded for any size."""
    if img.shape[-2:] == (height, width):
        return img.clone()
    col_idx, col_w = filter_taps(img.shape[-1], width)
    row_idx, row_w = filter_taps(img.shape[-2], height)
    out = torch.empty(img.shape[0], height, width, dtype=torch.uint8)
    for y0 in range(0, height, BLOCK):
        rows, r_w = row_idx[y0 : y0 + BLOCK], row_w[y0 : y0 + BLOCK]
        r_lo, r_hi = int(rows.min()), int(rows.max()) + 1
        for x0 in range(0, width, BLOCK):
            cols, c_w = col_idx[x0 : x0 + BLOCK], col_w[x0 : x0 + BLOCK]
            c_lo, c_hi = int(cols.min()), int(cols.max()) + 1
            block = img[:, r_lo:r_hi, c_lo:c_hi].double()
            across = _weighted(block, cols - c_lo, c_w, 2)  # rows first: along each row
            y = _weighted(across, rows - r_lo, r_w, 1)
            out[:, y0 : y0 + BLOCK, x0 : x0 + BLOCK] = y.clamp(0, 255).round().to(torch.uint8)
    return out
