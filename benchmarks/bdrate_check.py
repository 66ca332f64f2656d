"""Cross-check of the `bjontegaard` package's BD-rate, which `dqc compare` uses, against the
BD-rate benchmarks/report.py computed until now (piecewise-linear interpolation of log rate over
the overlap, on each curve's Pareto front), on the Kodak means of benchmarks/results/kodak_rd.json.

    python -m benchmarks.bdrate_check      # -> benchmarks/results/bdrate_check.{json,md}
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from benchmarks.report import ANCHORS, OLD_DEFAULT, TESTS, write_results
from dqcodec.compare.report import bd_rate as library_bd_rate
from dqcodec.compare.report import pareto_front

RESULTS = Path("benchmarks/results")


def linear_bd_rate(test: list[dict], anchor: list[dict], metric: str) -> float | None:
    """The formula report.py used: log rate interpolated linearly in quality, averaged over the overlap."""

    def curve(points: list[dict]) -> tuple[np.ndarray, np.ndarray]:
        front = pareto_front(points, metric)
        return np.array([p[metric] for p in front]), np.log(np.array([p["bpp"] for p in front]))

    qt, rt = curve(test)
    qa, ra = curve(anchor)
    lo, hi = max(qt.min(), qa.min()), min(qt.max(), qa.max())
    if hi <= lo:
        return None
    grid = np.linspace(lo, hi, 200)
    return float((np.exp((np.interp(grid, qt, rt) - np.interp(grid, qa, ra)).mean()) - 1) * 100)


def main() -> None:
    doc = json.loads((RESULTS / "kodak_rd.json").read_text())
    data, metrics = doc["mean"], doc["meta"]["metrics"]
    data[OLD_DEFAULT] = [e for e in data["dq"] if e.get("scale", 1.0) == 1]
    rows, diffs = [], []
    for test in (t for t in TESTS if t in data):
        for anchor in (a for a in (*TESTS, *ANCHORS) if a in data and a != test):
            for metric in metrics:
                own, lib = (
                    linear_bd_rate(data[test], data[anchor], metric),
                    library_bd_rate(data[test], data[anchor], metric),
                )
                rows.append({"test": test, "anchor": anchor, "metric": metric, "linear": own, "bjontegaard_pchip": lib})
                if own is not None and lib is not None:
                    diffs.append(abs(own - lib))
    summary = {
        "pairs": len(rows),
        "both_defined": len(diffs),
        "only_one_defined": sum((r["linear"] is None) != (r["bjontegaard_pchip"] is None) for r in rows),
        "abs_difference_points": {
            "median": float(np.median(diffs)),
            "p95": float(np.percentile(diffs, 95)),
            "max": float(np.max(diffs)),
        },  # fmt: skip
    }
    spread = summary["abs_difference_points"]
    table = [
        "BD-rate on Kodak's mean curves (kodak_rd.json): report.py's piecewise-linear formula against the",
        "bjontegaard package (pchip), both on each curve's Pareto front. Differences in percentage points.",
        "",
        f"{summary['both_defined']} pairs x measures; |difference| median {spread['median']:.2f},"
        f" 95th percentile {spread['p95']:.2f}, max {spread['max']:.2f}.",
        "",
        "| test | anchor | measure | linear | bjontegaard pchip |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        cells = ["" if r[k] is None else f"{r[k]:+.1f}%" for k in ("linear", "bjontegaard_pchip")]
        table.append(f"| {r['test']} | {r['anchor']} | {r['metric']} | {cells[0]} | {cells[1]} |")
    write_results(RESULTS / "bdrate_check", summary, rows, table)


if __name__ == "__main__":
    main()
