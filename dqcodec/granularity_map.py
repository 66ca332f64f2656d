"""Draw the granularity map of a decoded image: which 16x16 regions were coded coarse, medium or fine."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

# tint per level: coarse keeps the picture, medium blue, fine red
_TINT = np.array([[0, 0, 0], [40, 90, 255], [255, 50, 40]], dtype=np.float64)
_ALPHA = np.array([0.0, 0.35, 0.45])


def draw(image: Image.Image, levels: torch.Tensor) -> Image.Image:
    """Overlay of `levels` (h, w region grid) on `image`, with region borders."""
    rgb = np.asarray(image.convert("RGB"), dtype=np.float64)
    h, w = rgb.shape[:2]
    lv = np.repeat(np.repeat(levels.numpy(), 16, 0), 16, 1)[:h, :w]
    a = _ALPHA[lv][..., None]
    out = rgb * (1 - a) + _TINT[lv] * a
    out[::16, :, :] = out[::16, :, :] * 0.6
    out[:, ::16, :] = out[:, ::16, :] * 0.6
    return Image.fromarray(out.clip(0, 255).astype(np.uint8), "RGB")
