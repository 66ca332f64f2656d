"""dqc: encode, decode and inspect .dqc images.

Exit codes: 0 success, 1 bad input or I/O error, 2 usage error, 3 a .dqc file that does not
decode bit-exactly (corrupt, or computed differently on this machine), 4 file made by other model
weights, 5 an internal error (a bug in dqc: one line, the traceback with DQC_DEBUG=1).
"""

from __future__ import annotations

import io
import json
import os
import sys
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import click
from dqcodec.cli.images import (
    DECODE_BYTES_PER_PIXEL,
    IMAGE_SUFFIXES,
    MAX_PIXELS,
    MAX_PIXELS_ERROR,
    PNG_XMP_KEY,
    check_memory,
    open_image,
    optional_formats,
    read_input,
    xmp_of,
)
from PIL import Image

EXIT_INPUT, EXIT_INTEGRITY, EXIT_MODEL, EXIT_BUG = 1, 3, 4, 5


def _fail(message: str, code: int = EXIT_INPUT) -> None:
    click.echo(f"dqc: error: {message}", err=True)
    sys.exit(code)


def _outcome(fn: Callable[[], object]) -> tuple[int, str]:
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


def _attempt(fn: Callable[[], object]) -> int:
    """Run fn; a library or I/O error becomes a one-line message on stderr. Returns the exit code."""
    code, message = _outcome(fn)
    if code:
        click.echo(f"dqc: error: {message}", err=True)
    return code


def _run(fn: Callable[[], object]) -> None:
    if code := _attempt(fn):
        sys.exit(code)


def _run_each(srcs: tuple[str, ...], dst: str | None, fn: Callable[[str], object]) -> None:
    """fn(src) for every input; a failing one is reported and the rest go on (exit code: the first failure's)."""
    if len(srcs) > 1 and (dst or "-" in srcs):
        raise click.UsageError("with several inputs, each output goes beside its input: no -o and no '-'")
    codes = [_attempt(lambda src=src: fn(src)) for src in srcs]
    if failed := [c for c in codes if c]:
        sys.exit(failed[0])


class OutputExistsError(Exception):
    """The output appeared (made by another run) after the check before the work."""


def _write_output(dst: str, data: bytes, overwrite: bool) -> None:
    """Write to stdout or atomically to a file; never replacing one without `overwrite`, even one
    made meanwhile (callers check `_check_output` before the work, to fail early)."""
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


def _setup(threads: int | None, device: str) -> None:
    import torch

    from dqcodec.errors import DQCError

    if MAX_PIXELS_ERROR:
        raise DQCError(MAX_PIXELS_ERROR)
    if threads:
        torch.set_num_threads(threads)
    if device == "cuda" and not torch.cuda.is_available():
        raise DQCError("--device cuda: no CUDA device is available to torch here")


def _check_output(out: str, overwrite: bool) -> None:
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


def encode_file(
    src: str,
    out: str,
    settings: EncodeSettings,
    overwrite: bool,
    threads: int | None,
    device: str,
    allow_large: bool,
) -> tuple[bytes, tuple[int, int]]:
    import dqcodec
    from dqcodec.errors import DQCWarning
    from dqcodec.shipped import DEFAULT_MODEL

    _check_output(out, overwrite)
    img, exif, image_notes = open_image(src, allow_large)
    for note in image_notes:
        click.echo(f"dqc: note: {src}: {note}", err=True)
    with warnings.catch_warnings(record=True) as notes:
        warnings.simplefilter("always", DQCWarning)
        data = dqcodec.encode(
            img,
            quality=settings.quality,
            target_bpp=settings.target_bpp,
            model=settings.model or DEFAULT_MODEL,
            tune=settings.tune,
            scale=settings.scale,
            target=settings.target,
            icc_profile=img.info.get("icc_profile"),
            exif=exif,
            xmp=xmp_of(img),
            workers=threads,
            device=device,
        )
    for note in notes:
        if issubclass(note.category, DQCWarning):
            click.echo(f"dqc: note: {src}: {note.message}", err=True)
    _write_output(out, data, overwrite)
    return data, img.size


def decode_file(
    src: str, out: str, model: str | None, overwrite: bool, threads: int | None, device: str, allow_large: bool = False
) -> None:
    import dqcodec
    from dqcodec.errors import DQCError

    _check_output(out, overwrite)
    optional_formats()
    fmt = "PNG" if out == "-" else Image.registered_extensions().get(Path(out).suffix.lower())
    if fmt is None or fmt == "DQC":
        raise DQCError(f"cannot tell an image format from {out!r}; use .png")
    limit = None if allow_large else MAX_PIXELS
    data = read_input(src)
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
    except (OSError, ValueError, KeyError):
        buf = io.BytesIO()
        img.save(buf, format=fmt)
    _write_output(out, buf.getvalue(), overwrite)


def _check_decode_memory(src: str, data: bytes) -> None:
    from dqcodec import bitstream
    from dqcodec.errors import FormatError

    try:
        c = bitstream.read(data)
    except FormatError:
        return  # decoding reports it
    width, height = max((c.header.width, c.header.height), (c.coded_width, c.coded_height), key=lambda s: s[0] * s[1])
    check_memory(src, width, height, DECODE_BYTES_PER_PIXEL, "decode")


def _draw_map(data: bytes, map_path: str, overwrite: bool) -> None:
    from dqcodec.codec import decode_tokens, reconstruct
    from dqcodec.granularity_map import draw

    _check_output(map_path, overwrite)
    c, tokens = decode_tokens(data)
    picture = Image.fromarray(reconstruct(tokens, c.coded_width, c.coded_height))  # the map is on the coded grid
    overlay = draw(picture, tokens.levels[0]).resize((c.header.width, c.header.height))
    buf = io.BytesIO()
    overlay.save(buf, format="PNG")
    _write_output(map_path, buf.getvalue(), overwrite)


QUALITY_OPTION = click.option(
    "-q",
    "--quality",
    type=click.FloatRange(0, 100),
    default=50.0,
    show_default=True,
    help="rate-distortion trade-off: higher spends more bits; each image's share of coarse, medium and "
    "fine regions follows from its content",
)
TUNE_OPTION = click.option(
    "--tune",
    type=click.Choice(["ssim", "psnr"]),
    default="ssim",
    show_default=True,
    help="what -q trades bits against: mostly 1 - SSIM along the learned gate's ranking (ssim: best "
    "MS-SSIM/SSIMULACRA2) or squared error region by region (psnr)",
)


def _check_target(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    from dqcodec.errors import DQCError
    from dqcodec.qualitytarget import parse_target

    if value is None:
        return None
    try:
        return str(parse_target(value))
    except DQCError as e:
        raise click.BadParameter(str(e)) from None


TARGET_OPTION = click.option(
    "--target",
    metavar="METRIC=VALUE",
    callback=_check_target,
    help="the lowest -q whose decoded picture reaches this quality: psnr=DB, ms-ssim=X or ssimulacra2=X "
    "(ssimulacra2 needs dqcodec[metrics])",
)
SCALE_OPTION = click.option(
    "--scale",
    type=click.FloatRange(0.25, 2.0),
    help="code the picture resampled by this factor (below 1: lower rates than -q 0; above 1: higher than "
    "-q 100) [default: 1, or chosen by --bpp]",
)


@click.group()
@click.version_option(package_name="dqcodec")
def main() -> None:
    """dqc: a learned lossy image codec (DQ-VAE + DQ-Transformer prior)."""


@main.command()
@click.argument("srcs", metavar="SRC...", nargs=-1, required=True)
@click.option("-o", "--output", "dst", help="output .dqc file ('-' = stdout; default: SRC with .dqc)")
@QUALITY_OPTION
@click.option("--bpp", "target_bpp", type=click.FloatRange(min=0, min_open=True), help="target bits per pixel")
@TARGET_OPTION
@click.option("--model", type=click.Choice(["dq", "vqgan"]), default="dq", show_default=True)
@TUNE_OPTION
@SCALE_OPTION
@click.option("--overwrite", is_flag=True, help="replace an existing output file")
@click.option("--threads", type=click.IntRange(1), help="CPU threads (transform and tiles)")
@click.option(
    "--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True, help="for the transform"
)
@click.option("--allow-large", is_flag=True, help=f"accept images over {MAX_PIXELS / 1e6:g} megapixels")
@click.option("--quiet", is_flag=True, help="no summary line")
def encode(
    srcs: tuple[str, ...],
    dst: str | None,
    quality: float,
    target_bpp: float | None,
    target: str | None,
    model: str,
    tune: str,
    scale: float | None,
    overwrite: bool,
    threads: int | None,
    device: str,
    allow_large: bool,
    quiet: bool,
) -> None:
    """Compress images (PNG, JPEG, WebP, AVIF, TIFF, BMP; JPEG XL with pillow-jxl-plugin) to .dqc.

    Each SRC.ext becomes SRC.dqc unless -o names the output of a single input. A failing input is
    reported and the others go on."""
    if target_bpp is not None and target is not None:
        raise click.UsageError("--bpp and --target both set the trade-off: give one")
    settings = EncodeSettings(quality, target_bpp, model, tune, scale, target)

    def go(src: str) -> None:
        out = dst or ("-" if src == "-" else str(Path(src).with_suffix(".dqc")))
        data, (w, h) = encode_file(src, out, settings, overwrite, threads, device, allow_large)
        bpp = 8 * len(data) / (w * h)
        if out != "-" and not quiet:
            click.echo(f"{out}: {w}x{h}, {len(data)} bytes, {bpp:.4f} bpp", err=True)
        if target_bpp and bpp > 1.05 * target_bpp and not quiet:  # the search never picks a rate over it
            click.echo(f"dqc: note: {src}: {target_bpp:g} bpp is below the lowest rate this image reaches", err=True)

    _run(lambda: _setup(threads, device))
    _run_each(srcs, dst, go)


@main.command()
@click.argument("srcs", metavar="SRC...", nargs=-1, required=True)
@click.option("-o", "--output", "dst", help="output image ('-' = PNG on stdout; default: SRC with .png)")
@click.option("--model", type=click.Choice(["dq", "vqgan"]), help="refuse files of another [default: the file's]")
@click.option("--overwrite", is_flag=True, help="replace an existing output file")
@click.option("--threads", type=click.IntRange(1), help="CPU threads (transform and tiles)")
@click.option(
    "--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True, help="for the transform"
)
@click.option("--allow-large", is_flag=True, help=f"accept pictures over {MAX_PIXELS / 1e6:g} megapixels")
def decode(
    srcs: tuple[str, ...],
    dst: str | None,
    model: str | None,
    overwrite: bool,
    threads: int | None,
    device: str,
    allow_large: bool,
) -> None:
    """Decompress .dqc files to PNG (or any format Pillow writes, by the extension of -o)."""

    def go(src: str) -> None:
        out = dst or ("-" if src == "-" else str(Path(src).with_suffix(".png")))
        decode_file(src, out, model, overwrite, threads, device, allow_large)

    _run(lambda: _setup(threads, device))
    _run_each(srcs, dst, go)


@main.command()
@click.argument("src")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.option("--map", "map_path", help="decode and draw the granularity map over the image into this PNG")
@click.option("--overwrite", is_flag=True, help="replace an existing map file")
def info(src: str, as_json: bool, map_path: str | None, overwrite: bool) -> None:
    """Show the header and chunks of a .dqc file (decodes only for --map)."""

    def go() -> None:
        from dqcodec import bitstream
        from dqcodec.shipped import model_name

        data = read_input(src)
        if map_path:
            _draw_map(data, map_path, overwrite)
        c = bitstream.read(data)
        h = c.header
        d = {
            "format_version": bitstream.FORMAT_VERSION,
            "width": h.width,
            "height": h.height,
            "coded_width": c.coded_width,
            "coded_height": c.coded_height,
            "color": "gray" if h.color == bitstream.COLOR_GRAY else "rgb",
            "bytes": len(data),
            "bpp": 8 * len(data) / (h.width * h.height),
            "tile_size": h.tile_size,
            "tiles": len(c.tiles),
            "model_id": h.model_id.hex(),
            "model": model_name(h.model_id) or "not shipped with this dqc",
            "share_fine": h.share_fine / 65535,
            "share_medium": h.share_medium / 65535,
            "schedule": list(h.periods),
            "precision": h.precision,
            "icc_profile_bytes": len(c.icc_profile or b""),
            "exif_bytes": len(c.exif or b""),
            "xmp_bytes": len(c.xmp or b""),
        }
        if as_json:
            click.echo(json.dumps(d, indent=2))
        else:
            for k, v in d.items():
                click.echo(f"{k:18} {v:.4f}" if isinstance(v, float) else f"{k:18} {v}")

    _run(go)


def _batch_one(job: tuple) -> tuple[str, str]:
    """One file of `dqc batch` (runs in a worker process): (status, message)."""
    from dqcodec.cli.workers import run_job

    from dqcodec.fileio import claim

    src, out, decode_mode, settings, overwrite, allow_large = job
    if Path(out).exists() and not overwrite:
        return "skip", out
    made_elsewhere = False

    def code_it() -> None:
        nonlocal made_elsewhere
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        with claim(Path(out)) as mine:
            if not mine or (Path(out).exists() and not overwrite):
                made_elsewhere = True  # another run is making it, or has made it
                return
            try:
                if decode_mode:
                    decode_file(src, out, settings.model, overwrite, 1, "cpu", allow_large)
                else:
                    encode_file(src, out, settings, overwrite, 1, "cpu", allow_large)
            except OutputExistsError:
                made_elsewhere = True

    code, message = run_job(lambda: _outcome(code_it))
    if code:
        return "fail", message if message.startswith(src) else f"{src}: {message}"
    return ("skip" if made_elsewhere else "ok"), out


@main.command()
@click.argument("src", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("dst", type=click.Path(file_okay=False, path_type=Path))
@QUALITY_OPTION
@click.option("--bpp", "target_bpp", type=click.FloatRange(min=0, min_open=True), help="target bits per pixel")
@TARGET_OPTION
@click.option("--decode", "decode_mode", is_flag=True, help="decode the .dqc files of SRC instead")
@click.option(
    "--format",
    "out_format",
    type=click.Choice(["png", "jpg", "webp", "avif", "tif", "bmp"]),
    default="png",
    show_default=True,
    help="with --decode: the pictures' format",
)
@click.option("--model", type=click.Choice(["dq", "vqgan"]), help="[default: dq; with --decode: each file's]")
@TUNE_OPTION
@SCALE_OPTION
@click.option("-j", "--jobs", type=click.IntRange(1), default=None, help="worker processes [default: CPU cores]")
@click.option("--overwrite", is_flag=True, help="redo files whose output exists (default: skip them, i.e. resume)")
@click.option("--allow-large", is_flag=True, help=f"accept images over {MAX_PIXELS / 1e6:g} megapixels")
def batch(
    src: Path,
    dst: Path,
    quality: float,
    target_bpp: float | None,
    target: str | None,
    decode_mode: bool,
    out_format: str,
    model: str | None,
    tune: str,
    scale: float | None,
    jobs: int | None,
    overwrite: bool,
    allow_large: bool,
) -> None:
    """Encode every image under SRC (recursively) into the same tree under DST (with --decode:
    decode every .dqc file).

    Files whose output already exists are skipped, so an interrupted run resumes. A file that
    fails is reported and the run goes on; the exit code is 1 if any file failed.
    """
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    from dqcodec.cli.workers import init_worker

    if MAX_PIXELS_ERROR:
        _fail(MAX_PIXELS_ERROR)
    suffixes = {".dqc"} if decode_mode else IMAGE_SUFFIXES
    new_suffix = f".{out_format}" if decode_mode else ".dqc"
    files = sorted(p for p in src.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)
    if not files:
        _fail(f"no {'.dqc' if decode_mode else 'image'} files under {src}")
    if target_bpp is not None and target is not None:
        raise click.UsageError("--bpp and --target both set the trade-off: give one")
    settings = EncodeSettings(quality, target_bpp, model, tune, scale, target)
    targets = [(p, (dst / p.relative_to(src)).with_suffix(new_suffix)) for p in files]
    shared = {out for out, n in Counter(out for _, out in targets).items() if n > 1}  # photo.png and photo.jpg
    for p, out in targets:
        if out in shared:
            click.echo(f"dqc: error: {p}: another file under {src} also becomes {out}; rename one", err=True)
    jobs_list = [
        (str(p), str(out), decode_mode, settings, overwrite, allow_large) for p, out in targets if out not in shared
    ]
    counts = {"ok": 0, "skip": 0, "fail": len(targets) - len(jobs_list)}
    tty = sys.stderr.isatty()
    workers = max(1, min(len(jobs_list), jobs or os.cpu_count() or 1))
    # multiprocessing's resource tracker outlives a killed batch and would print a Python warning
    sys.warnoptions.append("ignore:resource_tracker:UserWarning")
    pool = ProcessPoolExecutor(
        workers, mp_context=mp.get_context("spawn"), initializer=init_worker, initargs=(os.getpid(),)
    )
    try:
        for i, (status, message) in enumerate(pool.map(_batch_one, jobs_list, chunksize=1), 1):
            counts[status] += 1
            if status == "fail":
                click.echo(("\r" if tty else "") + f"dqc: error: {message}", err=True)
            bar = "#" * (30 * i // len(jobs_list))
            tally = f"ok {counts['ok']} skipped {counts['skip']} failed {counts['fail']}"
            line = f"[{bar:<30}] {i}/{len(jobs_list)} {tally}"
            click.echo(("\r" + line) if tty else line, err=True, nl=not tty)
    except KeyboardInterrupt:
        # not pool.shutdown, which waits for the jobs: the workers see this process end and stop,
        # removing their temp files; a rerun resumes
        click.echo(f"\ndqc: interrupted; {counts['ok']} files made, rerun to resume", err=True)
        sys.stderr.flush()
        os._exit(130)
    except BrokenProcessPool:
        _fail("a worker process died (out of memory?); finished files are kept, rerun to resume")
    pool.shutdown()
    if tty:
        click.echo("", err=True)
    sys.exit(EXIT_INPUT if counts["fail"] else 0)


if __name__ == "__main__":
    main()
