"""Image <-> .dqc bytes: the public encode/decode.

encode: picture -> transform.analysis -> ratecontrol (granularity map) -> coding (integer
        prior + range coder, per tile) -> bitstream (container)
decode: bitstream -> coding -> transform.synthesis -> resample back (RSMP) -> picture
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from PIL import Image

from dqcodec import arguments, bitstream
from dqcodec.coding import PRECISION, TILE_SIZE, decode_tiles, encode_tiles
from dqcodec.errors import ArgumentError, DQCError, FormatError, MetadataWarning, SizeLimitError, TargetWarning
from dqcodec.loading import LoadedModel, load_model
from dqcodec.models.dqvae import Tokens
from dqcodec.qualitytarget import QualityTarget, parse_target, quality_for_target
from dqcodec.ratecontrol import (
    DEFAULT_QUALITY,
    DEFAULT_TUNE,
    analyze,
    check_quality,
    coded_size,
    fit_rate,
    header_shares,
    levels_for_quality,
)
from dqcodec.resample import resize
from dqcodec.shipped import DEFAULT_MODEL, model_id, model_named_by
from dqcodec.tokens import Schedule
from dqcodec.transform import resample_picture, synthesize

MAX_DECODE_PIXELS = 64 * 10**6  # decode's default limit: a few MB of tile headers can claim a gigapixel
# the colour space field of an ICC profile's header (bytes 16-19; 36-39 hold the signature "acsp")
ICC_SPACE = {bitstream.COLOR_RGB: b"RGB ", bitstream.COLOR_GRAY: b"GRAY"}

__all__ = ["encode", "decode", "decode_tokens", "write_tokens", "reconstruct", "image_to_tensor", "model_of"]


def model_of(data: bytes) -> str:
    """The shipped model a .dqc file was made with (from its header's model id)."""
    return model_named_by(bitstream.read(data).header.model_id)


def image_to_tensor(img: Image.Image | np.ndarray) -> tuple[torch.Tensor, int]:
    """PIL image, or uint8 array (H, W) or (H, W, 3) -> (1, 3, H, W) float in [0, 1] and the
    container color mode.

    A fully opaque alpha channel is dropped and 16-bit grayscale is rounded to 8 bits (as Pillow
    already does for 16-bit RGB); real transparency and 32-bit or float pictures are refused."""
    if isinstance(img, np.ndarray):
        if img.dtype != np.uint8 or not (img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 3)):
            raise DQCError(f"expected a uint8 array (H, W) or (H, W, 3), got {img.dtype} {img.shape}")
        img = Image.fromarray(img)
    if not isinstance(img, Image.Image):
        raise DQCError(f"expected a PIL image or a uint8 array, got {type(img).__name__}")
    if img.width < 1 or img.height < 1:
        raise DQCError(f"the image is {img.width}x{img.height}: there is no picture to code")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("La", "RGBa"):  # premultiplied alpha: opaque means the colours are as they are
        img = img.convert("LA" if img.mode == "La" else "RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        if img.getchannel("A").getextrema()[0] < 255:
            raise DQCError("images with transparency are not supported; flatten them onto a background first")
        img = img.convert("L" if img.mode == "LA" else "RGB")
    if img.mode.startswith("I;16"):
        img = Image.fromarray(np.round(np.asarray(img, dtype=np.float64) / 257).astype(np.uint8), "L")
    if img.mode in ("I", "F"):
        raise DQCError(f"{img.mode} images (32-bit integer or float) are not supported; convert to 8-bit first")
    color = bitstream.COLOR_GRAY if img.mode in ("L", "1") else bitstream.COLOR_RGB
    try:
        rgb = np.asarray(img.convert("RGB"), dtype=np.uint8)
    except ValueError:
        raise DQCError(f"{img.mode} images are not supported; convert to RGB or L first") from None
    return torch.from_numpy(rgb.copy()).permute(2, 0, 1)[None].float() / 255.0, color


def encode(
    img: Image.Image | np.ndarray,
    quality: float = DEFAULT_QUALITY,
    model: str = DEFAULT_MODEL,
    schedule: Schedule | None = None,
    icc_profile: bytes | None = None,
    exif: bytes | None = None,
    workers: int | None = None,
    target_bpp: float | None = None,
    xmp: bytes | None = None,
    device: str = "cpu",
    tune: str = DEFAULT_TUNE,
    scale: float | None = None,
    target: str | QualityTarget | None = None,
    distortion: str | None = None,
) -> bytes:
    """Compress a PIL image (or a uint8 array, (H, W) gray or (H, W, 3) RGB) to .dqc bytes.

    `target_bpp` picks the highest quality whose file stays near that rate; `target`, a measured
    quality such as "psnr=30", "ms-ssim=0.95" or "ssimulacra2=70", the lowest quality whose
    decoded picture reaches it (a TargetWarning where even quality 100 does not). With either,
    `quality` is ignored. `tune` says how regions get their granularity (see ratecontrol.TUNES), and
    `distortion` whether the encoder estimates every region's distortion at each level or measures
    it by decoding (ratecontrol.DISTORTIONS: "measured" takes about twice as long; None: the
    tune's default, ratecontrol.DEFAULT_DISTORTION). `scale`
    resamples the picture before coding (the decoder restores the size); by default 1, or for
    `target_bpp` the scale of its rate band (see `ratecontrol.fit_rate`). The transform runs on
    `device`, the integer prior on the CPU with `workers` threads (the symbols are the same for
    any count). An ICC profile for another colour space than the coded picture's (a CMYK one,
    say) is left out."""
    if target_bpp is not None and target is not None:
        raise DQCError("give a target rate or a target quality, not both")
    if isinstance(target, str):
        target = parse_target(target)
    elif target is not None and not isinstance(target, QualityTarget):
        raise ArgumentError(f"target must be a string such as 'psnr=30', got {type(target).__name__}")
    if target_bpp is not None:
        target_bpp = arguments.positive_real("target_bpp", target_bpp)
    if target_bpp is None and target is None:
        check_quality(quality)
    workers, device = arguments.count("workers", workers), arguments.device(device)
    icc_profile, exif = arguments.blob("icc_profile", icc_profile), arguments.blob("exif", exif)
    xmp = arguments.blob("xmp", xmp)
    m = load_model(model)
    schedule = schedule or Schedule()
    x, color = image_to_tensor(img)
    if icc_profile and icc_profile[36:40] == b"acsp" and icc_profile[16:20] != ICC_SPACE[color]:
        icc_profile = None
    h, w = x.shape[-2:]
    if target_bpp is None:
        coded = coded_size(w, h, 1.0 if scale is None else scale)
        a = analyze(m, resample_picture(x, *coded), device, tune, distortion)
        if target is not None:
            quality, reached = quality_for_target(
                m, lambda q: levels_for_quality(m, a, q)[0], a.idx, x, coded, target, device
            )
            if reached < target.value:
                warnings.warn(
                    f"{target} is beyond this image's reach: quality 100 gives {reached:.4g}",
                    TargetWarning,
                    stacklevel=2,
                )
        levels, tiles = levels_for_quality(m, a, quality)[0], None
    else:
        coded, a, fit = fit_rate(m, x, target_bpp, scale, schedule, device, tune, distortion)
        levels, tiles = fit.levels, fit.tiles
    return write_tokens(m, levels, a.idx, w, h, color, schedule, icc_profile, exif, workers, coded, xmp, tiles)


def write_tokens(
    m: LoadedModel,
    levels: torch.Tensor,
    idx: tuple[torch.Tensor, ...],
    width: int,
    height: int,
    color: int = bitstream.COLOR_RGB,
    schedule: Schedule | None = None,
    icc_profile: bytes | None = None,
    exif: bytes | None = None,
    workers: int | None = None,
    coded: tuple[int, int] | None = None,
    xmp: bytes | None = None,
    tiles: list[bitstream.Tile] | None = None,
) -> bytes:
    """Entropy-code a granularity map (h, w) and the code indices under the prior -> .dqc bytes
    for a width x height image; `coded` is the (width, height) of the tokens' picture, which gets
    an RSMP chunk where it differs from the image's (resampled coding). `tiles`: these tokens'
    tiles, already range-coded (by rate control)."""
    schedule = schedule or Schedule()
    header = bitstream.Header(
        width, height, color, TILE_SIZE, m.model_id, *header_shares(levels), schedule.periods, PRECISION
    )
    metadata = {"ICC profile": icc_profile, "EXIF block": exif, "XMP packet": xmp}
    for name, blob in metadata.items():
        if blob is not None and len(blob) > bitstream.MAX_CHUNK:
            warnings.warn(
                f"the {name} ({len(blob)} bytes) is over the format's chunk limit: left out",
                MetadataWarning,
                stacklevel=2,
            )
    icc_profile, exif, xmp = (b if b is None or len(b) <= bitstream.MAX_CHUNK else None for b in metadata.values())
    bitstream.check_periods(schedule.periods)
    if tiles is None:
        tiles = encode_tiles(m.prior, levels, idx, schedule, workers)
    resampled = coded if coded and coded != (width, height) else None
    return bitstream.write(bitstream.Container(header, tiles, icc_profile, exif, coded_size=resampled, xmp=xmp))


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
