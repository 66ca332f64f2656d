"""A .dqc file to a picture: the public `decode`, and its steps for tools that want the tokens.

bytes -> format.bitstream (container) -> format.coding (integer prior + range coder, per tile)
      -> models.transform (synthesis) -> format.resample (RSMP) -> format.colour (CCOR)
      -> format.flat (FLAT) -> picture
Nothing here reaches the encoder's choices (`dqcodec.encoder`): tests/test_layout.py checks it.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from dqcodec import arguments
from dqcodec.errors import FormatError, SizeLimitError
from dqcodec.format import bitstream, colour, flat
from dqcodec.format.coding import PRECISION, TILE_SIZE, decode_tiles
from dqcodec.format.resample import resize
from dqcodec.format.tokens import Schedule
from dqcodec.models.dqvae import Tokens
from dqcodec.models.loading import load_model
from dqcodec.models.shipped import DEFAULT_MODEL, model_id, model_named_by
from dqcodec.models.transform import synthesize

MAX_DECODE_PIXELS = 64 * 10**6  # decode's default limit: a few MB of tile headers can claim a gigapixel

__all__ = ["decode", "decode_tokens", "reconstruct", "model_of", "MAX_DECODE_PIXELS"]


def model_of(data: bytes) -> str:
    """The shipped model a .dqc file was made with (from its header's model id)."""
    return model_named_by(bitstream.read(data).header.model_id)


def decode_tokens(
    data: bytes, model: str | None = None, workers: int | None = None, max_pixels: int | None = MAX_DECODE_PIXELS
) -> tuple[bitstream.Container, Tokens]:
    """Parse, entropy-decode and verify a .dqc file; returns the container and the tokens.
    `model` None: the shipped model the file was made with. A picture (or coded picture) over
    `max_pixels` is refused before anything is allocated for it; None: no limit."""
    max_pixels, workers = arguments.pixel_limit(max_pixels), arguments.count("workers", workers)
    if model is None:
        c = bitstream.read(data)
        m = load_model(model_named_by(c.header.model_id))
    else:
        c = bitstream.read(data, expected_model_id=model_id(model))
        m = load_model(model)
    hd = c.header
    if max_pixels is not None and max(hd.width * hd.height, c.coded_width * c.coded_height) > max_pixels:
        raise SizeLimitError(
            f"the file's picture is {hd.width}x{hd.height} (coded {c.coded_width}x{c.coded_height}), "
            f"over the {max_pixels / 1e6:g} MP limit for decoding"
        )
    if hd.tile_size != TILE_SIZE:
        raise FormatError(f"tile size {hd.tile_size} is not supported; this dqc codes {TILE_SIZE}-px tiles")
    if hd.precision != PRECISION:
        raise FormatError(f"probability precision {hd.precision} is not supported; expected {PRECISION}")
    rh, rw = -(-c.coded_height // 16), -(-c.coded_width // 16)
    levels, idx = decode_tiles(m.prior, c.tiles, rh, rw, Schedule(hd.periods), workers)
    return c, Tokens(levels[None], tuple(t[None] for t in idx))  # type: ignore[arg-type]


def reconstruct(
    tokens: Tokens,
    width: int,
    height: int,
    model: str = DEFAULT_MODEL,
    device: str = "cpu",
    coded: tuple[int, int] | None = None,
) -> np.ndarray:
    """Tokens -> uint8 RGB array (height, width, 3): the DQ-VAE decoder's picture, cropped (to
    `coded` (width, height) and then resampled to width x height when the file says so)."""
    m = load_model(model)
    device = arguments.device(device)
    cw, ch = coded or (width, height)
    y = synthesize(m.vae, tokens.levels[0], tuple(i[0] for i in tokens.idx), cw, ch, device, fast=True)
    return resize(y, width, height).permute(1, 2, 0).numpy()


def decode(
    data: bytes,
    model: str | None = None,
    workers: int | None = None,
    device: str = "cpu",
    max_pixels: int | None = MAX_DECODE_PIXELS,
) -> Image.Image:
    """Decompress .dqc bytes to a PIL image (mode RGB or L; ICC profile, EXIF and XMP in its info).
    `model` None: the shipped model the file was made with; a name: that one, or ModelMismatchError.
    A file whose picture is over `max_pixels` is refused (a small file can claim any size); None: no limit."""
    device = arguments.device(device)
    c, tokens = decode_tokens(data, model, workers, max_pixels)
    model = model or model_named_by(c.header.model_id)
    rgb = reconstruct(tokens, c.header.width, c.header.height, model, device, c.coded_size)
    if c.colour:
        rgb = colour.apply(rgb, colour.unpack(c.colour, c.header.width, c.header.height))
    if c.flat:
        rgb = flat.apply(rgb, flat.unpack(c.flat, c.header.width, c.header.height))
    img = Image.fromarray(rgb, "RGB")
    if c.header.color == bitstream.COLOR_GRAY:
        img = img.convert("L")
    if c.icc_profile:
        img.info["icc_profile"] = c.icc_profile
    if c.exif:
        img.info["exif"] = c.exif
    if c.xmp:
        img.info["xmp"] = c.xmp
    return img
