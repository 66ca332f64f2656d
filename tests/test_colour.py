"""The colour correction (CCOR, FORMAT.md section 10): exact coding of the offsets, the integer
field against a float bilinear interpolation, corrupt payloads, and what it does for colours."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import dqcodec
from dqcodec import bitstream, colour
from dqcodec.errors import FormatError, IntegrityError


@pytest.mark.parametrize("block_log2,channels", [(3, 3), (4, 1), (6, 3)])
def test_offsets_round_trip_and_the_field_is_bilinear(block_log2: int, channels: int) -> None:
    rng = np.random.default_rng(block_log2)
    width, height = 150, 70
    gh, gw = colour.grid(width, height, block_log2)
    q = rng.integers(-127, 128, (channels, gh, gw))
    q[:, gh // 2 :] = rng.integers(-2, 3, (channels, gh - gh // 2, gw))  # small ones, as usual
    c = colour.Correction(block_log2, 3, 50000, q)
    back = colour.unpack(colour.pack(c), width, height)
    assert np.array_equal(back.offsets, q) and (back.block_log2, back.step, back.decay) == (block_log2, 3, 50000)

    picture = np.full((height, width, 3), 128, np.uint8)
    out = colour.apply(picture, c).astype(np.float64) - 128
    block = 1 << block_log2
    field = F.interpolate(torch.tensor(q * 3.0, dtype=torch.float64)[None], scale_factor=block, mode="bilinear",
                          align_corners=False)[0, :, :height, :width].permute(1, 2, 0).numpy()  # fmt: skip
    expected = np.clip(np.floor(field + 0.5), -128, 127)
    assert np.abs(out - expected).max() == 0  # the same field, rounded half up, clamped


def test_residual_table_sums_to_the_precision() -> None:
    for decay in (1, 16384, 65535):
        table = colour.residual_table(decay)
        assert table.sum() == 1 << 20 and table.min() >= 1 and table.argmax() == 2 * colour.MAX_OFFSET


def test_bad_payloads_are_refused() -> None:
    good = colour.pack(colour.Correction(4, 1, 40000, np.ones((3, 2, 2), np.int64)))
    with pytest.raises(FormatError):
        colour.unpack(bytes([9]) + good[1:], 32, 32)  # blocks of 512 px
    with pytest.raises(FormatError):
        colour.unpack(good[:3], 32, 32)
    with pytest.raises((IntegrityError, FormatError)):
        colour.unpack(good[: colour.HEADER.size] + b"\xff\xff\xff\xff" * 3, 32, 32)


@pytest.mark.parametrize("rgb", [(200, 30, 40), (255, 0, 0), (255, 255, 0)])
def test_a_saturated_flat_picture_keeps_its_colour(rgb: tuple[int, int, int]) -> None:
    """Without the correction (effort 0) the middle of a flat saturated patch comes back 10-30
    levels off; with it, within 1.5 on average."""
    picture = np.broadcast_to(np.array(rgb, np.uint8), (64, 64, 3)).copy()
    plain = np.asarray(dqcodec.decode(dqcodec.encode(picture, effort=0)), dtype=np.int64)
    data = dqcodec.encode(picture)
    assert bitstream.read(data).colour is not None and bitstream.read(data).version == 3
    corrected = np.asarray(dqcodec.decode(data), dtype=np.int64)
    middle = (slice(16, 48), slice(16, 48))
    assert np.abs(plain[middle].mean((0, 1)) - rgb).max() > 10
    assert np.abs(corrected[middle].mean((0, 1)) - rgb).max() <= 1.5


def test_a_single_pixel_keeps_its_colour() -> None:
    for rgb in [(255, 0, 0), (0, 0, 255), (20, 200, 60), (128, 128, 128)]:
        pixel = np.array(rgb, np.uint8).reshape(1, 1, 3)
        out = np.asarray(dqcodec.decode(dqcodec.encode(pixel)), dtype=np.int64)
        assert np.abs(out - rgb).max() <= 6, (rgb, out)
