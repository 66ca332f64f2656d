"""dqc: encode, decode and inspect .dqc images.

Exit codes: 0 success, 1 bad input or I/O error, 2 usage error, 3 a .dqc file that does not
decode bit-exactly (corrupt, or computed differently on this machine), 4 file made by other model
weights.
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import click
from PIL import Image

EXIT_INPUT, EXIT_INTEGRITY, EXIT_MODEL = 1, 3, 4


def _fail(message: str, code: int = EXIT_INPUT) -> None:
    click.echo(f"dqc: error: {message}", err=True)
    sys.exit(code)


def _run(fn):  # noqa: ANN001, ANN202
    """Turn library errors into one-line messages and exit codes."""
    from dqcodec.errors import DQCError, IntegrityError, ModelMismatchError

    try:
        return fn()
    except IntegrityError as e:
        _fail(str(e), EXIT_INTEGRITY)
    except ModelMismatchError as e:
        _fail(str(e), EXIT_MODEL)
    except DQCError as e:
        _fail(str(e))
    except (OSError, Image.DecompressionBombError) as e:
        _fail(
            f"{getattr(e, 'filename', None) or ''} {e.strerror if isinstance(e, OSError) and e.strerror else e}".strip()
        )


def _read_input(src: str) -> bytes:
    if src == "-":
        return sys.stdin.buffer.read()
    return Path(src).read_bytes()


def _write_output(dst: str, data: bytes, overwrite: bool) -> None:
    from dqcodec.fileio import write_atomic

    if dst == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    path = Path(dst)
    if path.exists() and not overwrite:
        _fail(f"{dst} exists (use --overwrite to replace it)")
    write_atomic(path, lambda f: f.write(data))


@click.group()
@click.version_option(package_name="dqcodec")
def main() -> None:
    """dqc: a learned lossy image codec (DQ-VAE + DQ-Transformer prior)."""


@main.command()
@click.argument("src")
@click.option("-o", "--output", "dst", help="output .dqc file ('-' = stdout; default: SRC with .dqc)")
@click.option("-q", "--quality", type=click.FloatRange(0, 100), default=50.0, show_default=True)
@click.option("--model", type=click.Choice(["dq", "vqgan"]), default="dq", show_default=True)
@click.option("--overwrite", is_flag=True, help="replace an existing output file")
@click.option("--threads", type=click.IntRange(1), help="torch threads for the transform")
def encode(src: str, dst: str | None, quality: float, model: str, overwrite: bool, threads: int | None) -> None:
    """Compress an image (PNG, JPEG, WebP, TIFF, BMP) to .dqc."""

    def go() -> None:
        import torch
        from PIL import ImageOps

        import dqcodec
        from dqcodec.errors import DQCError

        if threads:
            torch.set_num_threads(threads)
        out = dst or ("-" if src == "-" else str(Path(src).with_suffix(".dqc")))
        if out != "-" and Path(out).exists() and not overwrite:
            raise DQCError(f"{out} exists (use --overwrite to replace it)")
        try:
            img = Image.open(io.BytesIO(_read_input(src)))
            img.load()
        except Image.UnidentifiedImageError:
            raise DQCError(f"{src}: not an image format dqc can read") from None
        img = ImageOps.exif_transpose(img) or img
        data = dqcodec.encode(img, quality=quality, model=model, icc_profile=img.info.get("icc_profile"))
        _write_output(out, data, overwrite)
        if out != "-":
            bpp = 8 * len(data) / (img.width * img.height)
            click.echo(f"{out}: {img.width}x{img.height}, {len(data)} bytes, {bpp:.4f} bpp", err=True)

    _run(go)


@main.command()
@click.argument("src")
@click.option("-o", "--output", "dst", help="output image ('-' = PNG on stdout; default: SRC with .png)")
@click.option("--model", type=click.Choice(["dq", "vqgan"]), default="dq", show_default=True)
@click.option("--overwrite", is_flag=True, help="replace an existing output file")
@click.option("--threads", type=click.IntRange(1), help="torch threads for the transform")
def decode(src: str, dst: str | None, model: str, overwrite: bool, threads: int | None) -> None:
    """Decompress a .dqc file to PNG (or any format Pillow writes, by extension)."""

    def go() -> None:
        import torch

        import dqcodec
        from dqcodec.errors import DQCError

        if threads:
            torch.set_num_threads(threads)
        out = dst or ("-" if src == "-" else str(Path(src).with_suffix(".png")))
        if out != "-" and Path(out).exists() and not overwrite:
            raise DQCError(f"{out} exists (use --overwrite to replace it)")
        img = dqcodec.decode(_read_input(src), model=model)
        buf = io.BytesIO()
        fmt = "PNG" if out == "-" else Image.registered_extensions().get(Path(out).suffix.lower())
        if fmt is None:
            raise DQCError(f"cannot tell an image format from {out!r}; use .png")
        img.save(buf, format=fmt, icc_profile=img.info.get("icc_profile"))
        _write_output(out, buf.getvalue(), overwrite)

    _run(go)


@main.command()
@click.argument("src")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def info(src: str, as_json: bool) -> None:
    """Show the header and chunks of a .dqc file (no decoding)."""

    def go() -> None:
        from dqcodec import bitstream

        data = _read_input(src)
        c = bitstream.read(data)
        h = c.header
        d = {
            "format_version": bitstream.FORMAT_VERSION,
            "width": h.width,
            "height": h.height,
            "color": "gray" if h.color == bitstream.COLOR_GRAY else "rgb",
            "bytes": len(data),
            "bpp": 8 * len(data) / (h.width * h.height),
            "tile_size": h.tile_size,
            "tiles": len(c.tiles),
            "model_id": h.model_id.hex(),
            "share_fine": h.share_fine / 65535,
            "share_medium": h.share_medium / 65535,
            "schedule": list(h.periods),
            "precision": h.precision,
            "icc_profile_bytes": len(c.icc_profile or b""),
            "exif_bytes": len(c.exif or b""),
        }
        if as_json:
            click.echo(json.dumps(d, indent=2))
        else:
            for k, v in d.items():
                click.echo(f"{k:18} {v:.4f}" if isinstance(v, float) else f"{k:18} {v}")

    _run(go)


if __name__ == "__main__":
    main()
