"""Reading pictures for dqc: the size and memory limits checked from a file's header before
any pixel is decoded, EXIF orientation, CMYK through its profile, the metadata carried."""

from __future__ import annotations

import io
import math
import os
import sys
import warnings
from pathlib import Path

from PIL import Image

PNG_XMP_KEY = "XML:com.adobe.xmp"  # the iTXt keyword of XMP in PNG


def read_input(src: str) -> bytes:
    if src == "-":
        return sys.stdin.buffer.read()
    return Path(src).read_bytes()


def _pixel_limit(text: str | None, default: int = 64 * 10**6) -> tuple[int, str | None]:
    """DQC_MAX_PIXELS -> (limit, None), or (default, the error that a command reports)."""
    if text is None:
        return default, None
    try:
        number = float(text.replace("_", ""))
    except ValueError:
        number = math.nan
    if not (math.isfinite(number) and number >= 1):
        return default, f"DQC_MAX_PIXELS={text!r} is not a number of pixels (e.g. 64e6)"
    return math.floor(number), None


# larger images need --allow-large (time and memory grow with the pixel count)
MAX_PIXELS, MAX_PIXELS_ERROR = _pixel_limit(os.environ.get("DQC_MAX_PIXELS"))
# what each pixel adds to the peak memory (-q 50, 1 to 17 MP, benchmarks/results/memory_per_pixel.json:
# encoding 164-196 bytes, decoding 32-60), rounded up; the model's fixed 0.6 GB is left out, so
# a picture that is refused would not have fitted
ENCODE_BYTES_PER_PIXEL, DECODE_BYTES_PER_PIXEL = 200, 64
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".avif", ".jxl", ".tif", ".tiff", ".bmp"}


def optional_formats() -> None:
    """JPEG XL through pillow-jxl-plugin, where it is installed (Pillow 13 has no JPEG XL of its own)."""
    try:
        import pillow_jxl  # noqa: F401
    except ImportError:
        pass


def available_memory() -> int | None:
    """Bytes of memory that a new allocation can get here (MemAvailable), None where unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(src: str, width: int, height: int, bytes_per_pixel: int, doing: str) -> None:
    """Refuse a picture whose coding would need more memory than there is, before any pixel is
    decoded: a few bytes of PNG can claim gigapixels (even with --allow-large)."""
    from dqcodec.errors import DQCError

    need, have = width * height * bytes_per_pixel, available_memory()
    if have is not None and need > have:
        raise DQCError(
            f"{src}: {width}x{height} needs about {need / 2**30:.3g} GiB of memory to {doing}; "
            f"{have / 2**30:.3g} GiB is available"
        )


def open_image(src: str, allow_large: bool, data: bytes | None = None) -> tuple[Image.Image, bytes | None, list[str]]:
    """Read an image for encoding (the file `src`, or `data` named so in messages): size and
    memory limits enforced before its pixels are decoded, EXIF orientation applied. Returns the
    picture, its EXIF block and notes for the user (Pillow's warnings, malformed EXIF left out)."""
    from dqcodec.errors import DQCError

    Image.MAX_IMAGE_PIXELS = None  # dqc's own limits below; the header is read before any pixel
    optional_formats()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            img = Image.open(io.BytesIO(read_input(src) if data is None else data))
            if img.width * img.height > MAX_PIXELS and not allow_large:
                raise DQCError(
                    f"{src}: {img.width}x{img.height} is over the {MAX_PIXELS / 1e6:g} MP limit (use --allow-large)"
                )
            check_memory(src, img.width, img.height, ENCODE_BYTES_PER_PIXEL, "encode")
            if getattr(img, "n_frames", 1) > 1:
                raise DQCError(f"{src}: has {img.n_frames} frames (animation or pages); dqc codes one picture")
            img.load()
        except Image.UnidentifiedImageError:
            raise DQCError(f"{src}: not an image format dqc can read") from None
        except (SyntaxError, ValueError, EOFError, OSError) as e:  # OSError: "image file is truncated"
            raise DQCError(f"{src}: broken image file ({e})") from None
        except MemoryError:
            raise DQCError(f"{src}: its pixels do not fit in memory") from None
        icc = img.info.get("icc_profile")
        out, exif, notes = _apply_orientation(img)
    notes += [str(w.message).strip() for w in caught if issubclass(w.category, UserWarning)]
    if icc and out.mode == "CMYK":
        rgb = _cmyk_to_srgb(out, icc)
        rgb.info.update({k: v for k, v in out.info.items() if k in ("xmp", PNG_XMP_KEY)})
        return rgb, exif, list(dict.fromkeys(notes))
    if icc:
        out.info["icc_profile"] = icc
    return out, exif, list(dict.fromkeys(notes))


def _apply_orientation(img: Image.Image) -> tuple[Image.Image, bytes | None, list[str]]:
    """The picture turned upright by its EXIF orientation, and its EXIF block. Malformed EXIF
    (Pillow raises anything from SyntaxError to struct.error on it) is left out with a note,
    and the picture is coded as stored."""
    from PIL import ImageOps

    try:
        out = ImageOps.exif_transpose(img) or img
        exif = out.getexif()
        return out, exif.tobytes() if len(exif) else None, []
    except Exception as e:  # noqa: BLE001 - any parse failure of untrusted metadata
        img.info.pop("exif", None)
        return img, None, [f"malformed EXIF left out, orientation not applied ({type(e).__name__}: {e})"]


def _cmyk_to_srgb(img: Image.Image, icc: bytes) -> Image.Image:
    """A CMYK picture through its ICC profile to sRGB (dqc codes RGB); Pillow's plain conversion
    where the profile does not work. No profile is attached: sRGB is what a picture without one means."""
    from PIL import ImageCms

    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        rgb = ImageCms.profileToProfile(img, source, ImageCms.createProfile("sRGB"), outputMode="RGB")
    except (ImageCms.PyCMSError, OSError, ValueError):
        return img.convert("RGB")
    rgb.info.pop("icc_profile", None)
    return rgb


def xmp_of(img: Image.Image) -> bytes | None:
    """The XMP packet Pillow found: bytes for JPEG, WebP, AVIF; the iTXt text for PNG."""
    xmp = img.info.get("xmp", img.info.get(PNG_XMP_KEY))
    return xmp.encode("utf-8") if isinstance(xmp, str) else xmp or None
