"""Rate-distortion choice of the granularity map."""

import math

import numpy as np
import pytest
import torch
from PIL import Image

import dqcodec
from dqcodec import DQCError
from dqcodec.decoding import decode_tokens
from dqcodec.encoder import rdo
from dqcodec.encoder.distortion import distortion_estimator
from dqcodec.encoder.ratecontrol import analyze, levels_for_quality, model_bits
from dqcodec.encoding import image_to_tensor
from dqcodec.models.dqvae import rank_levels
from dqcodec.models.loading import load_model
from tests.conftest import synthetic_image


def costs(distortion: list[list[float]], rate: list[list[float]], pixels: int = 512) -> rdo.RegionCosts:
    """Costs of regions in one row: distortion[level][region], rate[level][region]."""
    d, r = (torch.tensor(v, dtype=torch.float64)[:, None, :] for v in (distortion, rate))
    return rdo.RegionCosts(d, r, pixels)


def test_region_rate_is_the_constant_per_level() -> None:
    r = rdo.region_rate((2, 3))
    assert r.shape == (3, 2, 3)
    assert r[:, 1, 2].tolist() == list(rdo.REGION_BITS)


@pytest.mark.parametrize("scale", [rdo.PSNR_SCALE, rdo.STRUCTURAL_SCALE])
def test_slope_falls_with_quality(scale: rdo.QualityScale) -> None:
    slopes = [scale.slope(q) for q in (0, 10, 50, 90, 100)]
    assert math.isinf(slopes[0]) and slopes[-1] == 0
    assert slopes[1] > slopes[2] == scale.mid > slopes[3] > slopes[4]


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
    c = costs([[1e6, 100.0], [2e5, 100.0], [1e3, 100.0]], [[8, 8], [30, 30], [70, 70]])
    assert rdo.choose_levels(c, 0).tolist() == [[0, 0]]
    assert rdo.choose_levels(c, 100).tolist() == [[2, 0]]  # ties go to the cheaper level
    mid = rdo.choose_levels(c, 50)[0]
    assert mid[1] == 0 and mid[0] > 0


def test_cheaper_region_gets_the_finer_level() -> None:
    # same distortions, but region 1's fine codes cost the prior far fewer bits
    c = costs([[5e4, 5e4], [1e4, 1e4]], [[10, 10], [200, 40]])
    lam = 300.0
    assert rdo.levels_at(c, lam).tolist() == [[0, 1]]


def test_map_depends_on_relative_error_only() -> None:
    # PSNR falls with log error: an image with every error 10x larger gets the same map
    c = costs([[4e5, 9e4, 3e4, 2e3], [1e5, 3e4, 2e4, 1e3], [2e4, 1e4, 1e4, 9e2]], [[9] * 4, [30] * 4, [70] * 4])
    c10 = rdo.RegionCosts(c.distortion * 10, c.rate, c.pixels)
    for q in (20, 50, 80):
        assert torch.equal(rdo.choose_levels(c, q), rdo.choose_levels(c10, q))
        assert rdo.multiplier(c10, q) == pytest.approx(10 * rdo.multiplier(c, q))
    assert len(set(rdo.choose_levels(c, 50)[0].tolist())) > 1  # a mixed map, so the check says something


def test_rd_map_has_least_lagrangian_cost_among_maps_with_its_level_counts() -> None:
    img = synthetic_image(128, 96, seed=3)
    m = load_model()
    a = analyze(m, image_to_tensor(img)[0], tune="psnr")
    assert a.costs is not None
    rd, _, _ = levels_for_quality(m, a, 60)
    n = rd.numel()
    shares = [torch.tensor([(rd == lv).sum().item() / n]) for lv in (2, 1)]
    gate = rank_levels(a.score[None], *shares)[0]  # the gate's ranking with the same counts
    assert all((gate == lv).sum() == (rd == lv).sum() for lv in range(3))
    assert 0 < (rd == 0).sum() < n  # a mixed map, so the comparison says something
    lam = rdo.multiplier(a.costs, 60)
    cost = lambda lv: (a.costs.distortion + lam * a.costs.rate).gather(0, lv[None]).sum().item()  # noqa: E731
    assert cost(rd) <= cost(gate)


def test_tune_psnr_codes_the_rd_map() -> None:
    img = synthetic_image(160, 128, seed=7)
    m = load_model()
    x = image_to_tensor(img)[0]
    assert analyze(m, x).costs is not None  # every tune measures
    rd_map = levels_for_quality(m, analyze(m, x, tune="psnr"), 60)[0]
    gate_map = levels_for_quality(m, analyze(m, x), 60)[0]
    assert not torch.equal(rd_map, gate_map)
    for tune, expected in (("psnr", rd_map), ("ssim", gate_map)):
        _, tokens = decode_tokens(dqcodec.encode(img, quality=60, tune=tune, scale=1.0))
        assert torch.equal(tokens.levels[0], expected)
    with pytest.raises(DQCError, match="unknown tune"):
        dqcodec.encode(img, tune="vmaf")


def test_ranked_levels_keep_the_ranking_at_the_counts_of_least_cost() -> None:
    gen = torch.Generator().manual_seed(5)
    d = torch.rand(3, 4, 6, generator=gen, dtype=torch.float64).sort(0, descending=True).values * 1e4
    c = rdo.RegionCosts(d, rdo.region_rate((4, 6)), 24 * 256)
    score = torch.rand(4, 6, generator=gen)
    lam = 60.0
    levels = rdo.ranked_levels(c, score, lam)
    for finer in (1, 2):  # every region at a finer level outranks every region below it
        if (levels >= finer).any() and (levels < finer).any():
            assert score[levels >= finer].min() > score[levels < finer].max()
    cost = lambda lv: (d + lam * c.rate).gather(0, lv[None]).sum().item()  # noqa: E731
    n = score.numel()
    best = min(
        cost(rank_levels(score[None], torch.tensor([fine / n]), torch.tensor([(up - fine) / n]))[0])
        for up in range(n + 1)
        for fine in range(up + 1)
    )
    assert cost(levels) == pytest.approx(best)
    assert len(set(levels.flatten().tolist())) > 1  # a mixed map, so the check says something


def test_default_tune_shares_follow_the_content() -> None:
    m = load_model()
    busy = synthetic_image(192, 128, seed=11)
    half = np.asarray(busy).copy()
    half[:, :96] = 120  # the left half flat
    coarse = {}
    for name, img in (("busy", busy), ("half", Image.fromarray(half))):
        levels = levels_for_quality(m, analyze(m, image_to_tensor(img)[0]), 50)[0]
        coarse[name] = levels == 0
    assert coarse["half"][:, :6].all()  # the flat regions are coarse
    assert coarse["half"][:, 6:].float().mean() < 1
    assert coarse["half"].float().mean() > coarse["busy"].float().mean() + 0.2  # shares differ by image


def test_more_quality_never_fewer_bits() -> None:
    img = synthetic_image(160, 128, seed=2)
    m = load_model()
    for tune in ("ssim", "psnr"):
        a = analyze(m, image_to_tensor(img)[0], tune=tune)
        bits = [model_bits(levels_for_quality(m, a, q)[0]) for q in range(0, 101, 5)]
        assert bits == sorted(bits), tune
        assert bits[0] < bits[-1]


def test_blend_moves_the_highest_scoring_differing_regions_first() -> None:
    from dqcodec.encoder.ratecontrol import blend

    low = torch.tensor([[0, 1, 1, 0]])
    high = torch.tensor([[2, 1, 2, 1]])
    score = torch.tensor([[0.1, 9.0, 0.5, 0.3]])
    assert torch.equal(blend(low, high, score, 0), low)
    assert blend(low, high, score, 1).tolist() == [[0, 1, 2, 0]]  # region 2 scores highest of those that differ
    assert blend(low, high, score, 2).tolist() == [[0, 1, 2, 1]]
    assert torch.equal(blend(low, high, score, 3), high)


def test_rate_model_learns_the_bits_of_a_coded_map() -> None:
    from skimage import data

    from dqcodec.encoder.ratemodel import RateModel, predicted_bits
    from dqcodec.format.coding import encode_tiles, token_bits
    from dqcodec.format.tokens import Schedule

    m = load_model("dq")
    a = analyze(m, image_to_tensor(Image.fromarray(data.astronaut()[::2, ::2]))[0])
    levels = levels_for_quality(m, a, 50)[0]
    assert len(set(levels.flatten().tolist())) == 3
    measured = torch.zeros(levels.shape, dtype=torch.float64)
    tiles = encode_tiles(m.prior, levels, a.idx, Schedule(), region_bits=measured)
    exact = token_bits(m.prior, levels, a.idx, Schedule())
    assert float(measured.sum()) == pytest.approx(exact, rel=1e-9)
    assert exact <= 8 * sum(len(t.data) for t in tiles) <= exact + 64 * len(tiles)
    rates = RateModel(predicted_bits(a.idx, a.score))
    first = rates.bits(levels)
    assert first == pytest.approx(exact, rel=0.15)  # predicted before any coding
    rates.observe(levels, measured)
    assert rates.bits(levels) == pytest.approx(exact, rel=1e-9)  # measured once coded
    other = levels_for_quality(m, a, 60)[0]
    assert rates.bits(other) > rates.bits(levels)


def test_estimated_distortion_follows_the_measured_one() -> None:
    from skimage import data

    m = load_model()
    x = image_to_tensor(Image.fromarray(data.astronaut()[::2, ::2]))[0]
    got = {d: analyze(m, x, tune="psnr", distortion=d).costs for d in ("measured", "estimated")}
    measured, estimated = (c.distortion for c in got.values())  # type: ignore[union-attr]
    # regions and levels in the same order as decoding puts them
    assert np.corrcoef(torch.log1p(measured).flatten(), torch.log1p(estimated).flatten())[0, 1] > 0.9
    # each level's total, which sets lambda and the default tune's normalisation, within 25%
    assert (estimated.sum((1, 2)) / measured.sum((1, 2)) - 1).abs().max() < 0.25
    # the default tune's map from the estimate costs, under the measured distortions, within 3% of
    # the map from the measurement
    a = {d: analyze(m, x, distortion=d) for d in ("measured", "estimated")}
    truth = a["measured"].costs
    assert truth is not None
    lam = rdo.multiplier(truth, 50, rdo.STRUCTURAL_SCALE)
    cost = lambda lv: (truth.distortion + lam * truth.rate).gather(0, lv[None]).sum().item()  # noqa: E731
    maps = {d: levels_for_quality(m, a[d], 50)[0] for d in a}
    assert cost(maps["measured"]) <= cost(maps["estimated"]) <= 1.03 * cost(maps["measured"])
    assert len(set(maps["estimated"].flatten().tolist())) == 3  # a mixed map, so the check says something


def test_default_tune_estimates_and_tune_psnr_measures_by_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    from dqcodec.encoder import ratecontrol

    img = synthetic_image(96, 64, seed=1)
    decodes = []
    real = ratecontrol.decode_every_level
    monkeypatch.setattr(ratecontrol, "decode_every_level", lambda *a, **k: decodes.append(1) or real(*a, **k))
    dqcodec.encode(img)
    dqcodec.encode(img, target_bpp=0.5)
    assert decodes == []
    dqcodec.encode(img, distortion="measured")
    dqcodec.encode(img, tune="psnr")
    assert decodes == [1, 1]
    dqcodec.encode(img, tune="psnr", distortion="estimated")
    assert decodes == [1, 1]
    with pytest.raises(DQCError, match="unknown distortion"):
        dqcodec.encode(img, distortion="guessed")
    assert distortion_estimator("vqgan") is None  # a fixed grid needs no distortions
