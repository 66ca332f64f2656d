"""Rate-distortion choice of the granularity map."""

import math

import pytest
import torch

import dqcodec
from dqcodec import DQCError, rdo
from dqcodec.codec import analyze, decode_tokens, image_to_tensor, levels_for_quality, load_model
from dqcodec.models.dqvae import rank_levels
from tests.conftest import synthetic_image


def test_lambda_falls_with_quality() -> None:
    lams = [rdo.lagrange_multiplier(q) for q in (0, 10, 50, 90, 100)]
    assert math.isinf(lams[0]) and lams[-1] == 0
    assert lams[1] > lams[2] == rdo.LAMBDA_MID > lams[3] > lams[4]


def test_region_distortion_sums_squared_error_per_region_ignoring_padding() -> None:
    original = torch.zeros(3, 20, 40, dtype=torch.uint8)
    decoded = torch.zeros(1, 3, 20, 40, dtype=torch.uint8)
    decoded[0, 1, 0, 0] = 3  # region (0, 0)
    decoded[0, :, 19, 39] = 2  # region (1, 2), the partial one
    d = rdo.region_distortion(decoded, original)
    assert d.shape == (1, 2, 3)
    assert d[0, 0, 0] == 9 and d[0, 1, 2] == 12 and d.sum() == 21


def test_choose_levels_trades_distortion_for_rate() -> None:
    # region 0 gains a lot from finer levels, region 1 nothing
    d = torch.tensor([[1e6, 100.0], [2e5, 100.0], [1e3, 100.0]]).reshape(3, 1, 2)
    assert rdo.choose_levels(d, 0).tolist() == [[0, 0]]
    assert rdo.choose_levels(d, 100).tolist() == [[2, 0]]  # ties go to the cheaper level
    mid = rdo.choose_levels(d, 50)[0]
    assert mid[1] == 0 and mid[0] > 0


def test_rd_map_has_least_distortion_among_maps_with_its_level_counts() -> None:
    img = synthetic_image(128, 96, seed=3)
    m = load_model()
    a = analyze(m, image_to_tensor(img)[0], tune="psnr")
    assert a.distortion is not None
    rd, _, _ = levels_for_quality(m, a, 60)
    n = rd.numel()
    shares = [torch.tensor([(rd == lv).sum().item() / n]) for lv in (2, 1)]
    gate = rank_levels(a.score[None], *shares)[0]  # the gate's ranking with the same counts (same rate)
    assert all((gate == lv).sum() == (rd == lv).sum() for lv in range(3))
    assert 0 < (rd == 0).sum() < n  # a mixed map, so the comparison says something
    total = lambda lv: a.distortion.gather(0, lv[None]).sum().item()  # noqa: E731
    assert total(rd) <= total(gate)


def test_tune_psnr_codes_the_rd_map() -> None:
    img = synthetic_image(160, 128, seed=7)
    m = load_model()
    x = image_to_tensor(img)[0]
    assert analyze(m, x).distortion is None  # the default tune does not measure
    rd_map = levels_for_quality(m, analyze(m, x, tune="psnr"), 60)[0]
    gate_map = levels_for_quality(m, analyze(m, x), 60)[0]
    assert not torch.equal(rd_map, gate_map)
    for tune, expected in (("psnr", rd_map), ("ssim", gate_map)):
        _, tokens = decode_tokens(dqcodec.encode(img, quality=60, tune=tune))
        assert torch.equal(tokens.levels[0], expected)
    with pytest.raises(DQCError, match="unknown tune"):
        dqcodec.encode(img, tune="vmaf")
