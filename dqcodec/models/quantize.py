"""Vector quantizer with one shared codebook, EMA updates and dead-code restarts."""

from __future__ import annotations

import os
from types import ModuleType

import torch
import torch.nn.functional as F
from torch import nn

# vectors per distance computation: a 1024 x codebook matrix stays in the caches, where 16384
# rows (64 MB) made the search memory-bound, 3.6x slower (benchmarks/vq_search.py)
INDEX_CHUNK = 1024


def _search_kernel() -> ModuleType | None:
    """dqcodec._native, whose `nearest` runs on every CPU (its portable path too), unless it was
    not built or DQC_NATIVE=0 turns the C kernels off."""
    if os.environ.get("DQC_NATIVE", "1") == "0":
        return None
    try:
        from dqcodec import _native
    except ImportError:
        return None
    return _native


def nearest_codes(vectors: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Index of the nearest code (k, dim) for each of vectors (n, dim) -> (n,) int64: the least
    float32 sum over channels, in channel order, of (code - vector)^2, every step rounded (no
    fused multiply-add), the first code on a tie. Exactly defined, so that the encoder picks the
    same codes on every machine: the C kernel (any instruction set) and the torch loop, on CPU or
    GPU, compute the same sums."""
    x = vectors.float().contiguous()
    e_t = codebook.float().t().contiguous()
    kernels = _search_kernel() if x.device.type == "cpu" else None
    if kernels is not None:
        out = torch.empty(len(x), dtype=torch.int64)
        kernels.nearest(x.numpy(), e_t.numpy(), out.numpy(), (*x.shape, e_t.shape[1]))
        return out
    found = []
    for part in x.split(INDEX_CHUNK):
        total = torch.zeros(len(part), e_t.shape[1], device=x.device)
        for i in range(x.shape[1]):
            diff = e_t[i] - part[:, i : i + 1]
            total += diff.mul_(diff)
        found.append(total.argmin(1))
    return torch.cat(found) if found else torch.zeros(0, dtype=torch.int64, device=x.device)


class VectorQuantizer(nn.Module):
    """Nearest-neighbour codebook lookup (Euclidean) over channel vectors of a feature map.

    The codebook is shared by every granularity of the DQ-VAE. During training it follows an
    exponential moving average of the vectors assigned to it (only vectors whose `weight` is 1
    count, so unused granularities do not pull codes around); codes whose usage falls under
    `dead_threshold` are restarted on random encoder outputs.
    """

    def __init__(self, num_codes: int, dim: int, decay: float = 0.99, dead_threshold: float = 0.03) -> None:
        super().__init__()
        self.num_codes = num_codes
        self.dim = dim
        self.decay = decay
        self.dead_threshold = dead_threshold
        embed = torch.randn(num_codes, dim) * 0.5
        self.register_buffer("embed", embed)
        self.register_buffer("ema_count", torch.ones(num_codes))
        self.register_buffer("ema_sum", embed.clone())

    def indices(self, z: torch.Tensor) -> torch.Tensor:
        """Nearest code index for every vector (`nearest_codes`, the same on every machine); z is
        (B, dim, H, W), result (B, H, W) int64."""
        b, c, h, w = z.shape
        return nearest_codes(z.permute(0, 2, 3, 1).reshape(-1, c), self.embed).view(b, h, w)

    def _training_indices(self, z: torch.Tensor) -> torch.Tensor:
        """As `indices`, faster on a GPU (distances as |z|^2 - 2 z.e + |e|^2 by a matrix product),
        but rounded as that product happens to be: for training, which needs no exact choice."""
        b, c, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, c).float()
        e = self.embed.float()
        e_sq = e.pow(2).sum(1)[None]
        # in chunks: the distance matrix of a whole large image would take gigabytes
        out = [
            (part.pow(2).sum(1, keepdim=True) - 2 * part @ e.t() + e_sq).argmin(1) for part in flat.split(INDEX_CHUNK)
        ]
        return torch.cat(out).view(b, h, w)

    def lookup(self, idx: torch.Tensor) -> torch.Tensor:
        """Code vectors for an index map (B, H, W) -> (B, dim, H, W)."""
        return F.embedding(idx, self.embed).permute(0, 3, 1, 2).contiguous()

    def forward(
        self, z: torch.Tensor, weight: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Quantize z with a straight-through gradient.

        Returns (z_q, indices, commitment loss); the loss is averaged over positions with weight 1.
        """
        idx = self._training_indices(z) if self.training else self.indices(z)
        zq = self.lookup(idx).to(z.dtype)
        w = torch.ones_like(idx, dtype=z.dtype) if weight is None else weight.to(z.dtype)
        commit = ((z - zq.detach()).pow(2).mean(1) * w).sum() / w.sum().clamp_min(1.0)
        if self.training:
            self._ema_update(z.detach(), idx, w.detach())
        return z + (zq - z).detach(), idx, commit

    @torch.no_grad()
    def _ema_update(self, z: torch.Tensor, idx: torch.Tensor, w: torch.Tensor) -> None:
        flat = z.permute(0, 2, 3, 1).reshape(-1, self.dim).float()
        wf = w.reshape(-1).float()
        onehot = F.one_hot(idx.reshape(-1), self.num_codes).float() * wf[:, None]
        count = onehot.sum(0)
        total = onehot.t() @ flat
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(count)
            torch.distributed.all_reduce(total)
        self.ema_count.mul_(self.decay).add_(count, alpha=1 - self.decay)
        self.ema_sum.mul_(self.decay).add_(total, alpha=1 - self.decay)
        n = self.ema_count.sum()
        smoothed = (self.ema_count + 1e-5) / (n + self.num_codes * 1e-5) * n
        self.embed.copy_(self.ema_sum / smoothed[:, None])
        dead = self.ema_count < self.dead_threshold
        live = flat[wf > 0]
        if dead.any() and live.shape[0] > 0:
            pick = torch.randint(0, live.shape[0], (int(dead.sum()),), device=z.device)
            fresh = live[pick] + 0.01 * torch.randn_like(live[pick])
            self.embed[dead] = fresh
            self.ema_sum[dead] = fresh
            self.ema_count[dead] = 1.0
