"""dqc: encode, decode and inspect .dqc images.

Exit codes: 0 success, 1 bad input or I/O error, 2 usage error, 3 a .dqc file that does not
decode bit-exactly (corrupt, or computed differently on this machine), 4 file made by other model
weights, 5 an internal error (a bug in dqc: one line, the traceback with DQC_DEBUG=1).
"""

from __future__ import annotations

import io
import json
import math
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import click
from dqcodec.cli.files import (
    EXIT_INPUT,
    EncodeSettings,
    check_output,
    decode_file,
    encode_file,
    outcome,
    write_output,
)
from dqcodec.cli.images import (
    IMAGE_SUFFIXES,
    MAX_PIXELS,
    MAX_PIXELS_ERROR,
    read_input,
)
from PIL import Image

# --threads and -j: more than the CPUs only slows dqc down and costs memory (each thread of the
# prior holds its own buffers), so a count above them is lowered to them; this is the most accepted
MAX_THREADS = 4096


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def bounded_count(option: str, count: int | None) -> int | None:
    """`count` (of threads or processes), lowered to the CPUs this process may use, with a note."""
    cpus = available_cpus()
    if count is not None and count > cpus:
        click.echo(f"dqc: note: {option} {count}: this machine gives dqc {cpus} CPUs; using {cpus}", err=True)
        return cpus
    return count


class FiniteFloat(click.FloatRange):
    """click.FloatRange that also refuses NaN and infinity (which pass every range check)."""

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> float:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number


def _fail(message: str, code: int = EXIT_INPUT) -> None:
    click.echo(f"dqc: error: {message}", err=True)
    sys.exit(code)


def _attempt(fn: Callable[[], object]) -> int:
    """Run fn; a library or I/O error becomes a one-line message on stderr. Returns the exit code."""
    code, message = outcome(fn)
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


def _setup(threads: int | None, device: str) -> None:
    import torch

    from dqcodec.errors import DQCError

    if MAX_PIXELS_ERROR:
        raise DQCError(MAX_PIXELS_ERROR)
    if threads:
        torch.set_num_threads(threads)
    if device == "cuda" and not torch.cuda.is_available():
        raise DQCError("--device cuda: no CUDA device is available to torch here")


THREADS_OPTION = click.option(
    "--threads",
    type=click.IntRange(1, MAX_THREADS),
    help="CPU threads for the transform and the prior's tiles, at most the CPUs here [default: torch's, "
    "the physical cores]",
)


def _draw_map(data: bytes, map_path: str, overwrite: bool) -> None:
    from dqcodec.codec import decode_tokens, reconstruct
    from dqcodec.granularity_map import draw

    check_output(map_path, overwrite)
    c, tokens = decode_tokens(data)
    picture = Image.fromarray(reconstruct(tokens, c.coded_width, c.coded_height))  # the map is on the coded grid
    overlay = draw(picture, tokens.levels[0]).resize((c.header.width, c.header.height))
    buf = io.BytesIO()
    overlay.save(buf, format="PNG")
    write_output(map_path, buf.getvalue(), overwrite)


QUALITY_OPTION = click.option(
    "-q",
    "--quality",
    type=FiniteFloat(0, 100),
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
DISTORTION_OPTION = click.option(
    "--distortion",
    type=click.Choice(["estimated", "measured"]),
    help="how the encoder knows what each region's level costs in quality: estimated from the analysis, "
    "or measured by decoding the picture at every level (about twice the encoding time) "
    "[default: estimated with --tune ssim, measured with --tune psnr]",
)
SCALE_OPTION = click.option(
    "--scale",
    type=FiniteFloat(0.25, 2.0),
    help="code the picture resampled by this factor (below 1: lower rates than -q 0; above 1: higher than "
    "-q 100) [default: 1, or chosen by --bpp]",
)


@click.group()
@click.version_option(package_name="dqcodec")
def cli() -> None:
    """dqc: a learned lossy image codec (DQ-VAE + DQ-Transformer prior)."""


def main() -> None:
    """The `dqc` command: click's usage errors and Ctrl-C in dqc's style, one line each."""
    try:
        cli.main(prog_name="dqc", standalone_mode=False)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.exceptions.NoArgsIsHelpError as e:  # `dqc` alone: its help
        click.echo(e.ctx.get_help(), err=True)
        sys.exit(e.exit_code)
    except click.UsageError as e:
        help_hint = f" (see '{e.ctx.command_path} --help')" if e.ctx is not None else ""
        _fail(f"{e.format_message()}{help_hint}", e.exit_code)
    except click.ClickException as e:
        _fail(e.format_message(), e.exit_code)
    except (KeyboardInterrupt, click.Abort):
        # temp files are gone already (unwound); not waiting for the prior's threads to finish
        click.echo("dqc: interrupted", err=True)
        sys.stderr.flush()
        os._exit(130)


@cli.command()
@click.argument("srcs", metavar="SRC...", nargs=-1, required=True)
@click.option("-o", "--output", "dst", help="output .dqc file ('-' = stdout; default: SRC with .dqc)")
@QUALITY_OPTION
@click.option("--bpp", "target_bpp", type=FiniteFloat(min=0, min_open=True), help="target bits per pixel")
@TARGET_OPTION
@click.option("--model", type=click.Choice(["dq", "vqgan"]), default="dq", show_default=True)
@TUNE_OPTION
@DISTORTION_OPTION
@SCALE_OPTION
@click.option("--overwrite", is_flag=True, help="replace an existing output file")
@THREADS_OPTION
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
    distortion: str | None,
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
    settings = EncodeSettings(quality, target_bpp, model, tune, scale, target, distortion)

    def go(src: str) -> None:
        out = dst or ("-" if src == "-" else str(Path(src).with_suffix(".dqc")))
        data, (w, h) = encode_file(src, out, settings, overwrite, threads, device, allow_large)
        bpp = 8 * len(data) / (w * h)
        if out != "-" and not quiet:
            click.echo(f"{out}: {w}x{h}, {len(data)} bytes, {bpp:.4f} bpp", err=True)
        if target_bpp and bpp > 1.05 * target_bpp and not quiet:  # the search never picks a rate over it
            click.echo(f"dqc: note: {src}: {target_bpp:g} bpp is below the lowest rate this image reaches", err=True)

    threads = bounded_count("--threads", threads)
    _run(lambda: _setup(threads, device))
    _run_each(srcs, dst, go)


@cli.command()
@click.argument("srcs", metavar="SRC...", nargs=-1, required=True)
@click.option("-o", "--output", "dst", help="output image ('-' = PNG on stdout; default: SRC with .png)")
@click.option("--model", type=click.Choice(["dq", "vqgan"]), help="refuse files of another [default: the file's]")
@click.option("--overwrite", is_flag=True, help="replace an existing output file")
@THREADS_OPTION
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

    threads = bounded_count("--threads", threads)
    _run(lambda: _setup(threads, device))
    _run_each(srcs, dst, go)


@cli.command()
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


@cli.command()
@click.argument("src", required=False)
@click.argument("dst", required=False)
@QUALITY_OPTION
@click.option("--bpp", "target_bpp", type=FiniteFloat(min=0, min_open=True), help="target bits per pixel")
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
@DISTORTION_OPTION
@SCALE_OPTION
@click.option(
    "-j",
    "--jobs",
    type=click.IntRange(1, MAX_THREADS),
    default=None,
    help="worker processes (pool or LocalCluster), at most the CPUs here [default: the CPUs]",
)
@click.option(
    "--scheduler",
    metavar="ADDRESS",
    help="run on a Dask cluster: its scheduler (tcp://host:8786), or 'local' for a LocalCluster (needs dqcodec[dask])",
)
@click.option(
    "--threads",
    type=click.IntRange(1, MAX_THREADS),
    default=1,
    show_default=True,
    help="with --scheduler local: threads per worker",
)
@click.option("--overwrite", is_flag=True, help="redo files whose output exists (default: skip them, i.e. resume)")
@click.option("--allow-large", is_flag=True, help=f"accept images over {MAX_PIXELS / 1e6:g} megapixels")
@click.option(
    "--report", "report_dst", metavar="DST", help="summarise the manifest of an earlier run into DST, and stop"
)
def batch(
    src: str | None,
    dst: str | None,
    quality: float,
    target_bpp: float | None,
    target: str | None,
    decode_mode: bool,
    out_format: str,
    model: str | None,
    tune: str,
    distortion: str | None,
    scale: float | None,
    jobs: int | None,
    scheduler: str | None,
    threads: int,
    overwrite: bool,
    allow_large: bool,
    report_dst: str | None,
) -> None:
    """Encode every image under SRC (recursively) into the same tree under DST (with --decode:
    decode every .dqc file). SRC and DST are folders or fsspec URLs (s3://bucket/prefix, gs://,
    file://).

    Files whose output already exists are skipped, so an interrupted run resumes. A file that
    fails is reported and the run goes on; the exit code is 1 if any file failed. Every input
    gets a row in DST/dqc-manifest/ (JSON Lines: source, output, status, bytes, bpp, seconds,
    worker, error); --report DST summarises it.
    """
    from dqcodec.cli import batch as batching

    if report_dst:
        _run(lambda: click.echo(batching.report(report_dst)))
        return
    if not src or not dst:
        raise click.UsageError("give SRC and DST (or --report DST)")
    if target_bpp is not None and target is not None:
        raise click.UsageError("--bpp and --target both set the trade-off: give one")
    if MAX_PIXELS_ERROR:
        _fail(MAX_PIXELS_ERROR)
    settings = EncodeSettings(quality, target_bpp, model, tune, scale, target, distortion)
    suffixes = {".dqc"} if decode_mode else IMAGE_SUFFIXES
    image_format = Image.registered_extensions()[f".{out_format}"]
    listed: list = []
    _run(lambda: listed.extend(batching.list_jobs(
        src, dst, decode_mode, f".{out_format}", image_format, settings, overwrite, allow_large, suffixes
    )))  # fmt: skip
    job_list, settled = listed
    if not job_list and not settled:
        _fail(f"no {'.dqc' if decode_mode else 'image'} files under {src}")
    if scheduler is None or scheduler == "local":  # processes on this machine
        jobs, threads = bounded_count("-j", jobs), bounded_count("--threads", threads) or 1
    stop = threading.Event()
    if scheduler:
        rows = batching.run_dask(job_list, scheduler, jobs, threads, stop)
    else:
        rows = batching.run_pool(job_list, max(1, min(len(job_list), jobs or available_cpus())), stop)
    failed: list[int] = []
    _run(lambda: failed.append(batching.run_batch(job_list, settled, dst, rows, stop)))
    sys.exit(EXIT_INPUT if failed[0] else 0)


if __name__ == "__main__":
    main()
