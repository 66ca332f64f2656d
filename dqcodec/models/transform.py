"""The DQ-VAE transform on whole pictures: analysis and synthesis in tiles with a halo, so that
memory stays bounded on large images, and the 8-bit rounding of the synthesised picture."""

from __future__ import annotations

import copy
import os
import weakref
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import cache

import torch
import torch.nn.functional as F
from torch import nn

from dqcodec import progress
from dqcodec.format.coding import threads
from dqcodec.format.resample import resize
from dqcodec.format.tokens import KIND_SCALE
from dqcodec.models import DQVAE
from dqcodec.models.dqvae import LEVEL_STRIDES, Decoder, Tokens
from dqcodec.models.layers import Bfloat16Conv2d, ResBlock

TRANSFORM_TILE = 1024  # pixels; larger images go through the DQ-VAE in tiles (its memory grows with area)
# The decoder's activations are wider than the encoder's: a 1280x1280 window (1024 + halo) peaked
# at 630 MB; 768 + halo keeps a decode of any picture near 450 MB (a 768x512 picture is one window).
SYNTHESIS_TILE = 768
TRANSFORM_HALO = 128  # pixels of context around each tile, about the receptive field
# oneDNN caps (ONEDNN_MAX_CPU_ISA) below its native bfloat16 kernels: under them it emulates
# bfloat16, over 100x slower than float32
_ISA_CAPS_WITHOUT_BF16 = {"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI"}


@cache
def bfloat16_convolutions() -> bool:
    """Whether the decoder's synthesis may run its convolutions in bfloat16: this CPU has
    AVX512-BF16 or AMX, and oneDNN may use them. They are about 1.6x faster than float32 there."""
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", os.environ.get("DNNL_MAX_CPU_ISA", "")).upper()
    native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return native and torch.backends.mkldnn.is_available() and cap not in _ISA_CAPS_WITHOUT_BF16


_bfloat16_decoders: weakref.WeakKeyDictionary[Decoder, Decoder] = weakref.WeakKeyDictionary()


def bfloat16_decoder(decoder: Decoder) -> Decoder:
    """A copy of `decoder` whose convolutions take bfloat16 operands, all but the last (to_rgb,
    whose output would round to 1/256 of the range): the residual stream and every sum stay float32.
    On Kodak its pictures differ from float32's by at most 1 in a sample, in 5-7% of them."""
    if decoder not in _bfloat16_decoders:
        fast = copy.deepcopy(decoder)
        for parent in [fast, *fast.modules()]:
            for name, child in parent.named_children():
                if isinstance(child, nn.Conv2d) and parent is not fast.to_rgb:
                    setattr(
                        parent,
                        name,
                        Bfloat16Conv2d(child, bfloat16_output=isinstance(parent, ResBlock) and name == "conv1"),
                    )
        fast.memory_format = torch.channels_last
        _bfloat16_decoders[decoder] = fast
    return _bfloat16_decoders[decoder]


def pad16(x: torch.Tensor) -> torch.Tensor:
    """Pad (.., H, W) on the right and bottom to multiples of 16 by repeating the last row and column."""
    h, w = x.shape[-2:]
    ph, pw = -h % 16, -w % 16
    return F.pad(x, (0, pw, 0, ph), mode="replicate") if ph or pw else x


def windows(h: int, w: int, tile: int, halo: int) -> Iterator[tuple[slice, slice, slice, slice]]:
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


def encode_tiled(
    vae: DQVAE, x: torch.Tensor, tile: int = TRANSFORM_TILE, exact: bool = False
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The DQ-VAE encoder on x (1, 3, H, W), H and W multiples of 16, tile by tile with a halo
    (identical code indices to one whole-image pass; tested). `exact`: each tile on one torch
    thread (tiles side by side on torch's threads' count of Python threads), so that the latents
    are the same floats for any thread count: some of the encoder's convolutions round otherwise
    with the count, which the codes never notice but the refinement (`refine`) would."""
    h, w = x.shape[-2:]
    parts = list(windows(h, w, tile, TRANSFORM_HALO)) if h > tile or w > tile else []
    if not parts:
        with threads(1 if exact else None):
            return vae.encoder(x)
    workers = torch.get_num_threads() if exact else 1
    with threads(1 if exact else None), ThreadPoolExecutor(workers) as pool:
        tiles = list(pool.map(lambda part: vae.encoder(x[..., part[2], part[3]]), parts))
    latents = [
        tiles[0][0][i].new_empty(1, tiles[0][0][i].shape[1], h // s, w // s) for i, s in enumerate(LEVEL_STRIDES)
    ]
    score = x.new_empty(1, h // 16, w // 16)
    for (rows, cols, c_rows, c_cols), (t_lat, t_score) in zip(parts, tiles):
        for out, t, s in zip(latents + [score[:, None]], t_lat + [t_score[:, None]], (*LEVEL_STRIDES, 16)):
            out[..., _scaled(rows, div=s), _scaled(cols, div=s)] = t[
                ..., _inner(rows, c_rows, div=s), _inner(cols, c_cols, div=s)
            ]
    return latents, score


def decode_tiled(
    vae: DQVAE,
    levels: torch.Tensor,
    idx: tuple[torch.Tensor, ...],
    device: str,
    tile: int = SYNTHESIS_TILE // 16,
    bfloat16: bool = False,
) -> torch.Tensor:
    """DQ-VAE decoder output (3, 16h, 16w) for a region grid (h, w), `tile` regions a side with a halo,
    so that memory stays bounded; within rounding the same picture as decoding the whole grid at once.
    `bfloat16`: through `bfloat16_decoder`."""
    b = vae.cfg.border_regions
    if b:  # the decoder's border: the grid padded by repeating its edge tokens
        levels, idx = pad_tokens(levels, idx, b)
    h, w = levels.shape
    decoder = bfloat16_decoder(vae.decoder) if bfloat16 else vae.decoder
    out = torch.empty(3, h * 16, w * 16)
    parts = list(windows(h, w, tile, TRANSFORM_HALO // 16))
    for done, (rows, cols, c_rows, c_cols) in enumerate(parts):
        progress.report("synthesis", done, len(parts))
        t_idx = tuple(i[None, _scaled(c_rows, s), _scaled(c_cols, s)].to(device) for i, s in zip(idx, KIND_SCALE[1:]))
        y = vae.decode(Tokens(levels[None, c_rows, c_cols].to(device), t_idx), decoder)[0].cpu()  # type: ignore[arg-type]
        out[:, _scaled(rows, 16), _scaled(cols, 16)] = y[:, _inner(rows, c_rows, 16), _inner(cols, c_cols, 16)]
    return out[:, 16 * b : out.shape[1] - 16 * b, 16 * b : out.shape[2] - 16 * b] if b else out


def pad_tokens(
    levels: torch.Tensor, idx: tuple[torch.Tensor, ...], regions: int
) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """A token grid (h, w) padded by `regions` on every side, its edge tokens repeated."""
    h, w = levels.shape

    def grown(t: torch.Tensor, s: int) -> torch.Tensor:
        rows = torch.arange(-regions * s, (h + regions) * s).clamp(0, h * s - 1)
        cols = torch.arange(-regions * s, (w + regions) * s).clamp(0, w * s - 1)
        return t[rows][:, cols]

    return grown(levels, 1), tuple(grown(i, s) for i, s in zip(idx, KIND_SCALE[1:]))


def to_uint8(y: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Decoder output (3, H', W') in [-1, 1], unclamped -> (3, height, width) uint8."""
    return ((y[:, :height, :width].float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


@torch.no_grad()
def synthesize(
    vae: DQVAE,
    levels: torch.Tensor,
    idx: tuple[torch.Tensor, ...],
    width: int,
    height: int,
    device: str = "cpu",
    fast: bool = False,
) -> torch.Tensor:
    """The 8-bit picture (3, height, width) the tokens of a (h, w) region grid describe. `fast`
    (the decoder's choice): bfloat16 convolutions where the CPU has them, a sample off by 1 here
    and there; without it (the encoder's choice, so that its decisions are the same on every
    machine), float32."""
    bfloat16 = fast and device == "cpu" and bfloat16_convolutions()
    return to_uint8(decode_tiled(vae.to(device), levels, idx, device, bfloat16=bfloat16), width, height)


def resample_picture(x: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """x (1, 3, H, W) in [0, 1] resampled to (1, 3, height, width) through 8 bits, as the decoder will."""
    if x.shape[-2:] == (height, width):
        return x
    return resize((x[0] * 255).round().to(torch.uint8), width, height)[None].float() / 255.0
