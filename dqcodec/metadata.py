"""What a .dqc file carries besides the picture: which metadata the encoder keeps, and the sRGB
profile that needs no bytes (a file without an ICC profile is sRGB, FORMAT.md section 2).

At the rates dqc is for, metadata can outweigh the picture: a phone's EXIF block of 20 KB is four
times a 768x512 picture at 0.1 bpp, and it may hold the place a photo was taken (GPS). The
encoder keeps the ICC profile by default (the colours depend on it) and leaves EXIF and XMP out
unless asked (`--metadata`)."""

from __future__ import annotations

import io

KINDS = ("icc", "exif", "xmp")
DEFAULT_METADATA = frozenset({"icc"})
SRGB_TOLERANCE = 1  # levels: a profile that maps a test chart to sRGB within this is sRGB


def parse(text: str) -> frozenset[str]:
    """'all', 'none' or a comma-separated list of icc, exif, xmp -> the kinds to keep."""
    from dqcodec.errors import ArgumentError

    words = {w.strip().lower() for w in text.split(",") if w.strip()}
    if words == {"all"}:
        return frozenset(KINDS)
    if words == {"none"}:
        return frozenset()
    unknown = words - set(KINDS)
    if unknown or not words:
        raise ArgumentError(f"metadata must be all, none, or a list of {', '.join(KINDS)}; got {text!r}")
    return frozenset(words)


def is_srgb(icc: bytes) -> bool:
    """Whether an RGB ICC profile draws colours as sRGB does (within SRGB_TOLERANCE on a chart of
    ramps and mixtures), so that leaving it out changes nothing."""
    if len(icc) < 40 or icc[16:20] != b"RGB ":
        return False
    from PIL import Image, ImageCms

    levels = [0, 16, 64, 128, 192, 240, 255]
    chart = [(r, g, b) for r in levels for g in levels for b in levels]
    picture = Image.new("RGB", (len(chart), 1))
    picture.putdata(chart)
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        out = ImageCms.profileToProfile(picture, source, ImageCms.createProfile("sRGB"), outputMode="RGB")
    except (ImageCms.PyCMSError, OSError, ValueError):
        return False
    assert out is not None
    return all(abs(a - b) <= SRGB_TOLERANCE for p, q in zip(chart, out.getdata()) for a, b in zip(p, q))
