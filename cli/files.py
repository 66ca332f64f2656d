"""One file through dqc: picture <-> .dqc bytes with the CLI's limits and notes, and outputs
written atomically, never replacing a file without --overwrite."""

from __future__ import annotations

import io
import os
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import click
from dqcodec.cli.images import (
    DECODE_BYTES_PER_PIXEL,
    MAX_PIXELS,
    PNG_XMP_KEY,
    check_memory,
    open_image,
    optional_formats,
    read_input,
    xmp_of,
)
from PIL import Image

# exit codes of dqc (cli/main.py's docstring)
EXIT_INPUT, EXIT_INTEGRITY, EXIT_MODEL, EXIT_BUG = 1, 3, 4, 5
# the longest side each output format takes, by Pillow's encoders (libwebp, libjpeg, libavif;
# GIF's 16-bit fields); checked from the file's header before anything is decoded
MAX_SIDE = {"WEBP": 16383, "JPEG": 65500, "AVIF": 65536, "GIF": 65535}


class OutputExistsError(Exception):
    """The output appeared (made by another run) after the check before the work."""


def write_output(dst: str, data: bytes, overwrite: bool) -> None:
    """Write to stdout or atomically to a file; never replacing one without `overwrite`, even one
    made meanwhile (callers check `check_output` before the work, to fail early)."""
    from dqcodec.errors import DQCError
    from dqcodec.fileio import write_atomic

    if dst == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    try:
        write_atomic(Path(dst), lambda f: f.write(data), overwrite=overwrite)
    except FileExistsError:
        raise OutputExistsError(f"{dst} exists (use --overwrite to replace it)") from None
    except OSError as e:  # name the output, not the temp file beside it
        raise DQCError(f"{dst}: cannot write it ({e.strerror or e})") from None


def check_output(out: str, overwrite: bool) -> None:
    from dqcodec.errors import DQCError

    if out == "-":
        return
    path = Path(out)
    if path.is_dir():
        raise DQCError(f"{out} is a folder; name the output file")
    if not path.parent.is_dir():
        raise DQCError(f"{out}: there is no folder {path.parent}")
    if path.exists() and not overwrite:
        raise DQCError(f"{out} exists (use --overwrite to replace it)")


@dataclass(frozen=True)
class EncodeSettings:
    quality: float
    target_bpp: float | None
    model: str | None  # None: the default model (encoding), the file's (decoding)
    tune: str
    scale: float | None = None
    target: str | None = None  # a quality target, e.g. "psnr=30"
    distortion: str | None = None  # estimated or measured (None: the tune's default)


def encode_bytes(
    src: str, data: bytes, settings: EncodeSettings, threads: int | None, device: str, allow_large: bool
) -> tuple[bytes, tuple[int, int], list[str]]:
    """The picture in `data` (named `src` in messages) -> .dqc bytes, its size and notes for the user."""
    import dqcodec
    from dqcodec.errors import DQCWarning
    from dqcodec.shipped import DEFAULT_MODEL

    img, exif, notes = open_image(src, allow_large, data)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DQCWarning)
        coded = dqcodec.encode(
            img,
            quality=settings.quality,
            target_bpp=settings.target_bpp,
            model=settings.model or DEFAULT_MODEL,
            tune=settings.tune,
            scale=settings.scale,
            target=settings.target,
            distortion=settings.distortion,
            icc_profile=img.info.get("icc_profile"),
            exif=exif,
            xmp=xmp_of(img),
            workers=threads,
            device=device,
        )
    notes += [str(w.message) for w in caught if issubclass(w.category, DQCWarning)]
    return coded, img.size, notes


def encode_file(
    src: str,
    out: str,
    settings: EncodeSettings,
    overwrite: bool,
    threads: int | None,
    device: str,
    allow_large: bool,
) -> tuple[bytes, tuple[int, int]]:
    check_output(out, overwrite)
    data, size, notes = encode_bytes(src, read_input(src), settings, threads, device, allow_large)
    for note in notes:
        click.echo(f"dqc: note: {src}: {note}", err=True)
    write_output(out, data, overwrite)
    return data, size


def output_format(out: str) -> str:
    """Pillow's format name for an output path ('-': PNG)."""
    from dqcodec.errors import DQCError

    optional_formats()
    fmt = "PNG" if out == "-" else Image.registered_extensions().get(Path(out).suffix.lower())
    if fmt is None or fmt == "DQC":
        raise DQCError(f"cannot tell an image format from {out!r}; use .png")
    return fmt


def decode_bytes(
    src: str, data: bytes, fmt: str, model: str | None, threads: int | None, device: str, allow_large: bool
) -> tuple[bytes, tuple[int, int]]:
    """.dqc bytes (named `src` in messages) -> the picture as a file of Pillow format `fmt`, and its size."""
    import dqcodec
    from dqcodec.errors import DQCError

    limit = None if allow_large else MAX_PIXELS
    check_format_size(src, data, fmt)
    if allow_large:  # without it, the pixel limit comes first
        _check_decode_memory(src, data)
    try:
        img = dqcodec.decode(data, model=model, workers=threads, device=device, max_pixels=limit)
    except dqcodec.SizeLimitError as e:
        raise DQCError(f"{src}: {e} (use --allow-large)") from None
    buf = io.BytesIO()
    params = {k: img.info[k] for k in ("icc_profile", "exif", "xmp") if k in img.info}
    if fmt == "PNG" and "xmp" in img.info:  # Pillow writes PNG XMP only as this iTXt chunk
        from PIL import PngImagePlugin

        text = PngImagePlugin.PngInfo()
        text.add_itxt(PNG_XMP_KEY, img.info["xmp"].decode("utf-8", "replace"))
        params["pnginfo"] = text
    try:
        img.save(buf, format=fmt, **params)
    except (OSError, ValueError, KeyError):  # metadata the format's writer does not take
        buf = io.BytesIO()
        try:
            img.save(buf, format=fmt)
        except (OSError, ValueError, KeyError) as e:
            raise DQCError(f"{src}: Pillow cannot write this picture as {fmt} ({e})") from None
    return buf.getvalue(), img.size


def check_format_size(src: str, data: bytes, fmt: str) -> None:
    """Refuse a picture larger than the output format takes (MAX_SIDE), from the file's header."""
    from dqcodec import bitstream
    from dqcodec.errors import DQCError, FormatError

    if fmt not in MAX_SIDE:
        return
    try:
        header = bitstream.read(data).header
    except FormatError:
        return  # decoding reports it
    if max(header.width, header.height) > MAX_SIDE[fmt]:
        raise DQCError(
            f"{src}: the picture is {header.width}x{header.height}, and {fmt} takes at most {MAX_SIDE[fmt]} px "
            "a side; decode it to PNG or TIFF"
        )


def decode_file(
    src: str, out: str, model: str | None, overwrite: bool, threads: int | None, device: str, allow_large: bool = False
) -> tuple[int, int]:
    check_output(out, overwrite)
    picture, size = decode_bytes(src, read_input(src), output_format(out), model, threads, device, allow_large)
    write_output(out, picture, overwrite)
    return size


def _check_decode_memory(src: str, data: bytes) -> None:
    from dqcodec import bitstream
    from dqcodec.errors import FormatError

    try:
        c = bitstream.read(data)
    except FormatError:
        return  # decoding reports it
    width, height = max((c.header.width, c.header.height), (c.coded_width, c.coded_height), key=lambda s: s[0] * s[1])
    check_memory(src, width, height, DECODE_BYTES_PER_PIXEL, "decode")


def outcome(fn: Callable[[], object]) -> tuple[int, str]:
    """Run fn: (0, "") on success, else the exit code and a one-line message."""
    from dqcodec.errors import DQCError, IntegrityError, ModelMismatchError

    try:
        fn()
        return 0, ""
    except IntegrityError as e:
        return EXIT_INTEGRITY, str(e)
    except ModelMismatchError as e:
        return EXIT_MODEL, str(e)
    except (DQCError, OutputExistsError) as e:
        return EXIT_INPUT, str(e)
    except OSError as e:
        return EXIT_INPUT, (f"{e.filename}: {e.strerror or e}" if e.filename else str(e.strerror or e))
    except MemoryError:
        return EXIT_INPUT, "out of memory"
    except Exception as e:  # noqa: BLE001 - a bug in dqc still gets one line, and the traceback on request
        if os.environ.get("DQC_DEBUG"):
            raise
        return EXIT_BUG, f"internal error, please report it: {type(e).__name__}: {e} (DQC_DEBUG=1 shows where)"
