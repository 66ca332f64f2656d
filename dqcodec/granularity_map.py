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


_LABELS = ("coarse: 1 code", "medium: 4 codes", "fine: 16 codes")


def with_legend(overlay: Image.Image, levels: torch.Tensor) -> Image.Image:
    """`overlay` above a strip that names each level's tint and its share of the regions."""
    from PIL import ImageDraw, ImageFont

    font = ImageFont.load_default()
    counts = np.bincount(levels.numpy().ravel(), minlength=3)[:3]
    shares = counts / max(1, counts.sum())
    entries = [f"{label} ({100 * share:.0f}%)" for label, share in zip(_LABELS, shares, strict=True)]
    swatch, gap, height = 12, 14, 22
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    widths = [int(probe.textlength(text, font=font)) for text in entries]
    legend_width = sum(swatch + 4 + w + gap for w in widths) + gap
    out = Image.new("RGB", (max(overlay.width, legend_width), overlay.height + height), (255, 255, 255))
    out.paste(overlay, (0, 0))
    pen = ImageDraw.Draw(out)
    x, y = gap, overlay.height + (height - swatch) // 2
    for level, (text, w) in enumerate(zip(entries, widths, strict=True)):
        tint = tuple(int(v) for v in (_TINT[level] * _ALPHA[level] + 160 * (1 - _ALPHA[level])))  # over mid grey
        pen.rectangle([x, y, x + swatch, y + swatch], fill=tint, outline=(0, 0, 0))
        pen.text((x + swatch + 4, y), text, fill=(0, 0, 0), font=font)
        x += swatch + 4 + w + gap
    return out
