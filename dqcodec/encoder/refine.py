"""Analysis by synthesis (`--effort`): the encoder's tokens refined against the decoder.

The analysis picks each token as the code nearest the encoder's latent: nearest in latent
space, not the code that decodes closest to the picture. Here the latents become parameters:
the decoder synthesises the picture from their nearest codes (straight-through), the tune's
measure of that picture against the original is differentiated back to the latents, and Adam
moves them; each latent's nearest code is then its token. The granularity map stays as rate
control chose it, and the decoder, the format and every file's decoding are unchanged: this
is an encoder's choice, like `cjxl -e`.

The measure is the tune's: squared error for tune "psnr"; for tune "ssim", the loss the
transform was trained with (squared error and 1 - MS-SSIM). A rate term holds the latents near
the analysis's, whose codes the prior predicts best, so that bits do not creep up.

The pictures go through the decoder in windows of WINDOW regions a side with HALO regions of
context, so that memory stays bounded; each window starts from the analysis's latents and updates
those of its own regions, so the windows (and, when the map is chosen again, the levels) are
independent and run side by side, each on one thread. The synthesis runs in bfloat16 where the
CPU has it (`transform.bfloat16_convolutions`), else in float32: the refined tokens, and so the
bytes, may differ between CPU kinds (a file decodes the same everywhere); on one machine they are
the same for any thread count.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import torch
import torch.nn.functional as F

from dqcodec import progress
from dqcodec.encoder import effort as efforts
from dqcodec.encoder.effort import Effort
from dqcodec.format.coding import threads
from dqcodec.metrics import ms_ssim
from dqcodec.models import DQVAE
from dqcodec.models.dqvae import LEVEL_STRIDES, REGION, Decoder
from dqcodec.models.transform import bfloat16_convolutions, bfloat16_decoder, windows

WINDOW, HALO = 48, 4  # regions: 768 px windows (a Kodak picture is one) with 64 px of context each side
SSIM_WINDOW = 11  # px: MS-SSIM needs pictures at least this large
MS_SSIM_WEIGHT = 0.02  # tune "ssim": the training loss, MSE + 0.02 (1 - MS-SSIM)
RATE_WEIGHT = 0.03  # the latents' squared distance from where they start, per element, against the measure
# Where the latents start: "latents", the analysis's (computed exactly: `transform.encode_tiled`),
# or "codes", their nearest code vectors (from which a few steps never reach another code)
START = "latents"


def measure_loss(y: torch.Tensor, x: torch.Tensor, tune: str) -> torch.Tensor:
    """The tune's measure of picture y against x, both (1, 3, H, W) in [0, 1]."""
    mse = F.mse_loss(y, x)
    if tune == "psnr" or min(x.shape[-2:]) < SSIM_WINDOW:
        return mse
    return mse + MS_SSIM_WEIGHT * (1 - ms_ssim(y.clamp(0, 1), x).mean())


def _straight_through(vae: DQVAE, z: torch.Tensor) -> torch.Tensor:
    """The nearest codes of latents z (1, dim, h, w), with z's gradient."""
    codes = vae.quantizer.lookup(vae.quantizer.indices(z.detach())).to(z.dtype)
    return z + (codes - z).detach()


def refine(
    vae: DQVAE,
    picture: torch.Tensor,
    latents: list[torch.Tensor],
    levels: torch.Tensor,
    effort: int | Effort,
    tune: str,
    width: int | None = None,
    height: int | None = None,
    workers: int = 1,
) -> tuple[tuple[torch.Tensor, ...], list[torch.Tensor]]:
    """The tokens of every level after `effort`'s refinement, and the refined latents: picture
    (1, 3, 16h, 16w) in [0, 1] padded to whole regions, `latents` of the analysis (one
    (1, dim, h*s, w*s) per level), the map `levels` (h, w); the loss counts the width x height
    picture only (the rest is padding). The windows run side by side on `workers` threads."""
    setting = effort if isinstance(effort, Effort) else efforts.EFFORTS[effort]
    if setting.steps == 0:
        return tuple(vae.quantizer.indices(z)[0] for z in latents), latents
    jobs, refined = _window_jobs(vae, picture, latents, levels, setting, tune, width, height)
    _run(jobs, workers)
    return tuple(vae.quantizer.indices(z)[0] for z in refined), refined


def refine_every_level(
    vae: DQVAE,
    picture: torch.Tensor,
    latents: list[torch.Tensor],
    setting: Effort,
    tune: str,
    width: int,
    height: int,
    workers: int = 1,
) -> tuple[tuple[torch.Tensor, ...], list[torch.Tensor]]:
    """Each level's tokens and latents refined with the whole picture at that level (for choosing
    the map again: `codec.refined_tokens`); every level's windows side by side on `workers` threads."""
    h, w = latents[0].shape[-2:]
    pre = Effort(setting.rechoose_steps, setting.lr)
    jobs, per_level = [], []
    for level in range(len(latents)):
        uniform = torch.full((h, w), level, dtype=torch.long, device=latents[0].device)
        level_jobs, refined = _window_jobs(vae, picture, latents, uniform, pre, tune, width, height)
        jobs += level_jobs
        per_level.append(refined[level])
    _run(jobs, workers)
    return tuple(vae.quantizer.indices(z)[0] for z in per_level), per_level


def _window_jobs(
    vae: DQVAE,
    picture: torch.Tensor,
    latents: list[torch.Tensor],
    levels: torch.Tensor,
    setting: Effort,
    tune: str,
    width: int | None,
    height: int | None,
) -> tuple[list[Callable[[], None]], list[torch.Tensor]]:
    """The refinement's windows as independent jobs, and the latents they write: each window
    starts from the analysis's latents (its halo too) and writes its own regions only, so the
    jobs may run in any order, side by side."""
    h, w = levels.shape
    width, height = width or 16 * w, height or 16 * h
    decoder: Decoder = bfloat16_decoder(vae.decoder) if bfloat16_convolutions() else vae.decoder
    if START == "codes":
        latents = [vae.quantizer.lookup(vae.quantizer.indices(z)) for z in latents]
    start = [z.detach().float() for z in latents]
    refined = [z.clone() for z in start]
    jobs = [
        partial(_refine_window, vae, decoder, picture, start, refined, levels, part, setting, tune, width, height)
        for part in windows(h, w, WINDOW, HALO)
    ]
    return jobs, refined


def _run(jobs: list[Callable[[], None]], workers: int) -> None:
    """The jobs, on `workers` Python threads each on one torch thread (the caller's one thread
    where there is one worker): each job's arithmetic, and so its result, is the same either way."""
    if workers <= 1 or len(jobs) == 1:
        for done, job in enumerate(jobs):
            progress.report("refining", done, len(jobs))
            job()
        return

    def one(job: Callable[[], None]) -> None:
        with torch.inference_mode(False), torch.enable_grad(), threads(1):  # grad mode is per thread
            job()

    progress.report("refining", 0, len(jobs))  # reported from this thread, as the jobs finish
    with ThreadPoolExecutor(min(workers, len(jobs))) as pool:
        for done, _ in enumerate(pool.map(one, jobs), start=1):
            if done < len(jobs):
                progress.report("refining", done, len(jobs))


def _refine_window(
    vae: DQVAE,
    decoder: Decoder,
    picture: torch.Tensor,
    latents: list[torch.Tensor],
    refined: list[torch.Tensor],
    levels: torch.Tensor,
    window: tuple[slice, slice, slice, slice],
    setting: Effort,
    tune: str,
    width: int,
    height: int,
) -> None:
    rows, cols, c_rows, c_cols = window
    cells = [REGION // s for s in LEVEL_STRIDES]  # latents a region side, per level
    z = [lat[..., _times(c_rows, c), _times(c_cols, c)] for lat, c in zip(latents, cells)]
    # the decoder's border: its token grid padded by repeating the edge tokens, where the window
    # meets the picture's edge (DQVAEConfig.border_regions, as `transform.decode_tiled` pads)
    b = vae.cfg.border_regions
    h, w = levels.shape
    pads = (b * (c_cols.start == 0), b * (c_cols.stop == w), b * (c_rows.start == 0), b * (c_rows.stop == h))
    start = [t.clone() for t in z]
    params = [t.clone().requires_grad_(True) for t in z]
    # only the window's own regions move: the halo is context (and the picture's padding never counts)
    inner_rows, inner_cols = _within(rows, c_rows), _within(cols, c_cols)
    own = torch.zeros(1, 1, c_rows.stop - c_rows.start, c_cols.stop - c_cols.start)
    own[..., inner_rows, inner_cols] = 1
    masks_own = [F.interpolate(own, scale_factor=c, mode="nearest") for c in cells]
    y0, x0 = c_rows.start * REGION, c_cols.start * REGION
    ph, pw = min(height, c_rows.stop * REGION) - y0, min(width, c_cols.stop * REGION) - x0
    target = picture[..., y0 : y0 + ph, x0 : x0 + pw]
    level_rows = torch.arange(c_rows.start - pads[2], c_rows.stop + pads[3]).clamp(0, h - 1)
    level_cols = torch.arange(c_cols.start - pads[0], c_cols.stop + pads[1]).clamp(0, w - 1)
    level_masks = vae.masks_from_levels(levels[level_rows][:, level_cols][None])
    top, left = 16 * pads[2], 16 * pads[0]
    adam = Adam(params)
    for step in range(setting.steps):
        codes = [_straight_through(vae, p) for p in params]
        if any(pads):
            codes = [F.pad(code, tuple(k * c for k in pads), mode="replicate") for code, c in zip(codes, cells)]
        y = (decoder(codes, level_masks).float()[..., top : top + ph, left : left + pw] + 1) / 2
        # The measure's gradient on one thread: its reductions would round otherwise with each
        # thread count (the decoder's convolutions do not), and the tokens with them.
        picture = y.detach().requires_grad_(True)
        with threads(1):
            (toward,) = torch.autograd.grad(measure_loss(picture, target, tune), picture)
        for p in params:
            p.grad = None
        y.backward(toward)
        if RATE_WEIGHT:
            for p, s in zip(params, start):
                p.grad.add_(p.detach() - s, alpha=2 * RATE_WEIGHT / p.numel())  # type: ignore[union-attr]
        for p, m in zip(params, masks_own):
            p.grad.mul_(m)  # type: ignore[union-attr]
        adam.step(setting.rate(step))
    for out, p, c in zip(refined, params, cells):
        out[..., _times(rows, c), _times(cols, c)] = p.detach()[..., _times(inner_rows, c), _times(inner_cols, c)]


class Adam:
    """Adam (Kingma and Ba) with torch.optim.Adam's defaults, in a few tensor operations: importing
    torch.optim costs an encode a second of start-up."""

    BETAS, EPS = (0.9, 0.999), 1e-8

    def __init__(self, params: list[torch.Tensor]) -> None:
        self.params, self.t = params, 0
        self.mean = [torch.zeros_like(p) for p in params]
        self.square = [torch.zeros_like(p) for p in params]

    @torch.no_grad()
    def step(self, lr: float) -> None:
        (b1, b2), self.t = self.BETAS, self.t + 1
        for p, m, v in zip(self.params, self.mean, self.square):
            g = p.grad
            assert g is not None
            m.mul_(b1).add_(g, alpha=1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            denom = (v.sqrt() / math.sqrt(1 - b2**self.t)).add_(self.EPS)
            p.addcdiv_(m, denom, value=-lr / (1 - b1**self.t))


def _times(sl: slice, factor: int) -> slice:
    return slice(sl.start * factor, sl.stop * factor)


def _within(core: slice, context: slice) -> slice:
    return slice(core.start - context.start, core.stop - context.start)
