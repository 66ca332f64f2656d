"""dqc: encode, decode and inspect .dqc images.

Exit codes: 0 success, 1 bad input or I/O error, 2 usage error, 3 a .dqc file that is corrupt
(its chunks do not parse, or a tile does not decode to the symbols its encoder wrote), 4 a file
made by other model weights, 5 an internal error (a bug in dqc: one line, the traceback with
DQC_DEBUG=1), 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import io
import json
import math
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import click
from click.core import ParameterSource
from dqcodec.cli.files import (
    EXIT_INPUT,
    EncodeSettings,
    StageTimer,
    check_output,
    decode_file,
    encode_file,
    is_picture_name,
    outcome,
    output_format,
    write_output,
)
from dqcodec.cli.images import IMAGE_SUFFIXES, MAX_PIXELS, MAX_PIXELS_ERROR, read_input
from PIL import Image

from dqcodec.encoder.effort import DEFAULT_EFFORT, MAX_EFFORT

# --threads and -j: more than the CPUs only slows dqc down and costs memory (each thread of the
# prior holds its own buffers), so a count above them is lowered to them; this is the most accepted
MAX_THREADS = 4096
VERBOSE, NORMAL, QUIET = 2, 1, 0


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


class MetadataList(click.ParamType):
    name = "LIST"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> frozenset[str]:
        from dqcodec.errors import DQCError
        from dqcodec.metadata import parse

        if isinstance(value, frozenset):
            return value
        try:
            return parse(str(value))
        except DQCError as e:
            self.fail(str(e), param, ctx)


def decoded_name(src: str, suffix: str = ".png") -> str:
    """Where a decoded picture goes by default: beside its file, named NAME.dqc.png for NAME.dqc,
    so that it never takes the name of the picture the file was made from (NAME.png)."""
    return f"{src[:-4] if src.lower().endswith('.dqc') else src}.dqc{suffix}"


def _echo(message: str) -> None:
    click.echo(message, err=True)


def _fail(message: str, code: int = EXIT_INPUT) -> None:
    _echo(f"dqc: error: {message}")
    sys.exit(code)


def _attempt(fn: Callable[[], object], subject: str | None = None) -> int:
    """Run fn; a library or I/O error becomes one line on stderr naming `subject`. Returns the exit code."""
    code, message = outcome(fn, subject)
    if code:
        _echo(f"dqc: error: {message}")
    return code


def _run(fn: Callable[[], object], subject: str | None = None) -> None:
    if code := _attempt(fn, subject):
        sys.exit(code)


def _run_each(srcs: tuple[str, ...], dst: str | None, fn: Callable[[str], object]) -> None:
    """fn(src) for every input; a failing one is reported and the rest go on (exit code: the first failure's)."""
    if len(srcs) > 1 and (dst or "-" in srcs):
        raise click.UsageError("with several inputs, each output goes beside its input: no -o and no '-'")
    codes = [_attempt(lambda src=src: fn(src), src) for src in srcs]
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


def _verbosity(verbose: bool, quiet: bool) -> int:
    if verbose and quiet:
        raise click.UsageError("-v and --quiet ask for opposite things: give one")
    return VERBOSE if verbose else QUIET if quiet else NORMAL


def _listening(label: str, level: int) -> tuple[StageTimer, object]:
    """A stage timer for one file (a bar on a terminal, unless --quiet), and the context it listens in."""
    from dqcodec import progress

    timer = StageTimer(label, bar=level > QUIET and sys.stderr.isatty())
    return timer, progress.listening(timer)


def _stage_times(stages: dict[str, float]) -> str:
    return ", ".join(f"{name} {seconds:.2f} s" for name, seconds in stages.items())


def _draw_map(data: bytes, map_path: str, overwrite: bool) -> None:
    from dqcodec.decoding import decode_tokens, reconstruct
    from dqcodec.granularity_map import draw, with_legend

    check_output(map_path, overwrite, binary=False)
    c, tokens = decode_tokens(data)
    picture = Image.fromarray(reconstruct(tokens, c.coded_width, c.coded_height))  # the map is on the coded grid
    overlay = draw(picture, tokens.levels[0]).resize((c.header.width, c.header.height))
    buf = io.BytesIO()
    with_legend(overlay, tokens.levels[0]).save(buf, format="PNG")
    write_output(map_path, buf.getvalue(), overwrite)


def _check_target(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    from dqcodec.encoder.qualitytarget import parse_target
    from dqcodec.errors import DQCError

    if value is None:
        return None
    try:
        return str(parse_target(value))
    except DQCError as e:
        raise click.BadParameter(str(e)) from None


def _one_trade_off(ctx: click.Context, target_bpp: float | None, target: str | None) -> None:
    """-q, --bpp and --target each set the trade-off: two of them on the command line is a usage error."""
    given = [name for name, on in (("--bpp", target_bpp is not None), ("--target", target is not None)) if on]
    if ctx.get_parameter_source("quality") == ParameterSource.COMMANDLINE:
        given.insert(0, "-q")
    if len(given) > 1:
        raise click.UsageError(f"{' and '.join(given)} each set the trade-off between size and quality: give one")


QUALITY_OPTION = click.option(
    "-q",
    "--quality",
    type=FiniteFloat(0, 100),
    default=50.0,
    show_default=True,
    help="size against picture: 0 the smallest file (about 0.01 bpp on photos), 100 the best picture dqc makes "
    "(the picture coded at twice its size: about 1.2 bpp, 35 dB; AVIF does better at that size); 50, about "
    "0.13 bpp, suits photos on the web",
)
BPP_OPTION = click.option(
    "--bpp",
    "target_bpp",
    type=FiniteFloat(min=0, min_open=True),
    help="the best picture whose whole file (metadata included) stays at this many bits per pixel",
)
TUNE_OPTION = click.option(
    "--tune",
    type=click.Choice(["ssim", "psnr"]),
    default="ssim",
    show_default=True,
    help="what -q trades bits against: mostly 1 - SSIM along the learned gate's ranking (ssim: best "
    "MS-SSIM/SSIMULACRA2) or squared error region by region (psnr)",
)
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
EFFORT_OPTION = click.option(
    "-e",
    "--effort",
    type=click.IntRange(0, MAX_EFFORT),
    default=DEFAULT_EFFORT,
    show_default=True,
    help=f"how hard the encoder works, 0-{MAX_EFFORT}: 0 takes the codes nearest the analysis (fastest; the same "
    "bytes on every machine); 1 and up refine them against the decoder and correct the colours (a better "
    "picture at the same size; each level about doubles the time); 4 and 5 also choose the regions' "
    "granularity again",
)
SCALE_OPTION = click.option(
    "--scale",
    type=FiniteFloat(0.25, 2.0),
    help="code the picture resampled by this factor, -q then choosing the regions' granularity at that scale "
    "[default: -q's own, or chosen by --bpp]",
)
METADATA_OPTION = click.option(
    "--metadata",
    type=MetadataList(),
    default="icc",
    show_default=True,
    help="what the file keeps of the picture's metadata: all, none, or a list of icc, exif, xmp (EXIF can "
    "hold where the photo was taken; an sRGB profile takes no bytes)",
)
STRIP_OPTION = click.option(
    "--strip", is_flag=True, help="keep no metadata, nor the encoder's settings (--metadata none)"
)
MODEL_OPTION = click.option(
    "--model",
    type=click.Choice(["dq", "vqgan"]),
    default="dq",
    show_default=True,
    help="the model: dq (dynamic granularity) or vqgan (the fixed-grid baseline)",
)
THREADS_OPTION = click.option(
    "--threads",
    type=click.IntRange(1, MAX_THREADS),
    help="CPU threads for the transform and the prior's tiles, at most the CPUs here (any count writes the "
    "same file) [default: torch's, the physical cores]",
)
DEVICE_OPTION = click.option(
    "--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True, help="where the transform runs"
)
OVERWRITE_OPTION = click.option("--overwrite", is_flag=True, help="replace an existing output file")
VERBOSE_OPTION = click.option("-v", "--verbose", is_flag=True, help="say more: time per stage, shares of the levels")
QUIET_OPTION = click.option("--quiet", is_flag=True, help="print nothing but errors")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="dqcodec")
def cli() -> None:
    """dqc: a learned lossy image codec (DQ-VAE + DQ-Transformer prior).

    \b
    dqc encode photo.jpg                 -> photo.dqc (-q 50)
    dqc decode photo.dqc                 -> photo.dqc.png
    dqc info photo.dqc                   what a file holds
    dqc batch photos/ coded/             every picture under a folder (or s3://)
    dqc compare photos/ -o report/       dqc against JPEG, WebP, AVIF, JPEG XL
    """


def main() -> None:
    """The `dqc` command: click's usage errors and Ctrl-C in dqc's style, one line each."""
    try:
        _run_cli()
    finally:
        # the work is done or reported; a Ctrl-C while the interpreter joins worker threads at exit would
        # otherwise print a traceback from atexit
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def _run_cli() -> None:
    try:
        cli.main(prog_name="dqc", standalone_mode=False)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.exceptions.NoArgsIsHelpError as e:  # `dqc` alone: its help
        _echo(e.ctx.get_help())
        sys.exit(e.exit_code)
    except click.UsageError as e:
        help_hint = f" (see '{e.ctx.command_path} --help')" if e.ctx is not None else ""
        _fail(f"{e.format_message()}{help_hint}", e.exit_code)
    except click.ClickException as e:
        _fail(e.format_message(), e.exit_code)
    except (KeyboardInterrupt, click.Abort):
        # temp files are gone already (unwound); not waiting for the prior's threads to finish
        _echo("dqc: interrupted")
        sys.stderr.flush()
        os._exit(130)


@cli.command(short_help="Compress pictures to .dqc files.")
@click.argument("srcs", metavar="SRC...", nargs=-1, required=True)
@click.option("-o", "--output", "dst", help="the output file ('-': standard output) [default: SRC with .dqc]")
@QUALITY_OPTION
@BPP_OPTION
@TARGET_OPTION
@EFFORT_OPTION
@TUNE_OPTION
@METADATA_OPTION
@STRIP_OPTION
@SCALE_OPTION
@MODEL_OPTION
@DISTORTION_OPTION
@THREADS_OPTION
@DEVICE_OPTION
@click.option("--allow-large", is_flag=True, help=f"accept pictures over {MAX_PIXELS / 1e6:g} megapixels")
@OVERWRITE_OPTION
@VERBOSE_OPTION
@QUIET_OPTION
@click.pass_context
def encode(
    ctx: click.Context,
    srcs: tuple[str, ...],
    dst: str | None,
    quality: float,
    target_bpp: float | None,
    target: str | None,
    effort: int,
    tune: str,
    metadata: frozenset[str],
    strip: bool,
    scale: float | None,
    model: str,
    distortion: str | None,
    threads: int | None,
    device: str,
    allow_large: bool,
    overwrite: bool,
    verbose: bool,
    quiet: bool,
) -> None:
    """Compress pictures (PNG, JPEG, WebP, AVIF, TIFF, BMP; JPEG XL with pillow-jxl-plugin) to .dqc.

    Each SRC.ext becomes SRC.dqc beside it, unless -o names the output of a single input. -q, --bpp
    and --target each choose the trade-off between size and picture: give one. A failing input is
    reported and the others go on."""
    _one_trade_off(ctx, target_bpp, target)
    level = _verbosity(verbose, quiet)
    kept = frozenset() if strip else metadata
    settings = EncodeSettings(quality, target_bpp, model, tune, scale, target, distortion, effort, kept)

    def go(src: str) -> None:
        out = dst or ("-" if src == "-" else str(Path(src).with_suffix(".dqc")))
        if out != "-" and is_picture_name(out):
            _echo(f"dqc: note: {out}: a .dqc file under a picture's extension; other programs will not read it")
        timer, listening = _listening(Path(src).name, level)
        with listening:  # type: ignore[attr-defined]
            try:
                data, (w, h), notes = encode_file(src, out, settings, overwrite, threads, device, allow_large,
                                                  record_settings=not strip)  # fmt: skip
            finally:
                stages = timer.close()
        if level > QUIET:
            for note in notes:
                _echo(f"dqc: note: {src}: {note}")
        bpp = 8 * len(data) / (w * h)
        if target_bpp and bpp > 1.05 * target_bpp and level > QUIET and not any("metadata alone" in n for n in notes):
            # the search never picks a rate over the target where it has a choice
            _echo(f"dqc: note: {src}: {target_bpp:g} bpp is below the lowest rate this image reaches ({len(data)} "
                  "bytes: every region coarse, at the smallest scale)")  # fmt: skip
        if out != "-" and level > QUIET:
            _echo(f"{out}: {w}x{h}, {len(data)} bytes, {bpp:.4f} bpp")
        if level == VERBOSE:
            _echo(f"  {_file_summary(data)}; {_stage_times(stages)}")

    threads = bounded_count("--threads", threads)
    _run(lambda: _setup(threads, device))
    _run_each(srcs, dst, go)


def _file_summary(data: bytes) -> str:
    """Shares of the levels, resampling and what the file holds besides tokens (for -v)."""
    from dqcodec.format import bitstream

    c = bitstream.read(data)
    medium, fine = c.header.share_medium / 65535, c.header.share_fine / 65535
    parts = [f"regions coarse {1 - medium - fine:.0%} medium {medium:.0%} fine {fine:.0%}"]
    if c.coded_size:
        parts.append(f"coded at {c.coded_width}x{c.coded_height}")
    if c.colour:
        parts.append(f"colour correction {len(c.colour)} bytes")
    if c.flat:
        parts.append(f"flat blocks {len(c.flat)} bytes")
    if c.settings:
        parts.append(str(c.settings))
    return ", ".join(parts)


@cli.command(short_help="Decompress .dqc files to pictures.")
@click.argument("srcs", metavar="SRC...", nargs=-1, required=True)
@click.option(
    "-o",
    "--output",
    "dst",
    help="the output picture, its format by its extension ('-': PNG on standard output) "
    "[default: SRC.dqc -> SRC.dqc.png beside it, never the original's name]",
)
@click.option(
    "--quality",
    "output_quality",
    type=click.IntRange(1, 100),
    help="of a lossy output (JPEG, WebP, AVIF) [default: JPEG 95, AVIF 90, WebP lossless]",
)
@click.option("--model", type=click.Choice(["dq", "vqgan"]), help="refuse files of another model [default: any]")
@THREADS_OPTION
@DEVICE_OPTION
@click.option("--allow-large", is_flag=True, help=f"accept pictures over {MAX_PIXELS / 1e6:g} megapixels")
@OVERWRITE_OPTION
@VERBOSE_OPTION
@QUIET_OPTION
def decode(
    srcs: tuple[str, ...],
    dst: str | None,
    output_quality: int | None,
    model: str | None,
    threads: int | None,
    device: str,
    allow_large: bool,
    overwrite: bool,
    verbose: bool,
    quiet: bool,
) -> None:
    """Decompress .dqc files to PNG (or any format Pillow writes, by the extension of -o).

    SRC.dqc becomes SRC.dqc.png beside it, so that a decoded picture never replaces the one the
    file was made from; -o names the output of a single input."""
    level = _verbosity(verbose, quiet)

    def go(src: str) -> None:
        out = dst or ("-" if src == "-" else decoded_name(src))
        timer, listening = _listening(Path(src).name, level)
        with listening:  # type: ignore[attr-defined]
            try:
                w, h = decode_file(src, out, model, overwrite, threads, device, allow_large, output_quality)
            finally:
                stages = timer.close()
        if out != "-" and level == VERBOSE:
            _echo(f"{out}: {w}x{h}; {_stage_times(stages)}")

    threads = bounded_count("--threads", threads)
    _run(lambda: _setup(threads, device))
    _run_each(srcs, dst, go)


@cli.command(short_help="Show what a .dqc file holds.")
@click.argument("src")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.option(
    "--map", "map_path", help="decode, and draw the granularity map over the picture into this PNG (with a legend)"
)
@OVERWRITE_OPTION
@QUIET_OPTION
def info(src: str, as_json: bool, map_path: str | None, overwrite: bool, quiet: bool) -> None:
    """Show the header and chunks of a .dqc file: size, rate, model, the shares of coarse, medium
    and fine regions, and the settings it was made with (decodes only for --map). With --quiet,
    only the exit code says whether the file reads."""

    def go() -> None:
        from dqcodec.format import bitstream
        from dqcodec.models.shipped import model_name

        data = read_input(src)
        if map_path:
            _draw_map(data, map_path, overwrite)
        c = bitstream.read(data)
        h = c.header
        medium, fine = h.share_medium / 65535, h.share_fine / 65535
        d = {
            "format_version": c.version,
            "width": h.width,
            "height": h.height,
            "coded_width": c.coded_width,
            "coded_height": c.coded_height,
            "color": "gray" if h.color == bitstream.COLOR_GRAY else "rgb",
            "bytes": len(data),
            "bpp": 8 * len(data) / (h.width * h.height),
            "model": model_name(h.model_id) or "not shipped with this dqc",
            "model_id": h.model_id.hex(),
            "share_coarse": max(0.0, 1 - medium - fine),
            "share_medium": medium,
            "share_fine": fine,
            "made_with": str(c.settings) if c.settings else "not recorded",
            "colour_correction_bytes": len(c.colour or b""),
            "flat_blocks_bytes": len(c.flat or b""),
            "icc_profile_bytes": len(c.icc_profile or b""),
            "exif_bytes": len(c.exif or b""),
            "xmp_bytes": len(c.xmp or b""),
            "tiles": len(c.tiles),
            "tile_size": h.tile_size,
            "schedule": list(h.periods),
            "precision": h.precision,
        }
        if c.settings:
            d["settings"] = {k: getattr(c.settings, k) for k in ("mode", "value", "metric", "tune", "effort")}
            d["settings"]["dqc"] = ".".join(map(str, c.settings.dqc))
        if quiet:
            return
        if as_json:
            click.echo(json.dumps(d, indent=2))
        else:
            for k, v in d.items():
                if k != "settings":
                    click.echo(f"{k:24} {v:.4f}" if isinstance(v, float) else f"{k:24} {v}")

    _run(go, src)


@cli.command(short_help="Encode or decode every picture under a folder (or an object store).")
@click.argument("src", required=False)
@click.argument("dst", required=False)
@QUALITY_OPTION
@BPP_OPTION
@TARGET_OPTION
@EFFORT_OPTION
@TUNE_OPTION
@METADATA_OPTION
@STRIP_OPTION
@SCALE_OPTION
@click.option(
    "--model", type=click.Choice(["dq", "vqgan"]), help="the model [default: dq; with --decode: each file's own]"
)
@DISTORTION_OPTION
@click.option("--decode", "decode_mode", is_flag=True, help="decode the .dqc files of SRC instead")
@click.option(
    "--format",
    "out_format",
    type=click.Choice(["png", "jpg", "webp", "avif", "tif", "bmp"]),
    default="png",
    show_default=True,
    help="with --decode: the pictures' format (NAME.dqc -> NAME.dqc.png)",
)
@click.option(
    "--output-quality",
    type=click.IntRange(1, 100),
    help="with --decode, of lossy pictures [default: JPEG 95, AVIF 90, WebP lossless]",
)
@click.option(
    "-j",
    "--jobs",
    type=click.IntRange(1, MAX_THREADS),
    default=None,
    help="worker processes (each codes one file at a time; not threads, as avifenc's -j), at most the CPUs "
    "here [default: the CPUs]",
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
    help="with --scheduler local: threads per worker process",
)
@click.option("--overwrite", is_flag=True, help="redo every file whose output exists (default: skip them, i.e. resume)")
@click.option(
    "--update", is_flag=True, help="redo the files an earlier run made with other settings (its manifest says which)"
)
@click.option("--allow-large", is_flag=True, help=f"accept pictures over {MAX_PIXELS / 1e6:g} megapixels")
@click.option("--report", "report_dst", metavar="DST", help="summarise the manifest of earlier runs into DST, and stop")
@QUIET_OPTION
@click.pass_context
def batch(
    ctx: click.Context,
    src: str | None,
    dst: str | None,
    quality: float,
    target_bpp: float | None,
    target: str | None,
    effort: int,
    tune: str,
    metadata: frozenset[str],
    strip: bool,
    scale: float | None,
    model: str | None,
    distortion: str | None,
    decode_mode: bool,
    out_format: str,
    output_quality: int | None,
    jobs: int | None,
    scheduler: str | None,
    threads: int,
    overwrite: bool,
    update: bool,
    allow_large: bool,
    report_dst: str | None,
    quiet: bool,
) -> None:
    """Encode every picture under SRC (recursively) into the same tree under DST (with --decode:
    decode every .dqc file). SRC and DST are folders or fsspec URLs (s3://bucket/prefix, gs://,
    file://).

    Files whose output already exists are skipped, so an interrupted run resumes; a run with other
    settings than the one that made them says so (--update redoes them). A file that fails is
    reported and the run goes on; the exit code is 1 if any file failed. Every input gets a row in
    the run's manifest (JSON Lines: source, output, status, bytes, bpp, seconds, worker, error,
    settings), in DST/dqc-manifest/ (DST/.dqc-manifest/ for --decode, out of the pictures' way);
    --report DST summarises them.
    """
    from dqcodec.cli import batch as batching

    if report_dst:
        _run(lambda: click.echo(batching.report(report_dst)), report_dst)
        return
    if not src or not dst:
        raise click.UsageError("give SRC and DST (or --report DST)")
    _one_trade_off(ctx, target_bpp, target)
    if MAX_PIXELS_ERROR:
        _fail(MAX_PIXELS_ERROR)
    kept = frozenset() if strip else metadata
    settings = EncodeSettings(quality, target_bpp, model, tune, scale, target, distortion, effort, kept,
                              output_quality)  # fmt: skip
    suffixes = {".dqc"} if decode_mode else IMAGE_SUFFIXES
    image_format = output_format(f"picture.{out_format}")  # Pillow's name, as decode's -o finds it
    _run(lambda: batching.check_destination(dst), dst)
    listed: list = []
    _run(lambda: listed.extend(batching.list_jobs(
        src, dst, decode_mode, f".{out_format}", image_format, settings, overwrite, allow_large, suffixes, update
    )), src)  # fmt: skip
    job_list, settled, changed = listed
    if not job_list and not settled:
        _fail(f"{src}: no {'.dqc' if decode_mode else 'picture'} files there")
    if changed and not update:
        _echo(f"dqc: note: {batching.count(len(changed), 'file')} under {dst} were made with other settings than these "
              "(their manifest says how); --update redoes them")  # fmt: skip
    if scheduler is None or scheduler == "local":  # processes on this machine
        jobs, threads = bounded_count("-j", jobs), bounded_count("--threads", threads) or 1
    stop = threading.Event()
    rows = batching.run_jobs(job_list, scheduler, jobs, threads, stop)
    failed: list[int] = []
    _run(lambda: failed.append(batching.run_batch(job_list, settled, dst, rows, stop, quiet, decode_mode)), dst)
    sys.exit(EXIT_INPUT if failed[0] else 0)


@cli.command(short_help="Compare dqc with other codecs on your pictures: an RD report.")
@click.argument("srcs", metavar="SRC...", nargs=-1, required=True)
@click.option(
    "-o",
    "--output",
    "report_dir",
    required=True,
    metavar="REPORT_DIR",
    help="the report's folder: index.html, results.csv, summary.json, bd-rate.md, plots/ and crops/",
)
@click.option("--codecs", metavar="LIST",
              help="among dq, vqgan, jpeg, webp, avif, jxl, with options as dq:effort=5 or dq:tune=psnr "
                   "[default: all that are installed]")  # fmt: skip
@click.option("--metrics", metavar="LIST",
              help="among psnr, ms-ssim, ssimulacra2, butteraugli, cvvdp [default: all that are installed; "
                   "butteraugli needs Debian's libjxl-devtools, cvvdp the cvvdp package]")  # fmt: skip
@click.option("--rates", metavar="LO-HI",
              help="the range of bpp to compare at, such as 0.05-0.8 [default: from each image's smallest file, "
                   "of any codec, to the size of JPEG at quality 75]")  # fmt: skip
@click.option("--quick", is_flag=True, help="4 rates per codec instead of 6")
@click.option("-j", "--jobs", type=click.IntRange(1, MAX_THREADS), default=None,
              help="worker processes, one image each (not threads) [default: the CPUs]")  # fmt: skip
@click.option("--scheduler", metavar="ADDRESS",
              help="run on a Dask cluster: its scheduler (tcp://host:8786; REPORT_DIR must be on a disk its "
                   "workers share), or 'local' for a LocalCluster (needs dqcodec[dask])")  # fmt: skip
@click.option("--threads", type=click.IntRange(1, MAX_THREADS), default=1, show_default=True,
              help="with --scheduler local: threads per worker process")  # fmt: skip
@QUIET_OPTION
def compare(
    srcs: tuple[str, ...], report_dir: str, codecs: str | None, metrics: str | None, rates: str | None, quick: bool,
    jobs: int | None, scheduler: str | None, threads: int, quiet: bool,
) -> None:  # fmt: skip
    """Rate-distortion of dqc against JPEG, WebP, AVIF, JPEG XL and the fixed-grid VQGAN on the
    pictures in SRC (files or folders), with a report in REPORT_DIR: open its index.html.

    Each codec is swept over the same range of rates, each point a real round trip (the file on
    disk, decoded by the codec's own decoder) measured by PSNR, MS-SSIM and SSIMULACRA2 (and
    Butteraugli and ColorVideoVDP where installed). The report holds BD-rates of every codec
    against every other, RD plots, and crops at equal size side by side. Coded files are cached in
    REPORT_DIR/.cache: a rerun, or a run after Ctrl-C, does only what is missing.
    """
    try:
        import bjontegaard  # noqa: F401
        import matplotlib  # noqa: F401
    except ImportError:
        _fail("dqc compare needs its extras: pip install 'dqcodec[compare]'")
    from dqcodec.compare.run import run

    code: list[int] = []
    # its messages name what they are about: an option, a SRC or REPORT_DIR
    _run(lambda: code.append(run(srcs, report_dir, codecs, metrics, rates, quick, jobs, scheduler, threads, quiet)))
    sys.exit(code[0])


if __name__ == "__main__":
    main()
