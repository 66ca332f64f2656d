"""BD-rate and rate interpolation of the benchmark report."""

import pytest

from benchmarks.report import bd_rate, quality_at_rate

CURVE = [{"bpp": 0.1, "psnr": 25.0, "lpips": 0.4}, {"bpp": 0.2, "psnr": 27.0, "lpips": 0.3}]


def test_half_the_rate_at_equal_quality_is_minus_50_percent() -> None:
    half = [{**p, "bpp": p["bpp"] / 2} for p in CURVE]
    assert bd_rate(half, CURVE, "psnr") == pytest.approx(-50.0)
    assert bd_rate(CURVE, half, "psnr") == pytest.approx(100.0)
    assert bd_rate(half, CURVE, "lpips") == pytest.approx(-50.0)  # lower-is-better metric


def test_no_overlap_and_rates_outside_the_curve() -> None:
    better = [{**p, "psnr": p["psnr"] + 10} for p in CURVE]
    assert bd_rate(better, CURVE, "psnr") is None
    assert quality_at_rate(CURVE, 0.05, "psnr") is None
    assert quality_at_rate(CURVE, 2**-0.5 * 0.2, "psnr") == pytest.approx(26.0)


def test_dominated_settings_do_not_shape_the_curve() -> None:
    from benchmarks.report import pareto_front

    dominated = {"bpp": 0.15, "psnr": 24.0, "lpips": 0.5}
    assert pareto_front([*CURVE, dominated], "psnr") == CURVE
    assert pareto_front([*CURVE, dominated], "lpips") == CURVE
    assert bd_rate([*CURVE, dominated], CURVE, "psnr") == pytest.approx(0.0)
