"""PatchGAN discriminator (optional adversarial loss for stage 1)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PatchDiscriminator(nn.Module):
    """Scores overlapping ~70x70 patches as real or reconstructed (Isola et al. 2017)."""

    def __init__(self, ch: int = 64, layers: int = 3) -> None:
        super().__init__()
        mods: list[nn.Module] = [nn.Conv2d(3, ch, 4, 2, 1), nn.LeakyReLU(0.2)]
        c = ch
        for i in range(1, layers + 1):
            c_next = ch * min(2**i, 8)
            stride = 2 if i < layers else 1
            mods += [nn.Conv2d(c, c_next, 4, stride, 1), nn.GroupNorm(8, c_next), nn.LeakyReLU(0.2)]
            c = c_next
        mods.append(nn.Conv2d(c, 1, 4, 1, 1))
        self.net = nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def hinge_d_loss(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return F.relu(1 - real).mean() + F.relu(1 + fake).mean()
