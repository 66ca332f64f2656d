"""Tables, BD-rates, the issue's target checks and RD plots from benchmarks/results/kodak_rd.json.

    python -m benchmarks.report [--results benchmarks/results]

These are the tables of the research runs of kodak_rd.json (fixed settings per codec, dqc at
several scales); `dqc compare` (benchmarks/results/compare-kodak/) is the comparison users see.
BD-rate is the one `dqc compare` computes (dqcodec.compare.report.bd_rate: the bjontegaard
package, pchip, on each curve's Pareto front); until 2026-12-05 this script interpolated log rate
piecewise-linearly instead (benchmarks/bdrate_check.py compares the two).
Negative = fewer bits than the anchor for the same quality. Curves are the means over the images
at each setting.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

from dqcodec.compare.report import bd_rate, pareto_front

LOWER_IS_BETTER = {"lpips"}
LABELS = {"psnr": "PSNR (dB)", "ms_ssim": "MS-SSIM", "ssimulacra2": "SSIMULACRA2", "lpips": "LPIPS"}
ANCHORS = ("dq-0.2-default", "dq-gate", "vqgan", "jpeg", "webp", "avif", "jxl")
TESTS = ("dq", "dq-psnr", "dq-default", "dq-psnr-default", "dq-e5", "vqgan-default")
OLD_DEFAULT = "dq-0.2-default"  # dqc 0.2's `dqc encode -q Q`: the dq rows at scale 1 (effort 0)


def write_results(out: Path, summary: dict, rows: list[dict], table: list[str]) -> None:
    """A benchmark's summary and rows to <out>.json, its Markdown table to <out>.md (and stdout)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"summary": summary, "rows": rows}, indent=1))
    out.with_suffix(".md").write_text("\n".join(table) + "\n")
    print("\n".join(table))


def quality_at_rate(points: list[dict], bpp: float, metric: str) -> float | None:
    """The anchor's `metric` at `bpp` (linear in log rate), None outside its range of rates."""
    pts = sorted(points, key=lambda p: p["bpp"])
    rates = np.log([p["bpp"] for p in pts])
    if not rates[0] <= np.log(bpp) <= rates[-1]:
        return None
    return float(np.interp(np.log(bpp), rates, [p[metric] for p in pts]))


def bd_cells(test: list[dict], anchor: list[dict], metrics: list[str]) -> str:
    """One BD-rate table row's cells, one per metric."""
    cells = []
    for metric in metrics:
        v = bd_rate(test, anchor, metric)
        cells.append("no overlap" if v is None else f"{v:+.1f}%")
    return " | ".join(cells)


def setting(e: dict) -> str:
    scale = e.get("scale", 1.0)
    return f"q={e['quality']:g}" + ("" if scale in (0, 1) else f" scale {scale:g}")  # 0: -q's own scale


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--results", type=Path, default=Path("benchmarks/results"))
    args = ap.parse_args()
    doc = json.loads((args.results / "kodak_rd.json").read_text())
    data, metrics = doc["mean"], doc["meta"].get("metrics", ["psnr", "ms_ssim"])
    if "dq" in data:
        data = {**data, OLD_DEFAULT: [e for e in data["dq"] if e.get("scale", 1.0) == 1]}
    lines: list[str] = []
    out = lines.append

    out("| codec | setting | bpp | " + " | ".join(LABELS[m] for m in metrics) + " | bpp without prior |")
    out("| --- " * (len(metrics) + 4) + "|")
    for codec, entries in data.items():
        for e in sorted(entries, key=lambda e: e["bpp"]):
            raw = f"{e['bpp_without_prior']:.4f}" if "bpp_without_prior" in e else ""
            scores = " | ".join(f"{e[m]:.4f}" if m in ("ms_ssim", "lpips") else f"{e[m]:.2f}" for m in metrics)
            out(f"| {codec} | {setting(e)} | {e['bpp']:.4f} | {scores} | {raw} |")
    out("")
    out("| BD-rate | vs | " + " | ".join(LABELS[m] for m in metrics) + " |")
    out("| --- " * (len(metrics) + 2) + "|")
    for test in (t for t in TESTS if t in data):
        for anchor in (a for a in (*TESTS, *ANCHORS) if a in data and a != test):
            out(f"| {test} | {anchor} | {bd_cells(data[test], data[anchor], metrics)} |")
    own_size = {c: [e for e in data[c] if e.get("scale", 1.0) == 1] for c in ("dq", "dq-psnr", "vqgan") if c in data}
    if "vqgan" in own_size and any(t in own_size for t in TESTS):
        out("")
        out("The models at the picture's own size (scale 1 settings only; no resampling for either):")
        out("")
        out("| BD-rate | vs | " + " | ".join(LABELS[m] for m in metrics) + " |")
        out("| --- " * (len(metrics) + 2) + "|")
        for test in (t for t in TESTS if t in own_size):
            out(f"| {test} | vqgan | {bd_cells(own_size[test], own_size['vqgan'], metrics)} |")
    for test in (t for t in TESTS if t in data and "jpeg" in data):
        out("")
        out(f"{test} against JPEG at {test}'s own rates up to 0.3 bpp (JPEG interpolated in log rate):")
        out("")
        out("| setting | bpp | PSNR dq / JPEG | MS-SSIM dq / JPEG |")
        out("| --- | --- | --- | --- |")
        for e in sorted(data[test], key=lambda e: e["bpp"]):
            if e["bpp"] > 0.3:
                continue
            cells = []
            for metric in ("psnr", "ms_ssim"):
                j = quality_at_rate(data["jpeg"], e["bpp"], metric)
                cells.append(f"{e[metric]:.4g} / " + ("JPEG cannot go this low" if j is None else f"{j:.4g}"))
            out(f"| {setting(e)} | {e['bpp']:.4f} | {cells[0]} | {cells[1]} |")
    shares = share_spread(args.results / "kodak_rd.csv", ("dq", "dq-gate", "dq-psnr"), quality=50.0)
    if shares:
        out("")
        out("Shares of coarse and fine regions across the images at the default quality (q=50, scale 1):")
        out("")
        out("| codec | bpp min-max | coarse min / median / max | fine min / median / max |")
        out("| --- | --- | --- | --- |")
        for codec, s in shares.items():
            spread = [" / ".join(f"{v:.2f}" for v in s[k]) for k in ("share_coarse", "share_fine")]
            out(f"| {codec} | {s['bpp'][0]:.3f}-{s['bpp'][2]:.3f} | {spread[0]} | {spread[1]} |")
    lowest = {c: min(e["bpp"] for e in entries) for c, entries in data.items()}
    out("")
    out("Lowest mean rate per codec: " + ", ".join(f"{c} {b:.4f}" for c, b in lowest.items()))
    text = "\n".join(lines)
    print(text)
    (args.results / "kodak_rd.md").write_text(text + "\n")
    plot(data, metrics, args.results / "kodak_rd.png")


def share_spread(csv_path: Path, codecs: tuple[str, ...], quality: float) -> dict[str, dict[str, list[float]]]:
    """Min, median and max over the images of bpp and the coarse and fine shares at a quality."""
    if not csv_path.exists():
        return {}
    with csv_path.open() as fh:
        rows = [r for r in csv.DictReader(fh) if float(r["quality"]) == quality and float(r.get("scale") or 1) == 1]
    spread = {}
    for codec in codecs:
        sel = [r for r in rows if r["codec"] == codec]
        if sel:
            spread[codec] = {
                k: [float(np.min(v)), float(np.median(v)), float(np.max(v))]
                for k in ("bpp", "share_coarse", "share_fine")
                for v in [[float(r[k]) for r in sel]]
            }
    return spread


def plot(data: dict, metrics: list[str], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, axes = plt.subplots(1, len(metrics), figsize=(6 * len(metrics), 4.8))
    for ax, metric in zip(np.atleast_1d(axes), metrics):
        for codec, entries in data.items():
            pts = pareto_front(entries, metric)
            style = "o-" if codec in ("dq", "vqgan", "dq-psnr") else "x--" if codec == "dq-gate" else ".-"
            ax.plot([p["bpp"] for p in pts], [p[metric] for p in pts], style, label=codec, ms=4)
        ax.set_xscale("log")
        ax.set_xlabel("bits per pixel (whole file)")
        ax.set_ylabel(LABELS[metric])
        ax.set_xlim(0.008, 2)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Kodak (24 images), mean per setting (Pareto front of each codec's settings)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(f"\nplot: {path}")


if __name__ == "__main__":
    main()
