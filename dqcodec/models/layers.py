"""Small building blocks shared by the transform and the prior."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def conv3x3(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, padding=1)


class ResBlock(nn.Module):
    """Pre-activation residual block; the last conv starts at zero so a fresh block is the identity."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv1 = conv3x3(ch, ch)
        self.conv2 = conv3x3(ch, ch)
        self.act = nn.SiLU()
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.act(self.conv1(self.act(x))))


def res_stack(ch: int, n: int) -> nn.Sequential:
    return nn.Sequential(*(ResBlock(ch) for _ in range(n)))


class Downsample(nn.Module):
    """Stride-2 space-to-depth followed by a 1x1 projection (cheaper than a strided 3x3)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.unshuffle = nn.PixelUnshuffle(2)
        self.proj = nn.Conv2d(4 * cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.unshuffle(x))


class Upsample(nn.Module):
    """1x1 projection to 4x channels followed by a stride-2 depth-to-space."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(cin, 4 * cout, 1)
        self.shuffle = nn.PixelShuffle(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shuffle(self.proj(x))


class Bfloat16Conv2d(nn.Module):
    """`conv` on bfloat16 operands (oneDNN accumulates in float32), its output back in float32:
    the synthesis's fast path on CPUs with bfloat16 instructions (transform.bfloat16_convolutions).
    Operands are channels-last, which oneDNN's bfloat16 kernels take without a reorder (5-15%
    faster than NCHW). `bfloat16_output`: the output stays bfloat16, for a next convolution that
    would round it to bfloat16 anyway (a ResBlock's first: SiLU computes in float32 either way)."""

    def __init__(self, conv: nn.Conv2d, bfloat16_output: bool = False) -> None:
        super().__init__()
        self.bfloat16_output = bfloat16_output
        weight = conv.weight.detach().to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
        self.register_buffer("weight", weight)
        self.register_buffer("bias", None if conv.bias is None else conv.bias.detach().to(torch.bfloat16))
        self.stride, self.padding = conv.stride, conv.padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(torch.bfloat16, memory_format=torch.channels_last)
        y = F.conv2d(x, self.weight, self.bias, self.stride, self.padding)
        return y if self.bfloat16_output else y.float()
