"""One file through dqc: picture <-> .dqc bytes with the CLI's limits and notes, and outputs
written atomically, never replacing a file without --overwrite."""

from __future__ import annotations

import io
import os
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

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

from dqcodec.encoder.effort import DEFAULT_EFFORT
from dqcodec.metadata import DEFAULT_METADATA

# exit codes of dqc (cli/main.py's docstring)
EXIT_INPUT, EXIT_INTEGRITY, EXIT_MODEL, EXIT_BUG = 1, 3, 4, 5
# the longest side each output format takes, by Pillow's encoders (libwebp, libjpeg, libavif;
# GIF's 16-bit fields); checked from the file's header before anything is decoded
MAX_SIDE = {"WEBP": 16383, "JPEG": 65500, "AVIF": 65536, "GIF": 65535}
# decoded pictures in a lossy format: this quality unless --quality says otherwise (WebP is
# written lossless unless it does)
LOSSY_OUTPUT_QUALITY = {"JPEG": 95, "AVIF": 90, "WEBP": None}
PICTURE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".avif", ".jxl", ".tif", ".tiff", ".bmp", ".gif"}


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


def check_output(out: str, overwrite: bool, binary: bool = True) -> None:
    """Refuse an output before any work: a folder, a missing or unwritable folder, a file that
    exists (without `overwrite`), or binary data for a terminal."""
    from dqcodec.errors import DQCError

    if out == "-":
        if binary and sys.stdout.isatty():
            raise DQCError("-o - would print binary data on the terminal; redirect it (> file) or name a file")
        return
    path = Path(out)
    if path.is_dir():
        raise DQCError(f"{out} is a folder; name the output file")
    folder = path.parent
    if not folder.is_dir():
        raise DQCError(f"{out}: there is no folder {folder}")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise DQCError(f"{out}: the folder {folder} cannot be written")
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
    effort: int = DEFAULT_EFFORT
    metadata: frozenset[str] = DEFAULT_METADATA  # of "icc", "exif", "xmp": what the file carries
    output_quality: int | None = None  # of lossy decoded pictures (LOSSY_OUTPUT_QUALITY)

    def summary(self) -> dict:
        """What a manifest row records of the settings (those that change the output)."""
        out = {"tune": self.tune, "effort": self.effort, "model": self.model or "dq", "metadata": sorted(self.metadata)}
        if self.target_bpp is not None:
            out["bpp"] = self.target_bpp
        elif self.target is not None:
            out["target"] = self.target
        else:
            out["quality"] = self.quality
        if self.scale is not None:
            out["scale"] = self.scale
        return out


def encode_bytes(
    src: str,
    data: bytes,
    settings: EncodeSettings,
    threads: int | None,
    device: str,
    allow_large: bool,
    record_settings: bool = True,
) -> tuple[bytes, tuple[int, int], list[str]]:
    """The picture in `data` (named `src` in messages) -> .dqc bytes, its size and notes for the user."""
    import dqcodec
    from dqcodec.errors import DQCWarning
    from dqcodec.models.shipped import DEFAULT_MODEL

    img, exif, notes = open_image(src, allow_large, data)
    keep = settings.metadata
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
            effort=settings.effort,
            icc_profile=img.info.get("icc_profile") if "icc" in keep else None,
            exif=exif if "exif" in keep else None,
            xmp=xmp_of(img) if "xmp" in keep else None,
            workers=threads,
            device=device,
            record_settings=record_settings,
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
    record_settings: bool = True,
) -> tuple[bytes, tuple[int, int], list[str]]:
    """Encode `src` into `out`: (the file's bytes, the picture's size, notes for the user)."""
    check_output(out, overwrite)
    data, size, notes = encode_bytes(src, read_input(src), settings, threads, device, allow_large, record_settings)
    write_output(out, data, overwrite)
    return data, size, notes


COMMON_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".tif": "TIFF", ".tiff": "TIFF",
                  ".bmp": "BMP"}  # fmt: skip


def output_format(out: str) -> str:
    """Pillow's format name for an output path ('-': PNG)."""
    from dqcodec.errors import DQCError

    suffix = Path(out).suffix.lower()
    if out == "-" or suffix in COMMON_FORMATS:  # without Image.init(), which imports every plugin
        return "PNG" if out == "-" else COMMON_FORMATS[suffix]
    optional_formats()
    fmt = Image.registered_extensions().get(suffix)
    if fmt is None or fmt == "DQC":
        raise DQCError(f"{out}: cannot tell an image format from its name; use .png")
    return fmt


def save_options(fmt: str, quality: int | None) -> dict:
    """Pillow's save options for a decoded picture: lossy formats at `quality` (else a high
    default), WebP lossless unless a quality is given."""
    if fmt == "WEBP":
        return {"lossless": True, "quality": 100, "method": 4} if quality is None else {"quality": quality}
    if fmt in LOSSY_OUTPUT_QUALITY:
        return {"quality": quality if quality is not None else LOSSY_OUTPUT_QUALITY[fmt]}
    return {}


def decode_bytes(
    src: str,
    data: bytes,
    fmt: str,
    model: str | None,
    threads: int | None,
    device: str,
    allow_large: bool,
    quality: int | None = None,
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
    options = save_options(fmt, quality)
    try:
        img.save(buf, format=fmt, **options, **params)
    except (OSError, ValueError, KeyError):  # metadata the format's writer does not take
        buf = io.BytesIO()
        try:
            img.save(buf, format=fmt, **options)
        except (OSError, ValueError, KeyError) as e:
            raise DQCError(f"{src}: Pillow cannot write this picture as {fmt} ({e})") from None
    return buf.getvalue(), img.size


def check_format_size(src: str, data: bytes, fmt: str) -> None:
    """Refuse a picture larger than the output format takes (MAX_SIDE), from the file's header."""
    from dqcodec.errors import DQCError, FormatError
    from dqcodec.format import bitstream

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
    src: str,
    out: str,
    model: str | None,
    overwrite: bool,
    threads: int | None,
    device: str,
    allow_large: bool = False,
    quality: int | None = None,
) -> tuple[int, int]:
    check_output(out, overwrite, binary=False)  # a picture on a terminal is what `-o -` asked for
    fmt = output_format(out)
    picture, size = decode_bytes(src, read_input(src), fmt, model, threads, device, allow_large, quality)
    write_output(out, picture, overwrite)
    return size


def _check_decode_memory(src: str, data: bytes) -> None:
    from dqcodec.errors import FormatError
    from dqcodec.format import bitstream

    try:
        c = bitstream.read(data)
    except FormatError:
        return  # decoding reports it
    width, height = max((c.header.width, c.header.height), (c.coded_width, c.coded_height), key=lambda s: s[0] * s[1])
    check_memory(src, width, height, DECODE_BYTES_PER_PIXEL, "decode")


def outcome(fn: Callable[[], object], subject: str | None = None) -> tuple[int, str]:
    """Run fn: (0, "") on success, else the exit code and a one-line message, which names
    `subject` (the file at hand) where it does not already."""
    code, message = _outcome(fn)
    message = " ".join(message.split())  # one line, whatever a library put in it
    if code and subject and subject != "-" and not message.startswith(subject):
        message = f"{subject}: {message}"
    return code, message


def _outcome(fn: Callable[[], object]) -> tuple[int, str]:
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


class StageTimer:
    """A progress listener (`dqcodec.progress`) that times each stage, and draws a bar on a
    terminal for work of over SHOW_AFTER seconds (tqdm)."""

    SHOW_AFTER = 2.0

    def __init__(self, label: str, bar: bool) -> None:
        self.label, self.bar_wanted = label, bar
        self.stages: dict[str, float] = {}
        self._stage: str | None = None
        self._since = time.perf_counter()
        self._bar = None

    def __call__(self, stage: str, done: int, total: int) -> None:
        now = time.perf_counter()
        if stage != self._stage:
            self._close_stage(now)
            self._stage, self._since = stage, now
            if self._bar is not None:
                self._bar.reset(total=total)
                self._bar.set_description(f"{self.label}: {stage}")
        if self._bar is None and self.bar_wanted:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=f"{self.label}: {stage}", unit="step", delay=self.SHOW_AFTER,
                             leave=False, dynamic_ncols=True)  # fmt: skip
        if self._bar is not None:
            self._bar.n = done
            self._bar.refresh()

    def _close_stage(self, now: float) -> None:
        if self._stage is not None:
            self.stages[self._stage] = self.stages.get(self._stage, 0.0) + now - self._since

    def close(self) -> dict[str, float]:
        self._close_stage(time.perf_counter())
        self._stage = None
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        return self.stages


def is_picture_name(path: str) -> bool:
    return Path(path).suffix.lower() in PICTURE_SUFFIXES
