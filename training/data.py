"""Training images held in memory as uint8 tensors, sampled as random crops."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}


def list_images(root: Path, exclude: tuple[str, ...] = ("kodak", "test")) -> list[Path]:
    return sorted(
        p
        for p in root.rglob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES and not set(exclude) & set(p.relative_to(root).parts)
    )


class CropSampler:
    def __init__(self, paths: list[Path], crop: int, device: torch.device, seed: int = 0) -> None:
        self.images = []
        for p in paths:
            arr = np.asarray(Image.open(p).convert("RGB"))
            if min(arr.shape[:2]) >= crop:
                self.images.append(torch.from_numpy(arr.copy()).permute(2, 0, 1).to(device))
        if not self.images:
            raise ValueError(f"no training image is at least {crop} px on each side")
        self.crop = crop
        self.device = device
        self.gen = torch.Generator().manual_seed(seed)

    def _randint(self, hi: int) -> int:
        return int(torch.randint(0, hi, (1,), generator=self.gen))

    def batch(self, size: int) -> torch.Tensor:
        """Float batch (size, 3, crop, crop) in [0, 1] with random flips and transposes."""
        out = []
        c = self.crop
        for _ in range(size):
            img = self.images[self._randint(len(self.images))]
            y = self._randint(img.shape[1] - c + 1)
            x = self._randint(img.shape[2] - c + 1)
            patch = img[:, y : y + c, x : x + c]
            if self._randint(2):
                patch = patch.flip(2)
            if self._randint(2):
                patch = patch.transpose(1, 2)
            out.append(patch)
        return torch.stack(out).float() / 255.0


def sample_shares(
    n: int, device: torch.device, gen: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(share_fine, share_medium) per sample: uniform on the simplex, 20% on its edges and corners."""
    w = -torch.log(torch.rand(n, 3, generator=gen).clamp_min(1e-9))  # Dirichlet(1, 1, 1)
    edge = torch.rand(n, generator=gen) < 0.2
    drop = torch.randint(0, 3, (n,), generator=gen)
    w[edge, drop[edge]] = 0
    corner = torch.rand(n, generator=gen) < 0.1
    w[corner] = torch.nn.functional.one_hot(torch.randint(0, 3, (int(corner.sum()),), generator=gen), 3).float()
    w = w / w.sum(1, keepdim=True)
    return w[:, 2].to(device), w[:, 1].to(device)
