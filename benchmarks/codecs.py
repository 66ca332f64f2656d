"""The codec settings the benchmarks compare (kept light: the speed worker imports this before timing)."""

from __future__ import annotations

import io

from PIL import Image

# benchmark name -> (dqc model, tune)
LEARNED = {"dq": ("dq", "ssim"), "dq-psnr": ("dq", "psnr"), "vqgan": ("vqgan", "ssim")}
# benchmark name -> (Pillow format, save options)
PILLOW_OPTIONS = {
    "jpeg": ("JPEG", {"optimize": True}),
    "webp": ("WEBP", {"method": 6}),
    "avif": ("AVIF", {"speed": 4}),
    "jxl": ("JXL", {"effort": 7}),
}


def pillow_encode(img: Image.Image, codec: str, quality: int) -> bytes:
    fmt, opts = PILLOW_OPTIONS[codec]
    if codec == "jxl":
        import pillow_jxl  # noqa: F401  registers JPEG XL with Pillow
    buf = io.BytesIO()
    img.save(buf, format=fmt, quality=quality, **opts)
    return buf.getvalue()
