"""Flat blocks of a .dqc file (FLAT chunk, FORMAT.md section 12): blocks of the picture that the
decoder paints one exact colour, over the synthesis and the colour correction.

The DQ-VAE draws a flat saturated colour with a texture 20-90 levels deep and a dark rim, which
no smooth correction (`colour`) can take out. Where the original is flat (graphics, screenshots,
a colour chart), the encoder flags the B x B block and codes its colour; the decoder overwrites
the block with it. This module is the decoder's part (payload and painting); the encoder's choice
of the blocks is `dqcodec.encoder.colour_fit.flat_blocks`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from dqcodec.errors import FormatError, IntegrityError
from dqcodec.format.colour import grid  # the block grid FLAT shares with CCOR
from dqcodec.format.entropy import PRECISION, SymbolDecoder, SymbolEncoder, geometric_frequencies

BLOCK_LOG2 = (3, 6)  # blocks of 8 to 64 px
HEADER = struct.Struct(">BBHH")  # block_log2, channels, share of flat blocks, decay of the colours' table
LEVELS = 256  # a colour residual is (value - prediction) mod 256


@dataclass(frozen=True)
class FlatBlocks:
    """Flags (gh, gw) bool of the blocks painted flat, and their colours (n, channels) uint8 in
    raster order of the flagged blocks."""

    block_log2: int
    flags: np.ndarray
    colours: np.ndarray

    @property
    def block(self) -> int:
        return 1 << self.block_log2


def flag_table(share: int) -> np.ndarray:
    """The frequencies of (not flat, flat), summing to 2^PRECISION: flat gets share * 16 (section 12.2)."""
    flat = share << (PRECISION - 16)
    return np.array([(1 << PRECISION) - flat, flat], dtype=np.int64)


def colour_table(decay: int) -> np.ndarray:
    """The frequencies (256,) of colour residuals r = 0..255, which stand for r or r - 256: the
    table falls off geometrically with min(r, 256 - r) (section 12.2)."""
    r = np.arange(LEVELS)
    return geometric_frequencies(np.minimum(r, LEVELS - r), decay)


def colour_residuals(colours: np.ndarray) -> np.ndarray:
    """Each flat block's colour minus the previous flat block's (the first: minus 128), mod 256,
    channel by channel, in coding order (blocks, then channels within a block)."""
    values = colours.astype(np.int64)
    previous = np.concatenate([np.full((1, values.shape[1]), 128, np.int64), values[:-1]])
    return ((values - previous) % LEVELS).reshape(-1)


def _check_header(block_log2: int, channels: int, share: int, decay: int) -> None:
    if not (BLOCK_LOG2[0] <= block_log2 <= BLOCK_LOG2[1] and channels in (1, 3)):
        raise FormatError(f"flat blocks: blocks 2^{block_log2}, {channels} channels are not allowed")
    if not (1 <= share <= 65535 and 1 <= decay <= 65535):
        raise FormatError(f"flat blocks: share {share} or decay {decay} is not in 1..65535")


def pack(f: FlatBlocks, share: int, decay: int) -> bytes:
    """The FLAT payload: header, then the range-coded flags and colours."""
    channels = f.colours.shape[1]
    _check_header(f.block_log2, channels, share, decay)
    if len(f.colours) != int(f.flags.sum()):
        raise ValueError("one colour per flat block is needed")
    enc = SymbolEncoder()
    enc.encode_iid(f.flags.reshape(-1).astype(np.int64), flag_table(share))
    enc.encode_iid(colour_residuals(f.colours), colour_table(decay))
    return HEADER.pack(f.block_log2, channels, share, decay) + enc.finish()


def unpack(payload: bytes, width: int, height: int) -> FlatBlocks:
    """Parse and decode a FLAT payload for a width x height picture."""
    if len(payload) < HEADER.size:
        raise FormatError("flat blocks chunk is too short")
    block_log2, channels, share, decay = HEADER.unpack_from(payload)
    _check_header(block_log2, channels, share, decay)
    gh, gw = grid(width, height, block_log2)
    try:
        dec = SymbolDecoder(payload[HEADER.size :])
        flags = dec.decode_iid(flag_table(share), gh * gw).astype(bool)
        residuals = dec.decode_iid(colour_table(decay), int(flags.sum()) * channels)
    except (ValueError, AssertionError, RuntimeError) as e:
        raise IntegrityError(f"flat blocks do not decode ({type(e).__name__})") from None
    colours = (128 + np.cumsum(residuals.reshape(-1, channels), axis=0)) % LEVELS
    return FlatBlocks(block_log2, flags.reshape(gh, gw), colours.astype(np.uint8))


def apply(picture: np.ndarray, f: FlatBlocks) -> np.ndarray:
    """picture (H, W, 3) uint8 with every flat block painted its colour (a new array)."""
    out = picture.copy()
    block = f.block
    for (by, bx), colour in zip(np.argwhere(f.flags), f.colours, strict=True):
        out[by * block : (by + 1) * block, bx * block : (bx + 1) * block] = colour  # (1,) or (3,): to every channel
    return out
