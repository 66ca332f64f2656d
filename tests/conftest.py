from __future__ import annotations

import numpy as np
import pytest
from PIL import Image


def synthetic_image(width: int = 72, height: int = 40, seed: int = 0, mode: str = "RGB") -> Image.Image:
    """A small smooth-plus-texture test picture (not a flat field: every level gets used)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([xx / width, yy / height, 0.5 + 0.5 * np.sin(xx / 5.0) * np.cos(yy / 7.0)], -1)
    base[:, width // 2 :] += rng.normal(0, 0.15, (height, width - width // 2, 3))
    arr = (np.clip(base, 0, 1) * 255).astype(np.uint8)
    img = Image.fromarray(arr, "RGB")
    return img.convert(mode) if mode != "RGB" else img


@pytest.fixture(scope="session")
def small_image() -> Image.Image:
    """A 72x40 crop of a photo that ships with scikit-image."""
    from skimage import data

    return Image.fromarray(data.astronaut()[60:100, 180:252])


@pytest.fixture(scope="session")
def small_file(small_image: Image.Image) -> bytes:
    import dqcodec

    return dqcodec.encode(small_image, quality=60)
