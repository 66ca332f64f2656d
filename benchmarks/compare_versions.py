"""BD-rate of one codec of a `dqc compare` report against the same codec in an earlier commit's
report (or another codec of another report): what a change of dqc cost or bought, on the same images.

    python -m benchmarks.compare_versions --before b37774e [--report benchmarks/results/compare-kodak] [--codec dq]
    python -m benchmarks.compare_versions --before 38a6598 --before-report benchmarks/results/compare-kodak-effort \
        --before-codec dq:effort=0 --stem compare_versions_effort0

Each side's mean curve is the mean, over the images, of its k-th point by rate (the k-th rate
`dqc compare` asked for), as the report's own mean curves are; the BD-rate is the report's
(`bjontegaard`, pchip, on the Pareto fronts). Writes benchmarks/results/STEM.json.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import subprocess
from pathlib import Path

import numpy as np

from dqcodec.compare.report import bd_rate

MEASURES = ("psnr", "ms_ssim", "ssimulacra2", "butteraugli")


def mean_curve(text: str, codec: str) -> list[dict]:
    per_image: dict[str, list[dict]] = {}
    for row in csv.DictReader(io.StringIO(text)):
        if row["codec"] == codec and row["bpp"]:
            per_image.setdefault(row["image"], []).append(row)
    n = min(len(rows) for rows in per_image.values())
    curve = []
    for k in range(n):
        chosen = [sorted(rows, key=lambda r: float(r["bpp"]))[k] for rows in per_image.values()]
        point = {"bpp": float(np.mean([float(r["bpp"]) for r in chosen]))}
        for m in MEASURES:
            if all(r.get(m) for r in chosen):
                point[m] = float(np.mean([float(r[m]) for r in chosen]))
        curve.append(point)
    return curve


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", required=True, help="the commit whose report is the anchor")
    ap.add_argument("--report", type=Path, default=Path("benchmarks/results/compare-kodak"))
    ap.add_argument("--codec", default="dq")
    ap.add_argument("--before-report", type=Path, help="the anchor's report [default: --report]")
    ap.add_argument("--before-codec", help="the anchor's codec [default: --codec]")
    ap.add_argument("--stem", default="compare_versions")
    args = ap.parse_args()
    csv_path = args.report / "results.csv"
    before_csv = (args.before_report or args.report) / "results.csv"
    before = subprocess.run(["git", "show", f"{args.before}:{before_csv.as_posix()}"], capture_output=True, text=True,
                            check=True).stdout  # fmt: skip
    old, new = mean_curve(before, args.before_codec or args.codec), mean_curve(csv_path.read_text(), args.codec)
    result = {
        "report": str(args.report),
        "codec": args.codec,
        "before": args.before,
        "before_report": str(args.before_report or args.report),
        "before_codec": args.before_codec or args.codec,
        "bd_rate_percent": {m: bd_rate(new, old, m) for m in MEASURES if m in old[0] and m in new[0]},
        "curve_before": old,
        "curve_now": new,
    }
    out = Path(f"benchmarks/results/{args.stem}.json")
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["bd_rate_percent"], indent=1))


if __name__ == "__main__":
    main()
