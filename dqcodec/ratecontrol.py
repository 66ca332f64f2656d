"""The encoder's choices, which the decoder never needs: the granularity map for a quality or a
target rate, and the picture's scale (resampled coding).

`-q` sets a Lagrangian trade-off (`rdo`): the encoder decodes the image at each level, measures
every region's distortion there, and the counts of coarse, medium and fine regions follow from
least distortion + lambda * bits, so they follow the image's content. With tune "ssim" (default)
the measure is mostly 1 - SSIM and the DGC gate's ranking decides which regions get the finer
levels; with tune "psnr" the measure is squared error and every region takes its own least
cost. `--bpp` finds the quality (and the scale band) whose file stays at the target: a
per-image rate model proposes it, and the integer prior counts its bits exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from dqcodec.bitstream import Tile
from dqcodec.coding import encode_tiles, tile_grid
from dqcodec.errors import DQCError
from dqcodec.loading import LoadedModel
from dqcodec.models.dqvae import NUM_LEVELS
from dqcodec.rdo import (
    PSNR_SCALE,
    REGION_BITS,
    STRUCTURAL_SCALE,
    RegionCosts,
    choose_levels,
    region_distortion,
    region_rate,
    structural_distortion,
)
from dqcodec.tokens import Schedule
from dqcodec.transform import encode_tiled, pad16, resample_picture, synthesize

DEFAULT_QUALITY = 50
# How the encoder chooses the granularity map (the decoder does not care):
#   "ssim": the gate's ranking, counts by least structural distortion + lambda * bits (best MS-SSIM and SSIMULACRA2)
#   "psnr": per region, least squared error + lambda * bits (best PSNR)
TUNES = ("ssim", "psnr")
DEFAULT_TUNE = "ssim"
# The coded picture may be resampled (RSMP chunk): below 1 for rates under all-coarse, above 1
# for rates over all-fine (the model's finest level is one code per 4x4 pixels).
MIN_SCALE, MAX_SCALE = 0.25, 2.0
# Scale that --bpp uses for a target rate: the first band whose upper rate is at least the target.
# Where each scale's RD curve is best, measured on BSDS500 test images (benchmarks, not Kodak).
SCALE_BANDS = ((0.03, 0.5), (0.09, 0.71), (0.22, 1.0), (math.inf, 1.5))
RSMP_BITS = 8 * 20  # the RSMP chunk of a resampled file
FILE_BITS = 8 * 69  # signature, version, HEAD and END chunks
TILE_FRAMING_BITS = 8 * 24  # a TILE chunk's bytes besides the range coder's words
TILE_BITS = TILE_FRAMING_BITS + 8 * 2  # and about half a coder word of flush: a tile's overhead


def check_quality(quality: float) -> None:
    if not 0 <= quality <= 100:
        raise DQCError(f"quality must be between 0 and 100, got {quality}")


def fixed_grid_level(quality: float) -> int:
    """The fixed-grid baseline's three settings: all coarse (< 34), all medium (< 67), all fine."""
    return 0 if quality < 34 else 1 if quality < 67 else 2


@dataclass(frozen=True)
class Analysis:
    """What the encoder knows about an image before it chooses the granularity map."""

    score: torch.Tensor  # (h, w) DGC gate scores
    idx: tuple[torch.Tensor, ...]  # code indices of every level, everywhere
    costs: RegionCosts | None = None  # distortion and rate of every region at every level (not for a fixed grid)
    tune: str = DEFAULT_TUNE


@torch.no_grad()
def analyze(m: LoadedModel, x: torch.Tensor, device: str = "cpu", tune: str = DEFAULT_TUNE) -> Analysis:
    """Run the DQ-VAE encoder once, then decode the image at each level to measure every
    region's distortion there by the tune's measure. x (1, 3, H, W) in [0, 1]."""
    if tune not in TUNES:
        raise DQCError(f"unknown tune {tune!r}; available: {', '.join(TUNES)}")
    vae = m.vae.to(device)
    latents, score = encode_tiled(vae, pad16(x).to(device) * 2 - 1)
    idx = tuple(vae.quantizer.indices(z)[0].cpu() for z in latents)
    costs = None
    if not m.fixed_grid:
        h, w = x.shape[-2:]
        original = (x[0] * 255).round().to(torch.uint8).cpu()
        decoded = decode_every_level(m, idx, w, h, device)
        measure = region_distortion if tune == "psnr" else structural_distortion
        distortion = measure(decoded, original)
        costs = RegionCosts(distortion, region_rate(distortion.shape[1:]), h * w)
    return Analysis(score[0].float().cpu(), idx, costs, tune)


def decode_every_level(
    m: LoadedModel, idx: tuple[torch.Tensor, ...], width: int, height: int, device: str = "cpu"
) -> torch.Tensor:
    """(L, 3, H, W) uint8: the picture decoded with every region at each level in turn."""
    shape = idx[0].shape[-2:]  # the coarse codes: one per region
    uniform = [torch.full(shape, lv) for lv in range(NUM_LEVELS)]
    return torch.stack([synthesize(m.vae, lv, idx, width, height, device) for lv in uniform])


def levels_for_quality(m: LoadedModel, a: Analysis, quality: float) -> tuple[torch.Tensor, int, int]:
    """Granularity map for a quality, and its shares as stored in the header (1/65535 units).

    The fixed-grid baseline codes every region at one level; otherwise `rdo.choose_levels` with
    the tune's measure, quality scale and (tune "ssim") the gate's ranking.
    """
    check_quality(quality)
    if a.costs is None:
        levels = torch.full(a.score.shape, fixed_grid_level(quality), dtype=torch.long)
    elif a.tune == "psnr":
        levels = choose_levels(a.costs, quality, PSNR_SCALE)
    else:
        levels = choose_levels(a.costs, quality, STRUCTURAL_SCALE, ranking=a.score)
    return levels, *header_shares(levels)


def header_shares(levels: torch.Tensor) -> tuple[int, int]:
    """Shares of fine and medium regions in the header's units (1/65535)."""
    n = levels.numel()
    q_fine, q_medium = (round(int((levels == lv).sum()) * 65535 / n) for lv in (2, 1))
    return q_fine, q_medium


RATE_CHECKS = 4  # proposals --bpp codes on one scale before it bisects
RATE_CLOSE = 0.97  # a proposal whose file is within 3% under the target is taken at once


@dataclass(frozen=True)
class RateFit:
    """A quality rate control settled on, and its file as coded."""

    quality: float  # the highest quality at or under the target (the map may lie between it and the next)
    levels: torch.Tensor  # the granularity map coded
    tiles: list[Tile]  # range-coded: the file's TILE chunks
    bits: float  # of the whole file


def model_bits(levels: torch.Tensor) -> float:
    """Bits of a granularity map's tokens by the mean bits of a region at its level (REGION_BITS)."""
    return float(torch.tensor(REGION_BITS, dtype=torch.float64)[levels].sum())


def blend_order(low: torch.Tensor, high: torch.Tensor, score: torch.Tensor) -> torch.Tensor:
    """Flat indices of the regions where the maps differ, the gate's highest scores first."""
    changed = torch.nonzero(low.flatten() != high.flatten())[:, 0]
    return changed[torch.argsort(score.flatten()[changed], descending=True, stable=True)]


def blend(low: torch.Tensor, high: torch.Tensor, score: torch.Tensor, count: int) -> torch.Tensor:
    """The map `low` with the first `count` regions of `blend_order` set to high's level."""
    order = blend_order(low, high, score)[:count]
    out = low.flatten().clone()
    out[order] = high.flatten()[order]
    return out.view_as(low)


def highest(fits: Callable[[float], bool], lo: float, hi: float, steps: int) -> float:
    """Bisection in `steps` halvings between a quality lo taken to fit and hi taken not to: the
    highest found to fit."""
    for _ in range(steps):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


def quality_for_bpp(
    m: LoadedModel, a: Analysis, pixels: int, target: float, schedule: Schedule, extra_bits: float = 0.0
) -> RateFit:
    """Highest quality whose file (plus `extra_bits`) stays at or under `target` bpp, coded; if
    even quality 0 is over, quality 0 (its `bits` then exceed the target).

    A rate model of this image proposes the quality: bits = k * (sum of the mean bits of a region
    at its level, REGION_BITS) + c, with k = 1 and c the container's bits at first, then fitted
    to the files coded so far (the last two, as a line). Each proposal is coded for real, so the
    one taken is the file written. The first within 3% under the target is taken; after
    RATE_CHECKS proposals, the maps of the best under the target and the least over it are
    blended (`fill_gap`)."""
    fixed = FILE_BITS + extra_bits
    budget = target * pixels
    coded: dict[float, tuple[float, RateFit]] = {}  # quality -> (model bits, file)

    def code_map(q: float, levels: torch.Tensor) -> RateFit:
        tiles = encode_tiles(m.prior, levels, a.idx, schedule)
        return RateFit(q, levels, tiles, sum(8 * len(t.data) + TILE_FRAMING_BITS for t in tiles) + fixed)

    def code(q: float) -> RateFit:
        if q not in coded:
            levels = levels_for_quality(m, a, q)[0]
            coded[q] = (model_bits(levels), code_map(q, levels))
        return coded[q][1]

    def fits(q: float) -> bool:
        return code(q).bits <= budget

    if m.fixed_grid:
        return code(max((q for q in (0.0, 50.0, 100.0) if fits(q)), default=0.0))

    aim = budget * (1 + RATE_CLOSE) / 2  # the middle of the range taken at once
    k, c = 1.0, fixed + len(tile_grid(*a.score.shape)) * TILE_BITS
    previous: float | None = None
    for _ in range(RATE_CHECKS):

        def model_fits(q: float, k: float = k, c: float = c) -> bool:
            return k * model_bits(levels_for_quality(m, a, q)[0]) + c <= aim

        q = 100.0 if model_fits(100.0) else highest(model_fits, 0.0, 100.0, 10)
        b = code(q).bits
        if b <= budget and (b >= RATE_CLOSE * budget or q == 100.0):
            return code(q)
        m2 = coded[q][0]
        if previous is not None and abs(m2 - coded[previous][0]) > 1.0:
            m1, b1 = coded[previous][0], coded[previous][1].bits
            k = max(0.1, (b - b1) / (m2 - m1))
            c = b - k * m2
        else:
            k = max(0.1, (b - c) / max(1.0, m2))
        previous = q
    under = [q for q in coded if fits(q)]
    if not under and not fits(0.0):
        return code(0.0)
    lo = max(under, default=0.0)
    hi = min((q for q in coded if q > lo and not fits(q)), default=100.0)
    if fits(hi):  # quality 100 fits
        return code(hi)
    return fill_gap(code(lo), code(hi), a.score, budget, aim, code_map)


def fill_gap(
    low: RateFit,
    high: RateFit,
    score: torch.Tensor,
    budget: float,
    aim: float,
    code_map: Callable[[float, torch.Tensor], RateFit],
) -> RateFit:
    """Between a quality under the target and one over it (the Lagrangian reaches only the convex
    hull of an image's rate-distortion points, so one step of quality may jump far), blend their
    maps region by region (`blend`) and take the highest blend found under the target: first the
    count the model bits along the blend propose, then bisection; RATE_CHECKS codings at most, and
    the first within RATE_CLOSE of the target is taken."""
    if low.bits >= RATE_CLOSE * budget:
        return low
    order = blend_order(low.levels, high.levels, score)
    changed = len(order)
    bits = torch.tensor(REGION_BITS, dtype=torch.float64)
    cumulative = (bits[high.levels.flatten()[order]] - bits[low.levels.flatten()[order]]).cumsum(0)
    wanted = (aim - low.bits) / max(1.0, high.bits - low.bits) * float(cumulative[-1]) if changed else 0.0
    proposal: int | None = int(torch.searchsorted(cumulative, torch.tensor([wanted], dtype=torch.float64))[0])
    lo, hi, best = 0, changed, low
    for _ in range(RATE_CHECKS):
        if hi - lo <= 1:
            break
        count = proposal if proposal is not None and lo < proposal < hi else (lo + hi) // 2
        proposal = None
        fit = code_map(low.quality, blend(low.levels, high.levels, score, count))
        if fit.bits <= budget:
            lo, best = count, fit
            if fit.bits >= RATE_CLOSE * budget:
                break
        else:
            hi = count
    return best


def scales_for_bpp(target_bpp: float) -> list[float]:
    """The scale of the target's band, then the smaller ones."""
    band = next(i for i, (upper, _) in enumerate(SCALE_BANDS) if target_bpp <= upper)
    return [scale for _, scale in SCALE_BANDS[band::-1]]


def coded_size(width: int, height: int, scale: float) -> tuple[int, int]:
    """Size of the picture the model codes for an image resampled by `scale`."""
    if not MIN_SCALE <= scale <= MAX_SCALE:
        raise DQCError(f"scale must be between {MIN_SCALE} and {MAX_SCALE}, got {scale}")
    return max(1, round(width * scale)), max(1, round(height * scale))


def fit_rate(
    m: LoadedModel, x: torch.Tensor, target_bpp: float, scale: float | None, schedule: Schedule, device: str, tune: str
) -> tuple[tuple[int, int], Analysis, RateFit]:
    """Coded size, analysis and coded quality for a target rate: at `scale`, or else at the
    scale of the target's band (SCALE_BANDS) and, if even quality 0 is over the target there, at
    the smaller ones in turn; where none reaches it, the scale with the smallest file."""
    h, w = x.shape[-2:]
    floors: list[tuple[RateFit, tuple[int, int], Analysis]] = []
    for s in [scale] if scale else scales_for_bpp(target_bpp):
        coded = coded_size(w, h, s)
        a = analyze(m, resample_picture(x, *coded), device, tune)
        fit = quality_for_bpp(m, a, h * w, target_bpp, schedule, 0.0 if coded == (w, h) else RSMP_BITS)
        if fit.bits <= target_bpp * h * w:
            return coded, a, fit
        floors.append((fit, coded, a))
    fit, coded, a = min(floors, key=lambda f: f[0].bits)
    return coded, a, fit
