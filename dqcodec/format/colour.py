"""The colour correction of a .dqc file (CCOR chunk, FORMAT.md section 10): a smooth offset
field added to the decoded picture, in exact integer arithmetic.

The DQ-VAE's codebook cannot draw every colour: a flat saturated red comes back 20-50 levels
off, pure blue 90. The encoder measures what the decoded picture got wrong at low frequency and
codes it as one integer offset per channel for each B x B block (B = 8 to 64); the decoder
interpolates the offsets bilinearly between block centres and adds them. This module is the
decoder's part (payload, symbols, field); the encoder's choice of the offsets is
`dqcodec.encoder.colour_fit`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from dqcodec.errors import FormatError, IntegrityError
from dqcodec.format.entropy import SymbolDecoder, SymbolEncoder, geometric_frequencies

MAX_OFFSET = 127  # |q| of a block's offset, in units of the step
RESIDUALS = 2 * 2 * MAX_OFFSET + 1  # the alphabet of q - prediction: -254..254
BLOCK_LOG2 = (3, 6)  # blocks of 8 to 64 px
MAX_STEP = 8
HEADER = struct.Struct(">BBBH")  # block_log2, step, channels, decay
BAND_ROWS = 256  # rows of the field computed at a time, so that memory stays bounded


@dataclass(frozen=True)
class Correction:
    """Offsets q (channels, gh, gw) in units of `step` levels, for blocks of 2^block_log2 px."""

    block_log2: int
    step: int
    decay: int  # of the residuals' table, in 1/65536 (section 10.2)
    offsets: np.ndarray  # int64 (channels, gh, gw), each in -MAX_OFFSET..MAX_OFFSET

    @property
    def block(self) -> int:
        return 1 << self.block_log2


def grid(width: int, height: int, block_log2: int) -> tuple[int, int]:
    """(gh, gw): blocks over a width x height picture."""
    block = 1 << block_log2
    return -(-height // block), -(-width // block)


def residual_table(decay: int) -> np.ndarray:
    """The frequencies (RESIDUALS,) of residuals -254..254, summing to 2^PRECISION (section 10.2)."""
    return geometric_frequencies(np.abs(np.arange(RESIDUALS) - 2 * MAX_OFFSET), decay)


def _median_prediction(q: np.ndarray, y: int, x: int) -> int:
    """LOCO-I's median predictor from the left, upper and upper-left offsets (0 outside)."""
    a = int(q[y, x - 1]) if x else 0
    b = int(q[y - 1, x]) if y else 0
    c = int(q[y - 1, x - 1]) if x and y else 0
    if c >= max(a, b):
        return min(a, b)
    if c <= min(a, b):
        return max(a, b)
    return a + b - c


def residuals_of(offsets: np.ndarray) -> np.ndarray:
    """The coded residuals of offsets (C, gh, gw): each offset minus its median prediction, in
    coding order (blocks in raster order, channels within a block). Vectorised: every neighbour is known."""
    q = np.pad(offsets.astype(np.int64), ((0, 0), (1, 0), (1, 0)))
    a, b, c = q[:, 1:, :-1], q[:, :-1, 1:], q[:, :-1, :-1]
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    prediction = np.where(c >= hi, lo, np.where(c <= lo, hi, a + b - c))
    return (offsets - prediction).transpose(1, 2, 0).reshape(-1)


def _check_header(block_log2: int, step: int, channels: int, decay: int) -> None:
    if not (BLOCK_LOG2[0] <= block_log2 <= BLOCK_LOG2[1] and 1 <= step <= MAX_STEP and channels in (1, 3)):
        raise FormatError(f"colour correction: blocks 2^{block_log2}, step {step}, {channels} channels are not allowed")
    if not 1 <= decay <= 65535:
        raise FormatError(f"colour correction: decay {decay} is not in 1..65535")


def pack(c: Correction) -> bytes:
    """The CCOR payload: header, then the range-coded residuals."""
    channels = c.offsets.shape[0]
    _check_header(c.block_log2, c.step, channels, c.decay)
    if np.abs(c.offsets).max(initial=0) > MAX_OFFSET:
        raise ValueError("offset out of range")
    symbols = residuals_of(c.offsets) + 2 * MAX_OFFSET
    enc = SymbolEncoder()
    enc.encode_iid(symbols, residual_table(c.decay))
    return HEADER.pack(c.block_log2, c.step, channels, c.decay) + enc.finish()


def unpack(payload: bytes, width: int, height: int) -> Correction:
    """Parse and decode a CCOR payload for a width x height picture."""
    if len(payload) < HEADER.size:
        raise FormatError("colour correction chunk is too short")
    block_log2, step, channels, decay = HEADER.unpack_from(payload)
    _check_header(block_log2, step, channels, decay)
    gh, gw = grid(width, height, block_log2)
    n = gh * gw * channels
    try:
        dec = SymbolDecoder(payload[HEADER.size :])
        symbols = dec.decode_iid(residual_table(decay), n)
    except (ValueError, AssertionError, RuntimeError) as e:
        raise IntegrityError(f"colour correction does not decode ({type(e).__name__})") from None
    residuals = (symbols - 2 * MAX_OFFSET).reshape(gh, gw, channels)
    offsets = np.zeros((channels, gh, gw), dtype=np.int64)
    for ch in range(channels):
        q = offsets[ch]
        for y in range(gh):
            for x in range(gw):
                q[y, x] = residuals[y, x, ch] + _median_prediction(q, y, x)
    if np.abs(offsets).max(initial=0) > MAX_OFFSET:
        raise IntegrityError("colour correction decodes to an offset out of range (corrupt file)")
    return Correction(block_log2, step, decay, offsets)


def _axis_weights(n: int, blocks: int, block: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For each of n samples: the two blocks whose centres surround it (clamped to the edges) and
    their integer weights, which sum to 2 * block (section 10.3)."""
    t = 2 * np.arange(n, dtype=np.int64) + 1 - block  # 2 * block * (the sample's position in block units)
    first = np.floor_divide(t, 2 * block)
    frac = t - first * 2 * block  # 0 .. 2 * block - 1
    lo, hi = np.clip(first, 0, blocks - 1), np.clip(first + 1, 0, blocks - 1)
    return lo, hi, 2 * block - frac, frac


def apply(picture: np.ndarray, c: Correction) -> np.ndarray:
    """picture (H, W, 3) or (H, W) uint8 plus the correction's field, clamped to 0..255 (a new array)."""
    height, width = picture.shape[:2]
    block = c.block
    lo_x, hi_x, w0_x, w1_x = _axis_weights(width, c.offsets.shape[2], block)
    lo_y, hi_y, w0_y, w1_y = _axis_weights(height, c.offsets.shape[1], block)
    shift = 2 + 2 * c.block_log2  # the weights' product is in units of 1 / (4 block^2)
    out = np.empty_like(picture)
    planes = picture if picture.ndim == 3 else picture[..., None]
    result = out if out.ndim == 3 else out[..., None]
    for ch in range(planes.shape[2]):
        q = c.offsets[min(ch, c.offsets.shape[0] - 1)] * c.step
        along_x = q[:, lo_x] * w0_x + q[:, hi_x] * w1_x  # (gh, W)
        for y0 in range(0, height, BAND_ROWS):
            rows = slice(y0, min(height, y0 + BAND_ROWS))
            field = along_x[lo_y[rows]] * w0_y[rows, None] + along_x[hi_y[rows]] * w1_y[rows, None]
            offset = (field + (1 << (shift - 1))) >> shift
            result[rows, :, ch] = np.clip(planes[rows, :, ch].astype(np.int64) + offset, 0, 255)
    return out
