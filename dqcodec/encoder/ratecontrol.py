"""The granularity map for a quality (`-q`) or a target rate (`--bpp`), and the picture's scale
(resampled coding).

`-q` sets a Lagrangian trade-off (`rdo`): the encoder knows every region's distortion at each
level, estimated from the analysis (`distortion`) or measured by decoding the image at each
level, and the counts of coarse, medium and fine regions follow from least distortion + lambda *
bits, so they follow the image's content. With tune "ssim" (default)
the measure is mostly 1 - SSIM and the DGC gate's ranking decides which regions get the finer
levels; with tune "psnr" the measure is squared error and every region takes its own least
cost. `--bpp` finds the map (and the scale band) whose file stays at the target: a rate model
of the image (`ratemodel`) proposes it, and coding it through the integer prior measures it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import torch

from dqcodec import arguments, progress
from dqcodec.encoder.distortion import distortion_estimator, estimate, region_features
from dqcodec.encoder.ratemodel import RateModel, predicted_bits
from dqcodec.encoder.rdo import (
    PSNR_SCALE,
    REGION_BITS,
    STRUCTURAL_SCALE,
    RegionCosts,
    choose_levels,
    region_distortion,
    region_rate,
    ssim_distortion,
    structural_mix,
)
from dqcodec.errors import DQCError
from dqcodec.format.bitstream import Tile
from dqcodec.format.coding import encode_tiles, threads, tile_grid
from dqcodec.format.tokens import Schedule
from dqcodec.models.dqvae import NUM_LEVELS
from dqcodec.models.loading import LoadedModel
from dqcodec.models.transform import encode_tiled, pad16, resample_picture, synthesize

DEFAULT_QUALITY = 50
# How the encoder chooses the granularity map (the decoder does not care):
#   "ssim": the gate's ranking, counts by least structural distortion + lambda * bits (best MS-SSIM and SSIMULACRA2)
#   "psnr": per region, least squared error + lambda * bits (best PSNR)
TUNES = ("ssim", "psnr")
DEFAULT_TUNE = "ssim"
# How the encoder gets every region's distortion at each level:
#   "estimated": predicted from the analysis by a small network (`distortion`), no decoding
#   "measured": the picture decoded at each level (three syntheses, about 2x the encoder's time)
DISTORTIONS = ("estimated", "measured")
# On Kodak the estimate's maps cost the default tune -0.2% / 0.0% / +0.4% BD-rate (PSNR / MS-SSIM /
# SSIMULACRA2) and tune "psnr", which decides region by region, +3.7% PSNR
# (benchmarks/distortion_estimate.py)
DEFAULT_DISTORTION = {"ssim": "estimated", "psnr": "measured"}
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
    arguments.real("quality", quality, 0, 100)


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
    latents: list[torch.Tensor] | None = None  # the encoder's, one (1, dim, h*s, w*s) per level (for `refine`)


@torch.no_grad()
def analyze(
    m: LoadedModel,
    x: torch.Tensor,
    device: str = "cpu",
    tune: str = DEFAULT_TUNE,
    distortion: str | None = None,
    exact: bool = False,
) -> Analysis:
    """Run the DQ-VAE encoder once, then get every region's distortion at each level by the
    tune's measure: estimated from the analysis (`distortion`), or measured by decoding the
    image at each level ("measured", three syntheses); None: the tune's default
    (DEFAULT_DISTORTION). x (1, 3, H, W) in [0, 1]. `exact`: latents that are the same floats
    for any thread count (`transform.encode_tiled`), for the refinement."""
    if tune not in TUNES:
        raise DQCError(f"unknown tune {tune!r}; available: {', '.join(TUNES)}")
    distortion = distortion or DEFAULT_DISTORTION[tune]
    if distortion not in DISTORTIONS:
        raise DQCError(f"unknown distortion {distortion!r}; available: {', '.join(DISTORTIONS)}")
    progress.report("analysis", 0, 1)
    vae = m.vae.to(device)
    padded = pad16(x).to(device)
    latents, score = encode_tiled(vae, padded * 2 - 1, exact=exact)
    idx = tuple(vae.quantizer.indices(z)[0].cpu() for z in latents)
    region_costs = None
    if not m.fixed_grid:
        h, w = x.shape[-2:]
        estimator = distortion_estimator(m.name) if distortion == "estimated" else None
        if estimator is not None:
            codebook = vae.quantizer.embed.cpu()
            cpu_latents = [z.cpu() for z in latents]
            features = region_features(padded[0].cpu(), w, h, cpu_latents, idx, codebook, score[0].cpu())
            squared, ssim = estimate(estimator, features)
            measure = squared if tune == "psnr" else structural_mix(squared, ssim)
            region_costs = RegionCosts(measure, region_rate(measure.shape[1:]), h * w)
        else:
            region_costs = measured_costs(m, x, idx, tune, device)
    return Analysis(score[0].float().cpu(), idx, region_costs, tune, [z.cpu() for z in latents])


def measured_costs(
    m: LoadedModel, x: torch.Tensor, idx: tuple[torch.Tensor, ...], tune: str, device: str = "cpu", workers: int = 0
) -> RegionCosts:
    """Every region's cost at each level by the tune's measure, measured: the picture x (1, 3, H, W)
    in [0, 1] decoded with every region at each level in turn (level l from idx[l]); `workers`:
    as `decode_every_level`."""
    h, w = x.shape[-2:]
    original = (x[0] * 255).round().to(torch.uint8).cpu()
    decoded = decode_every_level(m, idx, w, h, device, workers)
    squared = region_distortion(decoded, original)
    measure = squared if tune == "psnr" else structural_mix(squared, ssim_distortion(decoded, original))
    return RegionCosts(measure, region_rate(measure.shape[1:]), h * w)


def remeasured(
    m: LoadedModel, a: Analysis, x: torch.Tensor, idx: tuple[torch.Tensor, ...], device: str, workers: int = 0
) -> Analysis:
    """The analysis with other tokens (refined ones, say) and their measured costs; x the coded picture."""
    return replace(a, idx=idx, costs=measured_costs(m, x, idx, a.tune, device, workers))


def decode_every_level(
    m: LoadedModel, idx: tuple[torch.Tensor, ...], width: int, height: int, device: str = "cpu", workers: int = 0
) -> torch.Tensor:
    """(L, 3, H, W) uint8: the picture decoded with every region at each level in turn. `workers`:
    0, one level after another on torch's threads; else the levels side by side on that many
    Python threads, each on one torch thread (the same pictures for any count)."""
    shape = idx[0].shape[-2:]  # the coarse codes: one per region
    uniform = [torch.full(shape, lv) for lv in range(NUM_LEVELS)]
    if not workers:
        return torch.stack([synthesize(m.vae, lv, idx, width, height, device) for lv in uniform])

    def one_level(levels: torch.Tensor) -> torch.Tensor:
        with threads(1):
            return synthesize(m.vae, levels, idx, width, height, device)

    with ThreadPoolExecutor(min(workers, NUM_LEVELS)) as pool:
        return torch.stack(list(pool.map(one_level, uniform)))


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


RATE_CHECKS = 4  # maps --bpp codes on one scale at most
RATE_CLOSE = 0.97  # a file within 3% under the target is taken at once
QUALITY_STEPS = 10  # halvings of the quality range when rate control searches it (1/1024 of it)


@dataclass(frozen=True)
class RateFit:
    """A granularity map rate control settled on, and its file as coded."""

    quality: float  # the highest quality whose map is at or under the target (the map may lie between it and the next)
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


def map_for_bits(m: LoadedModel, a: Analysis, rates: RateModel, bits: float) -> tuple[float, torch.Tensor]:
    """The richest map whose tokens the rate model puts at or under `bits`, and its quality.

    The Lagrangian reaches only the convex hull of an image's rate-distortion points, so one step
    of quality may add many regions at once; between the highest quality that fits and the next
    step, the two maps are blended region by region (`blend`) as far as the bits allow."""
    top = levels_for_quality(m, a, 100.0)[0]
    if rates.bits(top) <= bits:
        return 100.0, top
    low = levels_for_quality(m, a, 0.0)[0]
    if rates.bits(low) > bits:
        return 0.0, low
    q = highest(lambda q: rates.bits(levels_for_quality(m, a, q)[0]) <= bits, 0.0, 100.0, QUALITY_STEPS)
    low = levels_for_quality(m, a, q)[0]
    high = levels_for_quality(m, a, q + 100.0 / 2**QUALITY_STEPS)[0]
    order = blend_order(low, high, a.score)
    added = rates.region_bits(high).flatten()[order] - rates.region_bits(low).flatten()[order]
    count = int((added.cumsum(0) <= bits - rates.bits(low)).sum())
    return q, blend(low, high, a.score, count)


def quality_for_bpp(
    m: LoadedModel, a: Analysis, pixels: int, target: float, schedule: Schedule, extra_bits: float = 0.0
) -> RateFit:
    """The richest granularity map whose file (plus `extra_bits`) stays at or under `target` bpp,
    coded; if even quality 0 is over, quality 0 (its `bits` then exceed the target).

    The rate model (`ratemodel`) proposes the map (`map_for_bits`, aiming at the middle of the
    range taken at once); the map is coded, which measures every region's bits and the file's
    overhead, and the model learns them. The first file within RATE_CLOSE under the target is taken; after RATE_CHECKS
    codings, the largest under it."""
    budget = target * pixels
    overhead = FILE_BITS + extra_bits + len(tile_grid(*a.score.shape)) * TILE_BITS
    rates = RateModel(predicted_bits(a.idx, a.score))
    fits: list[RateFit] = []

    def code(q: float, levels: torch.Tensor) -> RateFit:
        nonlocal overhead
        measured = torch.zeros(levels.shape, dtype=torch.float64)
        tiles = encode_tiles(m.prior, levels, a.idx, schedule, region_bits=measured)
        rates.observe(levels, measured)
        bits = sum(8 * len(t.data) + TILE_FRAMING_BITS for t in tiles) + FILE_BITS + extra_bits
        overhead = bits - float(measured.sum())  # the container's and the range coder's flush, as coded
        fits.append(RateFit(q, levels, tiles, bits))
        return fits[-1]

    if m.fixed_grid:
        for q in (100.0, 50.0, 0.0):
            fit = code(q, levels_for_quality(m, a, q)[0])
            if fit.bits <= budget:
                break
        return fit

    aim = budget * (1 + RATE_CLOSE) / 2
    for _ in range(RATE_CHECKS):
        q, levels = map_for_bits(m, a, rates, aim - overhead)
        if any(torch.equal(levels, f.levels) for f in fits):
            break  # the model has nothing new to propose
        fit = code(q, levels)
        if fit.bits <= budget and (fit.bits >= RATE_CLOSE * budget or q == 100.0):
            return fit
        if fit.bits > budget and q == 0.0:
            return fit  # even the coarsest map is over: the caller may try a smaller scale
    under = [f for f in fits if f.bits <= budget]
    if under:
        return max(under, key=lambda f: f.bits)
    return code(0.0, levels_for_quality(m, a, 0.0)[0])


def scales_for_bpp(target_bpp: float) -> list[float]:
    """The scale of the target's band, then the smaller ones."""
    band = next(i for i, (upper, _) in enumerate(SCALE_BANDS) if target_bpp <= upper)
    return [scale for _, scale in SCALE_BANDS[band::-1]]


def coded_size(width: int, height: int, scale: float) -> tuple[int, int]:
    """Size of the picture the model codes for an image resampled by `scale`."""
    arguments.real("scale", scale, MIN_SCALE, MAX_SCALE)
    return max(1, round(width * scale)), max(1, round(height * scale))


def fit_rate(
    m: LoadedModel,
    x: torch.Tensor,
    target_bpp: float,
    scale: float | None,
    schedule: Schedule,
    device: str,
    tune: str,
    distortion: str | None = None,
    exact: bool = False,
    metadata_bits: float = 0.0,
) -> tuple[tuple[int, int], Analysis, RateFit]:
    """Coded size, analysis and coded quality for a target rate: at `scale`, or else at the
    scale of the target's band (SCALE_BANDS) and, if even quality 0 is over the target there, at
    the smaller ones in turn; where none reaches it, the scale with the smallest file."""
    h, w = x.shape[-2:]
    floors: list[tuple[RateFit, tuple[int, int], Analysis]] = []
    for s in [scale] if scale is not None else scales_for_bpp(target_bpp):
        coded = coded_size(w, h, s)
        a = analyze(m, resample_picture(x, *coded), device, tune, distortion, exact)
        extra = metadata_bits + (0.0 if coded == (w, h) else RSMP_BITS)
        fit = quality_for_bpp(m, a, h * w, target_bpp, schedule, extra)
        if fit.bits <= target_bpp * h * w:
            return coded, a, fit
        floors.append((fit, coded, a))
    fit, coded, a = min(floors, key=lambda f: f[0].bits)
    return coded, a, fit
