"""Image <-> .dqc bytes: DQ-VAE transform, DQ-Transformer prior, range coder, container."""

from __future__ import annotations

import io
import math
import os
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from typing import TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from dqcodec import bitstream
from dqcodec.entropy import PRECISION, SymbolDecoder, SymbolEncoder, quantize_probabilities
from dqcodec.errors import DQCError, FormatError, IntegrityError, SizeLimitError
from dqcodec.models import DQVAE, DQTransformer, dqvae_from_checkpoint, prior_from_checkpoint
from dqcodec.models.dqvae import LEVEL_STRIDES, NUM_LEVELS, Tokens, rank_levels
from dqcodec.rdo import RegionCosts, choose_levels, region_distortion, region_rate
from dqcodec.resample import resize
from dqcodec.shipped import DEFAULT_MODEL, model_id, model_named_by, weight_bytes
from dqcodec.tokens import KIND_MAP, KIND_SCALE, MAX_REGIONS, POS_OFFSET, Schedule, TileTokens, tile_tokens

TILE_SIZE = 16 * MAX_REGIONS
MAX_DECODE_PIXELS = 64 * 10**6  # decode's default limit: a few MB of tile headers can claim a gigapixel
PRIOR_THREADS = 1  # the prior's coding passes always run on this many threads (bit-exactness)
DEFAULT_QUALITY = 50
# How the encoder chooses the granularity map (the decoder does not care):
#   "ssim": the DGC gate ranks regions, quality sets the shares (best MS-SSIM and SSIMULACRA2)
#   "psnr": per region, least squared error + lambda * bits (see rdo; best PSNR)
TUNES = ("ssim", "psnr")
DEFAULT_TUNE = "ssim"
# The coded picture may be resampled (RSMP chunk): below 1 for rates under all-coarse, above 1
# for rates over all-fine (the model's finest level is one code per 4x4 pixels).
MIN_SCALE, MAX_SCALE = 0.25, 2.0
# Scale that --bpp uses for a target rate: the first band whose upper rate is at least the target.
# Where each scale's RD curve is best, measured on BSDS500 test images (benchmarks, not Kodak).
SCALE_BANDS = ((0.03, 0.5), (0.09, 0.71), (0.22, 1.0), (math.inf, 1.5))


@dataclass(frozen=True)
class LoadedModel:
    name: str
    vae: DQVAE
    prior: DQTransformer
    model_id: bytes
    fixed_grid: bool


def _load_state(raw: bytes) -> dict:
    return torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)


@cache
def load_model(name: str = DEFAULT_MODEL) -> LoadedModel:
    """Load shipped weights (fp16 on disk, fp32 in memory)."""
    vae_raw, prior_raw = weight_bytes(name)
    vae_ck, prior_ck = _load_state(vae_raw), _load_state(prior_raw)
    fixed = bool(vae_ck.get("meta", {}).get("fixed_grid", False))
    return LoadedModel(name, dqvae_from_checkpoint(vae_ck), prior_from_checkpoint(prior_ck), model_id(name), fixed)


def model_of(data: bytes) -> str:
    """The shipped model a .dqc file was made with (from its header's model id)."""
    return model_named_by(bitstream.read(data).header.model_id)


def quality_to_shares(quality: float, fixed_grid: bool = False) -> tuple[float, float]:
    """Quality 0..100 -> (share of fine regions, share of medium regions).

    The fixed-grid baseline has three settings: all coarse (< 34), all medium (< 67), all fine.
    With tune "ssim" (regions ranked by the DGC gate), 0..50 turns coarse regions into medium
    ones and 50..100 medium into fine.
    """
    if fixed_grid:
        return (0.0, 0.0) if quality < 34 else (0.0, 1.0) if quality < 67 else (1.0, 0.0)
    if quality <= 50:
        return 0.0, quality / 50
    fine = (quality - 50) / 50
    return fine, 1.0 - fine


@contextmanager
def fixed_threads(n: int) -> Iterator[None]:
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


# ----- one tile through the prior ------------------------------------------------------------
T = TypeVar("T")
SymbolCoder = Callable[[np.ndarray, np.ndarray | None], np.ndarray]


def _groups(t: TileTokens) -> Iterator[slice]:
    g = t.group.tolist()
    start = 0
    for i in range(1, len(g) + 1):
        if i == len(g) or g[i] != g[start]:
            yield slice(start, i)
            start = i


@torch.no_grad()
def code_tile(
    prior: DQTransformer, rh: int, rw: int, schedule: Schedule, coder: SymbolCoder, known: Tokens | None
) -> tuple[torch.Tensor, list[torch.Tensor], list[int]]:
    """Run the prior over a tile group by group; `coder(freq, values)` encodes the known values
    (encoder) or decodes them (decoder, values None). Returns levels, index maps, symbols.

    Encoder and decoder run exactly this function, so they compute identical probabilities.
    """
    cache = prior.new_cache()
    symbols: list[int] = []
    zeros_idx = [torch.zeros(rh * s, rw * s, dtype=torch.long) for s in KIND_SCALE[1:]]
    pending: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None] = [None]  # coded, not yet cached

    def run(tokens: TileTokens) -> torch.Tensor:
        values = torch.empty_like(tokens.value)
        for sl in _groups(tokens):
            kind, pos = tokens.kind[sl], tokens.pos[sl]
            map_logits, code_logits = prior.logits(prior.step(cache, pending[0], (kind, pos)), kind)
            logits = map_logits if int(kind[0]) == KIND_MAP else code_logits
            freq = quantize_probabilities(logits[0])
            given = tokens.value[sl].numpy() if known is not None else None
            got = torch.from_numpy(np.asarray(coder(freq, given), dtype=np.int64))
            values[sl] = got
            symbols.extend(got.tolist())
            pending[0] = (kind, pos, got)
        return values

    levels_in = known.levels if known is not None else torch.zeros(rh, rw, dtype=torch.long)
    idx_in = list(known.idx) if known is not None else zeros_idx
    first = tile_tokens(levels_in, tuple(idx_in), schedule)  # type: ignore[arg-type]
    is_map = first.kind == KIND_MAP
    map_tokens = TileTokens(first.kind[is_map], first.pos[is_map], first.value[is_map], first.group[is_map])
    map_values = run(map_tokens)
    levels = _map_from_pos(map_tokens.pos, map_values, rh, rw)
    full = tile_tokens(levels, tuple(idx_in), schedule)  # type: ignore[arg-type]
    is_content = full.kind != KIND_MAP
    content = TileTokens(full.kind[is_content], full.pos[is_content], full.value[is_content], full.group[is_content])
    content_values = run(content)
    idx = [z.clone() for z in zeros_idx]
    for level in range(3):
        sel = content.kind == level + 1
        grid = MAX_REGIONS * KIND_SCALE[level + 1]
        p = content.pos[sel] - POS_OFFSET[level + 1]
        idx[level][p // grid, p % grid] = content_values[sel]
    return levels, idx, symbols


def _map_from_pos(pos: torch.Tensor, values: torch.Tensor, rh: int, rw: int) -> torch.Tensor:
    levels = torch.zeros(rh, rw, dtype=torch.long)
    levels[pos // MAX_REGIONS, pos % MAX_REGIONS] = values
    return levels


def _map_tiles(fn: Callable[[int], T], n: int, workers: int | None) -> list[T]:
    """fn(0..n-1), on up to `workers` threads (default: one per CPU core).

    Every prior op runs single-threaded (PRIOR_THREADS), so running tiles side by side changes
    no float: tiles are independent and each op's arithmetic does not depend on the others.
    """
    workers = max(1, min(n, workers or os.cpu_count() or 1))

    def run(i: int) -> T:
        with torch.inference_mode():  # grad mode is per thread
            return fn(i)

    with fixed_threads(PRIOR_THREADS):
        if workers == 1:
            return [run(i) for i in range(n)]
        with ThreadPoolExecutor(workers) as pool:
            return list(pool.map(run, range(n)))


def _symbols_crc(symbols: list[int]) -> int:
    return zlib.crc32(np.asarray(symbols, dtype="<i4").tobytes())


# ----- whole images -------------------------------------------------------------------------
def _tile_grid(rh: int, rw: int) -> list[tuple[int, int, int, int]]:
    """(y0, x0, h, w) of each tile on the region grid, raster order."""
    out = []
    for y0 in range(0, rh, MAX_REGIONS):
        for x0 in range(0, rw, MAX_REGIONS):
            out.append((y0, x0, min(MAX_REGIONS, rh - y0), min(MAX_REGIONS, rw - x0)))
    return out


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
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        if img.getchannel("A").getextrema()[0] < 255:
            raise DQCError("images with transparency are not supported; flatten them onto a background first")
        img = img.convert("L" if img.mode == "LA" else "RGB")
    if img.mode.startswith("I;16"):
        img = Image.fromarray(np.round(np.asarray(img, dtype=np.float64) / 257).astype(np.uint8), "L")
    if img.mode in ("I", "F"):
        raise DQCError(f"{img.mode} images (32-bit integer or float) are not supported; convert to 8-bit first")
    color = bitstream.COLOR_GRAY if img.mode in ("L", "1") else bitstream.COLOR_RGB
    rgb = np.asarray(img.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(rgb.copy()).permute(2, 0, 1)[None].float() / 255.0, color


RSMP_BITS = 8 * 20  # the RSMP chunk of a resampled file
# the colour space field of an ICC profile's header (bytes 16-19; 36-39 hold the signature "acsp")
ICC_SPACE = {bitstream.COLOR_RGB: b"RGB ", bitstream.COLOR_GRAY: b"GRAY"}


def scales_for_bpp(target_bpp: float) -> list[float]:
    """The scale of the target's band, then the smaller ones."""
    band = next(i for i, (upper, _) in enumerate(SCALE_BANDS) if target_bpp <= upper)
    return [scale for _, scale in SCALE_BANDS[band::-1]]


def coded_size(width: int, height: int, scale: float) -> tuple[int, int]:
    """Size of the picture the model codes for an image resampled by `scale`."""
    if not MIN_SCALE <= scale <= MAX_SCALE:
        raise DQCError(f"scale must be between {MIN_SCALE} and {MAX_SCALE}, got {scale}")
    return max(1, round(width * scale)), max(1, round(height * scale))


def resample_picture(x: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """x (1, 3, H, W) in [0, 1] resampled to (1, 3, height, width) through 8 bits, as the decoder will."""
    if x.shape[-2:] == (height, width):
        return x
    return resize((x[0] * 255).round().to(torch.uint8), width, height)[None].float() / 255.0


def _pad16(x: torch.Tensor) -> torch.Tensor:
    h, w = x.shape[-2:]
    ph, pw = -h % 16, -w % 16
    return F.pad(x, (0, pw, 0, ph), mode="replicate") if ph or pw else x


def _check_quality(quality: float) -> None:
    if not 0 <= quality <= 100:
        raise DQCError(f"quality must be between 0 and 100, got {quality}")


@dataclass(frozen=True)
class Analysis:
    """What the encoder knows about an image before it chooses the granularity map."""

    score: torch.Tensor  # (h, w) DGC gate scores
    idx: tuple[torch.Tensor, ...]  # code indices of every level, everywhere
    costs: RegionCosts | None = None  # distortion and rate of every region at every level (tune "psnr")


TRANSFORM_TILE = 1024  # pixels; larger images go through the DQ-VAE in tiles (its memory grows with area)
TRANSFORM_HALO = 128  # pixels of context around each tile, about the receptive field


def _windows(h: int, w: int, tile: int, halo: int) -> Iterator[tuple[slice, slice, slice, slice]]:
    """Tiles of an (h, w) grid in raster order: rows and columns of the tile, then rows and
    columns of the tile with up to `halo` of context on each side."""
    for y0 in range(0, h, tile):
        for x0 in range(0, w, tile):
            y1, x1 = min(y0 + tile, h), min(x0 + tile, w)
            ya, xa = max(0, y0 - halo), max(0, x0 - halo)
            yield slice(y0, y1), slice(x0, x1), slice(ya, min(h, y1 + halo)), slice(xa, min(w, x1 + halo))


def _scaled(sl: slice, mul: int = 1, div: int = 1) -> slice:
    return slice(sl.start * mul // div, sl.stop * mul // div)


def _inner(core: slice, context: slice, mul: int = 1, div: int = 1) -> slice:
    """Where `core` lies inside what was computed for `context`, at mul/div output units per grid unit."""
    return _scaled(slice(core.start - context.start, core.stop - context.start), mul, div)


def _encode_tiled(vae: DQVAE, x: torch.Tensor, tile: int = TRANSFORM_TILE) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The DQ-VAE encoder on x (1, 3, H, W), H and W multiples of 16, tile by tile with a halo
    (identical code indices to one whole-image pass; tested)."""
    h, w = x.shape[-2:]
    if h <= tile and w <= tile:
        return vae.encoder(x)
    latents: list[torch.Tensor] | None = None
    score = x.new_empty(1, h // 16, w // 16)
    for rows, cols, c_rows, c_cols in _windows(h, w, tile, TRANSFORM_HALO):
        t_lat, t_score = vae.encoder(x[..., c_rows, c_cols])
        if latents is None:
            latents = [t_lat[i].new_empty(1, t_lat[i].shape[1], h // s, w // s) for i, s in enumerate(LEVEL_STRIDES)]
        for out, t, s in zip(latents + [score[:, None]], t_lat + [t_score[:, None]], (*LEVEL_STRIDES, 16)):
            out[..., _scaled(rows, div=s), _scaled(cols, div=s)] = t[
                ..., _inner(rows, c_rows, div=s), _inner(cols, c_cols, div=s)
            ]
    assert latents is not None
    return latents, score


@torch.no_grad()
def analyze(m: LoadedModel, x: torch.Tensor, device: str = "cpu", tune: str = DEFAULT_TUNE) -> Analysis:
    """Run the DQ-VAE encoder once; for tune "psnr" also decode the image at each level to
    measure every region's distortion there. x (1, 3, H, W) in [0, 1]."""
    if tune not in TUNES:
        raise DQCError(f"unknown tune {tune!r}; available: {', '.join(TUNES)}")
    vae = m.vae.to(device)
    latents, score = _encode_tiled(vae, _pad16(x).to(device) * 2 - 1)
    idx = tuple(vae.quantizer.indices(z)[0].cpu() for z in latents)
    costs = None
    if tune == "psnr" and not m.fixed_grid:
        h, w = x.shape[-2:]
        original = (x[0] * 255).round().to(torch.uint8)
        uniform = [torch.full(score.shape[1:], lv) for lv in range(NUM_LEVELS)]
        decoded = torch.stack([_decode_uint8(m, lv, idx, w, h, device) for lv in uniform])
        distortion = region_distortion(decoded, original)
        costs = RegionCosts(distortion, region_rate(distortion.shape[1:]), h * w)
    return Analysis(score[0].float().cpu(), idx, costs)


def levels_for_quality(m: LoadedModel, a: Analysis, quality: float) -> tuple[torch.Tensor, int, int]:
    """Granularity map for a quality, and its shares as stored in the header (1/65535 units).

    With region distortions measured (tune "psnr") the map minimises distortion + lambda * rate
    per region; otherwise regions are ranked by the gate at the shares of `quality_to_shares`.
    """
    _check_quality(quality)
    if m.fixed_grid:
        share_fine, share_medium = quality_to_shares(quality, fixed_grid=True)
        levels = torch.full(a.score.shape, 2 if share_fine else 1 if share_medium else 0, dtype=torch.long)
    elif a.costs is not None:
        levels = choose_levels(a.costs, quality)
    else:
        shares = (torch.tensor([s]) for s in quality_to_shares(quality))
        levels = rank_levels(a.score[None], *shares)[0]
    return levels, *_header_shares(levels)


def _header_shares(levels: torch.Tensor) -> tuple[int, int]:
    """Shares of fine and medium regions in the header's units (1/65535)."""
    n = levels.numel()
    q_fine, q_medium = (round(int((levels == lv).sum()) * 65535 / n) for lv in (2, 1))
    return q_fine, q_medium


@torch.no_grad()
def estimate_bits(
    m: LoadedModel, levels: torch.Tensor, idx: tuple[torch.Tensor, ...], schedule: Schedule, workers: int | None = None
) -> float:
    """Bits of a whole file with these tokens: the prior's cross-entropy (teacher forcing, one pass
    per tile, no coding) plus the container's bytes."""
    grid = _tile_grid(*levels.shape)

    def tile_bits(i: int) -> float:
        y0, x0, th, tw = grid[i]
        t = tile_tokens(levels[y0 : y0 + th, x0 : x0 + tw], _tile_idx(idx, y0, x0, th, tw), schedule)
        bits = m.prior.loss_bits(t.kind[None], t.pos[None], t.value[None], t.group[None], torch.ones(1, len(t.kind)))
        return float(bits.sum()) + 8 * (24 + 2)  # chunk + tile header, about half a coder word of flush

    return sum(_map_tiles(tile_bits, len(grid), workers)) + 8 * 69  # signature, version, HEAD, END


def _tile_idx(idx: tuple[torch.Tensor, ...], y0: int, x0: int, th: int, tw: int) -> tuple[torch.Tensor, ...]:
    return tuple(t[y0 * s : (y0 + th) * s, x0 * s : (x0 + tw) * s] for t, s in zip(idx, KIND_SCALE[1:]))


def quality_for_bpp(
    m: LoadedModel, a: Analysis, pixels: int, target: float, schedule: Schedule, extra_bits: float = 0.0
) -> float | None:
    """Highest quality whose estimated rate (plus `extra_bits`) stays at or under `target` bpp
    (bisection on quality to within 1/128 of the range); None if even quality 0 is over."""

    def fits(q: float) -> bool:
        bits = estimate_bits(m, levels_for_quality(m, a, q)[0], a.idx, schedule) + extra_bits
        return bits / pixels <= target

    if m.fixed_grid:
        return max((q for q in (0.0, 50.0, 100.0) if fits(q)), default=None)
    if not fits(0.0):
        return None
    lo, hi = 0.0, 100.0
    if fits(hi):
        return hi
    for _ in range(7):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


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
) -> bytes:
    """Compress a PIL image (or a uint8 array, (H, W) gray or (H, W, 3) RGB) to .dqc bytes.

    `target_bpp` picks the highest quality whose file stays near that rate (then `quality` is
    ignored). `tune` says how regions get their granularity (see TUNES). `scale` resamples the
    picture before coding (the decoder restores the size); by default 1, or for `target_bpp` the
    scale of its rate band (see `fit_rate`). The transform runs on `device`; the prior always on
    the CPU (bit-exactness); tiles go through the prior on `workers` threads. An ICC profile
    for another colour space than the coded picture's (a CMYK one, say) is left out."""
    m = load_model(model)
    if target_bpp is None:
        _check_quality(quality)
    elif target_bpp <= 0:
        raise DQCError(f"target bpp must be positive, got {target_bpp}")
    schedule = schedule or Schedule()
    x, color = image_to_tensor(img)
    if icc_profile and icc_profile[36:40] == b"acsp" and icc_profile[16:20] != ICC_SPACE[color]:
        icc_profile = None
    h, w = x.shape[-2:]
    if target_bpp is None:
        coded = coded_size(w, h, scale or 1.0)
        a = analyze(m, resample_picture(x, *coded), device, tune)
    else:
        coded, a, quality = fit_rate(m, x, target_bpp, scale, schedule, device, tune)
    levels = levels_for_quality(m, a, quality)[0]
    return write_tokens(m, levels, a.idx, w, h, color, schedule, icc_profile, exif, workers, coded, xmp)


def fit_rate(
    m: LoadedModel, x: torch.Tensor, target_bpp: float, scale: float | None, schedule: Schedule, device: str, tune: str
) -> tuple[tuple[int, int], Analysis, float]:
    """Coded size, analysis and quality for a target rate: at `scale`, or else at the scale of the
    target's band (SCALE_BANDS) and, if even quality 0 is over the target there, at the smaller
    ones in turn; where none reaches it, the scale with the smallest file."""
    h, w = x.shape[-2:]
    floors: list[tuple[float, tuple[int, int], Analysis]] = []
    for s in [scale] if scale else scales_for_bpp(target_bpp):
        coded = coded_size(w, h, s)
        a = analyze(m, resample_picture(x, *coded), device, tune)
        extra = 0.0 if coded == (w, h) else RSMP_BITS
        quality = quality_for_bpp(m, a, h * w, target_bpp, schedule, extra)
        if quality is not None:
            return coded, a, quality
        floors.append((estimate_bits(m, levels_for_quality(m, a, 0)[0], a.idx, schedule) + extra, coded, a))
    _, coded, a = min(floors, key=lambda f: f[0])
    return coded, a, 0.0


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
) -> bytes:
    """Entropy-code a granularity map (h, w) and the code indices under the prior -> .dqc bytes
    for a width x height image; `coded` is the (width, height) of the tokens' picture, which gets
    an RSMP chunk where it differs from the image's (resampled coding)."""
    schedule = schedule or Schedule()
    header = bitstream.Header(
        width, height, color, TILE_SIZE, m.model_id, *_header_shares(levels), schedule.periods, PRECISION
    )

    def encode_tile(i: int, y0: int, x0: int, th: int, tw: int) -> bitstream.Tile:
        known = Tokens(levels[y0 : y0 + th, x0 : x0 + tw], _tile_idx(idx, y0, x0, th, tw))  # type: ignore[arg-type]
        enc = SymbolEncoder()

        def coder(freq: np.ndarray, values: np.ndarray | None) -> np.ndarray:
            assert values is not None
            enc.encode(values, freq)
            return values

        _, _, symbols = code_tile(m.prior, th, tw, schedule, coder, known)
        return bitstream.Tile(i, len(symbols), _symbols_crc(symbols), enc.finish())

    grid = _tile_grid(*levels.shape)
    tiles = _map_tiles(lambda i: encode_tile(i, *grid[i]), len(grid), workers)
    resampled = coded if coded and coded != (width, height) else None
    return bitstream.write(bitstream.Container(header, tiles, icc_profile, exif, coded_size=resampled, xmp=xmp))


def decode_tokens(
    data: bytes, model: str | None = None, workers: int | None = None, max_pixels: int | None = MAX_DECODE_PIXELS
) -> tuple[bitstream.Container, Tokens]:
    """Parse, entropy-decode and verify a .dqc file; returns the container and the tokens.
    `model` None: the shipped model the file was made with. A picture (or coded picture) over
    `max_pixels` is refused before anything is allocated for it; None: no limit."""
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
    levels = torch.zeros(rh, rw, dtype=torch.long)
    idx = [torch.zeros(rh * s, rw * s, dtype=torch.long) for s in KIND_SCALE[1:]]
    schedule = Schedule(hd.periods)
    grid = _tile_grid(rh, rw)

    def decode_tile(i: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
        tile, (_, _, th, tw) = c.tiles[i], grid[i]
        try:
            dec = SymbolDecoder(tile.data)
            t_levels, t_idx, symbols = code_tile(m.prior, th, tw, schedule, lambda f, _v: dec.decode(f), None)
        except DQCError:
            raise
        except Exception as e:  # the range decoder ran off corrupt data
            raise IntegrityError(f"tile {tile.index} does not decode ({type(e).__name__}: {e})") from None
        if len(symbols) != tile.num_symbols or _symbols_crc(symbols) != tile.symbol_crc:
            raise IntegrityError(
                f"tile {tile.index} decoded to different symbols than were encoded "
                "(corrupt file, or a prior computing different probabilities on this machine)"
            )
        return t_levels, t_idx

    for (y0, x0, th, tw), (t_levels, t_idx) in zip(grid, _map_tiles(decode_tile, len(grid), workers)):
        levels[y0 : y0 + th, x0 : x0 + tw] = t_levels
        for t, ti, s in zip(idx, t_idx, KIND_SCALE[1:]):
            t[y0 * s : (y0 + th) * s, x0 * s : (x0 + tw) * s] = ti
    return c, Tokens(levels[None], tuple(t[None] for t in idx))  # type: ignore[arg-type]


def _to_uint8(y: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Decoder output (3, H', W') in [-1, 1], unclamped -> (3, height, width) uint8."""
    return ((y[:, :height, :width].float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


@torch.no_grad()
def _decode_uint8(
    m: LoadedModel, levels: torch.Tensor, idx: tuple[torch.Tensor, ...], width: int, height: int, device: str
) -> torch.Tensor:
    return _to_uint8(_decode_tiled(m.vae.to(device), levels, idx, device), width, height)


def _decode_tiled(
    vae: DQVAE, levels: torch.Tensor, idx: tuple[torch.Tensor, ...], device: str, tile: int = TRANSFORM_TILE // 16
) -> torch.Tensor:
    """DQ-VAE decoder output (3, 16h, 16w) for a region grid (h, w), `tile` regions a side with a halo,
    so that memory stays bounded; within rounding the same picture as decoding the whole grid at once."""
    h, w = levels.shape
    out = torch.empty(3, h * 16, w * 16)
    for rows, cols, c_rows, c_cols in _windows(h, w, tile, TRANSFORM_HALO // 16):
        t_idx = tuple(i[None, _scaled(c_rows, s), _scaled(c_cols, s)].to(device) for i, s in zip(idx, KIND_SCALE[1:]))
        y = vae.decode(Tokens(levels[None, c_rows, c_cols].to(device), t_idx))[0].cpu()  # type: ignore[arg-type]
        out[:, _scaled(rows, 16), _scaled(cols, 16)] = y[:, _inner(rows, c_rows, 16), _inner(cols, c_cols, 16)]
    return out


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
    cw, ch = coded or (width, height)
    y = _decode_uint8(m, tokens.levels[0], tuple(i[0] for i in tokens.idx), cw, ch, device)
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
