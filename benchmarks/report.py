"""Tables, BD-rates and an RD plot from benchmarks/results/kodak_rd.json.

    python -m benchmarks.report [--results benchmarks/results]

BD-rate: mean difference of log-rate over the overlapping quality range, with the rate of each
curve interpolated piecewise-linearly in (quality metric, log rate) (works with 3-point curves).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def bd_rate(test: list[dict], anchor: list[dict], metric: str = "psnr") -> float | None:
    """Average bitrate difference of `test` vs `anchor` in percent at equal `metric` (negative = better)."""

    def curve(points: list[dict]) -> tuple[np.ndarray, np.ndarray]:
        pts = sorted(points, key=lambda p: p[metric])
        return np.array([p[metric] for p in pts]), np.log(np.array([p["bpp"] for p in pts]))

    qt, rt = curve(test)
    qa, ra = curve(anchor)
    lo, hi = max(qt.min(), qa.min()), min(qt.max(), qa.max())
    if hi <= lo:
        return None
    grid = np.linspace(lo, hi, 200)
    diff = np.interp(grid, qt, rt) - np.interp(grid, qa, ra)
    return float((np.exp(diff.mean()) - 1) * 100)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--results", type=Path, default=Path("benchmarks/results"))
    args = ap.parse_args()
    data = json.loads((args.results / "kodak_rd.json").read_text())["mean"]
    print("| codec | setting | bpp | PSNR dB | MS-SSIM | bpp without prior |")
    print("| --- | --- | --- | --- | --- | --- |")
    for codec, entries in data.items():
        for e in sorted(entries, key=lambda e: e["bpp"]):
            raw = f"{e['bpp_without_prior']:.4f}" if "bpp_without_prior" in e else ""
            print(f"| {codec} | q={e['quality']:g} | {e['bpp']:.4f} | {e['psnr']:.2f} | {e['ms_ssim']:.4f} | {raw} |")
    print()
    pairs = [("dq", "vqgan"), ("dq", "jpeg"), ("dq", "webp"), ("dq", "avif")]
    print("| BD-rate of dq vs | PSNR | MS-SSIM |")
    print("| --- | --- | --- |")
    for test, anchor in pairs:
        if test in data and anchor in data:
            cells = []
            for metric in ("psnr", "ms_ssim"):
                v = bd_rate(data[test], data[anchor], metric)
                cells.append("no overlap" if v is None else f"{v:+.1f}%")
            print(f"| {anchor} | {cells[0]} | {cells[1]} |")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, metric, label in ((axes[0], "psnr", "PSNR (dB)"), (axes[1], "ms_ssim", "MS-SSIM")):
        for codec, entries in data.items():
            pts = sorted(entries, key=lambda e: e["bpp"])
            ax.plot([p["bpp"] for p in pts], [p[metric] for p in pts], "o-", label=codec)
        ax.set_xscale("log")
        ax.set_xlabel("bits per pixel (whole file)")
        ax.set_ylabel(label)
        ax.set_xlim(0.015, 2)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle("Kodak (24 images), mean per setting")
    fig.tight_layout()
    fig.savefig(args.results / "kodak_rd.png", dpi=110)
    print(f"\nplot: {args.results / 'kodak_rd.png'}")


if __name__ == "__main__":
    main()
