"""A picture to .dqc bytes: the public `encode`, which runs the encoder's choices (`encoder/`).

picture -> models.transform (analysis) -> encoder (granularity map, refined tokens, colour fit)
        -> format.coding (integer prior + range coder, per tile) -> format.bitstream (container)
The way back is `decoding`, which needs none of `encoder/`.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from PIL import Image

from dqcodec import __version__, arguments, progress
from dqcodec.encoder import colour_fit, qualitymap
from dqcodec.encoder.effort import DEFAULT_EFFORT, EFFORTS, check_effort
from dqcodec.encoder.qualitytarget import QualityTarget, parse_target, quality_for_target
from dqcodec.encoder.ratecontrol import (
    DEFAULT_QUALITY,
    DEFAULT_TUNE,
    TUNES,
    Analysis,
    RateFit,
    analyze,
    check_quality,
    coded_size,
    fit_rate,
    header_shares,
    levels_for_quality,
    remeasured,
)
from dqcodec.encoder.refine import refine, refine_every_level
from dqcodec.errors import ArgumentError, DQCError, MetadataWarning, TargetWarning
from dqcodec.format import bitstream
from dqcodec.format.coding import PRECISION, TILE_SIZE, encode_tiles, threads
from dqcodec.format.resample import resize
from dqcodec.format.tokens import Schedule
from dqcodec.metadata import is_srgb
from dqcodec.models.loading import LoadedModel, load_model
from dqcodec.models.shipped import DEFAULT_MODEL
from dqcodec.models.transform import pad16, resample_picture, synthesize

CHUNK_BYTES = 12  # a chunk's length, type and CRC
# the colour space field of an ICC profile's header (bytes 16-19; 36-39 hold the signature "acsp")
ICC_SPACE = {bitstream.COLOR_RGB: b"RGB ", bitstream.COLOR_GRAY: b"GRAY"}

__all__ = ["encode", "write_tokens", "image_to_tensor"]


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
    effort: int = DEFAULT_EFFORT,
    record_settings: bool = True,
) -> bytes:
    """Compress a PIL image (or a uint8 array, (H, W) gray or (H, W, 3) RGB) to .dqc bytes.

    `target_bpp` picks the highest quality whose file stays near that rate; `target`, a measured
    quality such as "psnr=30", "ms-ssim=0.95" or "ssimulacra2=70", the lowest quality whose
    decoded picture reaches it (a TargetWarning where even quality 100 does not). With either,
    `quality` is ignored. `tune` says how regions get their granularity (see ratecontrol.TUNES), and
    `distortion` whether the encoder estimates every region's distortion at each level or measures
    it by decoding (ratecontrol.DISTORTIONS: "measured" takes about twice as long; None: the
    tune's default, ratecontrol.DEFAULT_DISTORTION). `effort` (0 to refine.MAX_EFFORT) says how
    far the tokens are refined against the decoder (`refine`; 0: the codes nearest the encoder's
    latents; each level about doubles the refinement's time; the decoder is the same). `scale`
    resamples the picture before coding (the decoder restores the size); by default 1, or for
    `target_bpp` the scale of its rate band (see `ratecontrol.fit_rate`). The transform runs on
    `device`, the integer prior on the CPU with `workers` threads (the symbols are the same for
    any count). An ICC profile for another colour space than the coded picture's (a CMYK one,
    say) is left out, and so is an sRGB one (a file without a profile is sRGB). With
    `target_bpp`, the metadata's bytes count in the rate. `record_settings`: the file says how it
    was made (its `sett` chunk: the quality or target, tune, effort and dqc's version; 23 bytes)."""
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
    effort = check_effort(effort)
    if tune not in TUNES:
        raise ArgumentError(f"unknown tune {tune!r}; available: {', '.join(TUNES)}")
    workers, device = arguments.count("workers", workers), arguments.device(device)
    icc_profile, exif = arguments.blob("icc_profile", icc_profile), arguments.blob("exif", exif)
    xmp = arguments.blob("xmp", xmp)
    m = load_model(model)
    schedule = schedule or Schedule()
    x, color = image_to_tensor(img)
    if icc_profile and icc_profile[36:40] == b"acsp" and icc_profile[16:20] != ICC_SPACE[color]:
        icc_profile = None
    if icc_profile and is_srgb(icc_profile):  # a file without a profile is sRGB: it needs no bytes
        icc_profile = None
    h, w = x.shape[-2:]
    made = None
    if record_settings:
        mode, value, metric = (
            ("bpp", target_bpp, "psnr") if target_bpp is not None
            else ("target", target.value, target.metric) if target is not None
            else ("quality", quality, "psnr")
        )  # fmt: skip
        version = tuple(int(v) for v in __version__.split(".")[:3])
        made = bitstream.Settings(version, mode, float(value), metric, tune, effort)  # type: ignore[arg-type]
    if target_bpp is None:
        plan = QualityPlan(m, x, scale, device, tune, distortion, exact=effort > 0)
        if target is not None:
            quality, reached = quality_for_target(plan.picture, x, target)
            if reached < target.value:
                warnings.warn(
                    f"{target} is beyond this image's reach: quality 100 gives {reached:.4g}",
                    TargetWarning,
                    stacklevel=2,
                )
        internal, coded, a = plan.setting(quality)
        levels = levels_for_quality(m, a, internal)[0]
        levels, idx = refined_map_and_tokens(m, a, x, coded, levels, effort, device, internal)
        correction, flats = colour_correction(m, levels, idx, x, coded, internal, color, effort, device)
        return write_tokens(m, levels, idx, w, h, color, schedule, icc_profile, exif, workers, coded, xmp,
                            colour=correction, flat=flats, settings=made)  # fmt: skip
    metadata_bytes = sum(len(b) + CHUNK_BYTES for b in (icc_profile, exif, xmp) if b)
    if 8 * metadata_bytes >= target_bpp * w * h:
        warnings.warn(
            f"the metadata alone ({metadata_bytes} bytes) is over {target_bpp:g} bpp; leave it out (--metadata "
            "none) to reach that rate",
            TargetWarning,
            stacklevel=2,
        )
    metadata_bytes += len(made.pack()) + CHUNK_BYTES if made else 0  # the settings' record counts in the rate too
    coded, a, fit = fit_rate(
        m, x, target_bpp, scale, schedule, device, tune, distortion, effort > 0, 8 * metadata_bytes
    )
    idx, tiles, correction, flats = a.idx, fit.tiles, None, None
    if effort:  # refined tokens and the colour corrections cost bits: taken where the file stays within the target
        refined = refined_tokens(m, a, x, coded, fit.levels, effort, device)
        refined_tiles = encode_tiles(m.prior, fit.levels, refined, schedule, workers)
        if within_rate(fit, refined_tiles, target_bpp * w * h):
            idx, tiles = refined, refined_tiles
        correction, flats = colour_correction(m, fit.levels, idx, x, coded, fit.quality, color, effort, device)
        budget = target_bpp * w * h - file_bits(fit, tiles)
        if correction and 8 * (len(correction) + CHUNK_BYTES) > budget:
            correction = None  # the flat blocks were chosen without it: they stand alone
        if flats and 8 * (len(correction or b"") + CHUNK_BYTES * bool(correction) + len(flats) + CHUNK_BYTES) > budget:
            flats = None
    return write_tokens(m, fit.levels, idx, w, h, color, schedule, icc_profile, exif, workers, coded, xmp, tiles,
                        colour=correction, flat=flats, settings=made)  # fmt: skip


class QualityPlan:
    """What a -q means for one picture: the scale and within-scale quality of `qualitymap` (or,
    with a fixed `scale`, the quality at that scale), with each scale's analysis made once."""

    def __init__(
        self,
        m: LoadedModel,
        x: torch.Tensor,
        scale: float | None,
        device: str,
        tune: str,
        distortion: str | None,
        exact: bool = False,
    ) -> None:
        self.m, self.x, self.scale, self.device, self.tune, self.distortion = m, x, scale, device, tune, distortion
        self.exact = exact  # latents for the refinement (ratecontrol.analyze)
        self._analyses: dict[float, tuple[tuple[int, int], Analysis]] = {}

    def setting(self, quality: float) -> tuple[float, tuple[int, int], Analysis]:
        """(within-scale quality, coded size, analysis at that scale) of -q `quality`."""
        scale, internal = (self.scale, quality) if self.scale is not None else qualitymap.setting(quality, self.tune)
        if scale not in self._analyses:
            h, w = self.x.shape[-2:]
            coded = coded_size(w, h, scale)
            picture = resample_picture(self.x, *coded)
            a = analyze(self.m, picture, self.device, self.tune, self.distortion, self.exact)
            self._analyses[scale] = (coded, a)
        coded, a = self._analyses[scale]
        return internal, coded, a

    def picture(self, quality: float) -> np.ndarray:
        """The picture the decoder shows for -q `quality` (nearest codes), (H, W, 3) uint8."""
        internal, coded, a = self.setting(quality)
        h, w = self.x.shape[-2:]
        levels = levels_for_quality(self.m, a, internal)[0]
        return resize(synthesize(self.m.vae, levels, a.idx, *coded, self.device), w, h).permute(1, 2, 0).numpy()


def colour_correction(
    m: LoadedModel,
    levels: torch.Tensor,
    idx: tuple[torch.Tensor, ...],
    x: torch.Tensor,
    coded: tuple[int, int],
    quality: float,
    color: int,
    effort: int,
    device: str = "cpu",
) -> tuple[bytes | None, bytes | None]:
    """The CCOR and FLAT payloads for these tokens' picture (`colour_fit`), each None where it
    does not pay (both at effort 0, which is the plain nearest-code encoder)."""
    if effort == 0:
        return None, None
    progress.report("colour", 0, 1)
    h, w = x.shape[-2:]
    gray = color == bitstream.COLOR_GRAY
    # on one thread, as the refinement: the synthesis and the fit's float reductions then round
    # alike at any --threads, and the offsets are the same
    with threads(1):
        decoded = resize(synthesize(m.vae, levels, idx, *coded, device, fast=True), w, h).permute(1, 2, 0).numpy()
        original = (x[0] * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        return colour_fit.choose(original, decoded, quality, gray=gray)


SINGLE_REGION = 16  # px: a coded picture no larger than this each way is one region


def refined_tokens(
    m: LoadedModel,
    a: Analysis,
    x: torch.Tensor,
    coded: tuple[int, int],
    levels: torch.Tensor,
    effort: int,
    device: str = "cpu",
    quality: float | None = None,
) -> tuple[torch.Tensor, ...]:
    """The analysis's tokens for the map `levels`, refined against the decoder by `effort`."""
    return refined_map_and_tokens(m, a, x, coded, levels, effort, device, quality)[1]


def refined_map_and_tokens(
    m: LoadedModel,
    a: Analysis,
    x: torch.Tensor,
    coded: tuple[int, int],
    levels: torch.Tensor,
    effort: int,
    device: str = "cpu",
    quality: float | None = None,
) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """The map and its tokens after `effort`'s refinement (`refine`): at the highest efforts each
    level's tokens are refined first, the map of within-scale `quality` chosen again from their
    measured distortion (as `--distortion measured` measures it), and that map's tokens refined."""
    setting = EFFORTS[effort]
    if setting.steps == 0 or a.latents is None or max(coded) <= SINGLE_REGION:
        # a picture of one region (a 1x1 icon, say): the refinement's fixed cost (about 0.4 s of
        # autograd set-up) would be most of its encode, and the colour correction fixes its colour
        return levels, a.idx
    picture = pad16(resample_picture(x, *coded)).to(device)
    vae = m.vae.to(device)
    latents = [z.to(device) for z in a.latents]
    # One thread: the decoder's float convolutions round with the thread count on some CPUs (AVX2
    # oneDNN), and the refined tokens would follow; on one thread a machine writes the same file
    # at any --threads. Independent work (the windows of a large picture, and each level's when the
    # map is chosen again) runs side by side, on one thread each.
    workers = torch.get_num_threads()
    with torch.inference_mode(False), torch.enable_grad(), threads(1):
        if setting.rechoose_steps and quality is not None and a.costs is not None:
            idx, latents = refine_every_level(vae, picture, latents, setting, a.tune, *coded, workers=workers)
            a = remeasured(m, a, resample_picture(x, *coded), tuple(i.cpu() for i in idx), device, workers)
            levels = levels_for_quality(m, a, quality)[0]
        idx, _ = refine(vae, picture, latents, levels.to(device), setting, a.tune, *coded, workers=workers)
    return levels, tuple(i.cpu() for i in idx)


def file_bits(fit: RateFit, tiles: list[bitstream.Tile]) -> float:
    """The bits of the fit's file with `tiles` in place of its own."""
    return fit.bits + sum(8 * len(t.data) for t in tiles) - sum(8 * len(t.data) for t in fit.tiles)


def within_rate(fit: RateFit, tiles: list[bitstream.Tile], budget_bits: float) -> bool:
    """Whether `tiles` in place of the fit's keep its file within `budget_bits` (or no larger)."""
    before, after = (sum(8 * len(t.data) for t in ts) for ts in (fit.tiles, tiles))
    return after <= before or fit.bits - before + after <= budget_bits


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
    colour: bytes | None = None,
    flat: bytes | None = None,
    settings: bitstream.Settings | None = None,
) -> bytes:
    """Entropy-code a granularity map (h, w) and the code indices under the prior -> .dqc bytes
    for a width x height image; `coded` is the (width, height) of the tokens' picture, which gets
    an RSMP chunk where it differs from the image's (resampled coding). `tiles`: these tokens'
    tiles, already range-coded (by rate control). `colour`: a CCOR payload (`dqcodec.format.colour`);
    `flat`: a FLAT payload (`dqcodec.format.flat`)."""
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
    container = bitstream.Container(
        header, tiles, icc_profile, exif, coded_size=resampled, xmp=xmp, colour=colour, flat=flat, settings=settings
    )
    return bitstream.write(container)
