"""The files of a comparison's report: results.csv, summary.json, bd-rate.md and the RD plots.

BD-rate is the `bjontegaard` package's (piecewise cubic Hermite interpolation of log rate against
quality over the overlap of the two curves), on each curve's Pareto front: a setting that another
beats on both rate and quality is one an encoder choosing settings would not use, and the
interpolation needs quality to rise along the curve.
"""

from __future__ import annotations

import csv
import io
import json
import math
import warnings
from pathlib import Path

import numpy as np

from dqcodec.compare.metrics import LABELS, LOWER_IS_BETTER
from dqcodec.fileio import write_atomic

BD_METHOD = "pchip"
CSV_FIRST = ["image", "codec", "setting", "bytes", "bpp", "width", "height"]


def pareto_front(points: list[dict], metric: str) -> list[dict]:
    """The points no other beats on both rate and `metric`, by increasing rate."""
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    usable = [p for p in points if p.get(metric) is not None and math.isfinite(p[metric]) and p["bpp"] > 0]
    front: list[dict] = []
    for p in sorted(usable, key=lambda p: (p["bpp"], -sign * p[metric])):
        if not front or sign * p[metric] > sign * front[-1][metric]:
            front.append(p)
    return front


def bd_rate(test: list[dict], anchor: list[dict], metric: str) -> float | None:
    """Bits `test` needs against `anchor` for the same `metric`, in percent (negative: fewer);
    None where the curves share no range of quality."""
    import bjontegaard

    t, a = pareto_front(test, metric), pareto_front(anchor, metric)
    if len(t) < 2 or len(a) < 2:
        return None
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = bjontegaard.bd_rate(
            [p["bpp"] for p in a], [sign * p[metric] for p in a], [p["bpp"] for p in t], [sign * p[metric] for p in t],
            method=BD_METHOD, require_matching_points=False, min_overlap=0,
        )  # fmt: skip
    return None if not math.isfinite(value) else float(value)


def curves(results: list[dict], codecs: list[str], metrics: list[str]) -> dict[str, list[dict]]:
    """Each codec's mean curve: at each compared rate, the mean over the images of bpp and each
    measure of the setting chosen for that rate (images where the codec failed are left out of all)."""
    by_image = {}
    for r in results:
        if r.get("error"):
            continue
        rows = {(row["codec"], row.get("setting")): row for row in r["rows"] if not row.get("error")}
        by_image[r["image"]] = (r, rows)
    mean: dict[str, list[dict]] = {}
    for codec in codecs:
        usable = [
            (r, rows) for r, rows in by_image.values()
            if r["points"].get(codec) and all((codec, s) in rows for s in r["points"][codec])
        ]  # fmt: skip
        if not usable:
            continue
        n = min(len(r["points"][codec]) for r, _ in usable)
        points = []
        for k in range(n):
            chosen = [rows[codec, r["points"][codec][k]] for r, rows in usable]
            point = {"bpp": float(np.mean([row["bpp"] for row in chosen])), "images": len(chosen)}
            for m in metrics:
                values = [row[m] for row in chosen if row.get(m) is not None]
                if len(values) == len(chosen):
                    point[m] = float(np.mean(values))
            points.append(point)
        mean[codec] = points
    return mean


def image_points(result: dict, codec: str) -> list[dict]:
    return [row for row in result["rows"] if row["codec"] == codec and not row.get("error") and "bpp" in row]


def bd_matrix(mean: dict[str, list[dict]], metrics: list[str]) -> dict[str, dict[str, dict[str, float | None]]]:
    """metric -> test codec -> anchor codec -> BD-rate (%)."""
    return {
        m: {t: {a: bd_rate(mean[t], mean[a], m) for a in mean if a != t} for t in mean}
        for m in metrics
    }  # fmt: skip


def per_image_bd(results: list[dict], test: str, anchors: list[str], metric: str) -> dict[str, dict[str, float | None]]:
    """image -> anchor -> BD-rate of `test` against it on that image alone."""
    table = {}
    for r in results:
        if r.get("error"):
            continue
        mine = image_points(r, test)
        table[r["image"]] = {a: bd_rate(mine, image_points(r, a), metric) for a in anchors if a != test}
    return table


def write_csv(path: Path, results: list[dict]) -> None:
    rows = [row for r in results for row in r["rows"]]
    rows += [{"image": r["image"], "error": r["error"]} for r in results if r.get("error")]
    keys = list(dict.fromkeys([*CSV_FIRST, *(k for row in rows for k in row)]))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys)
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(path, lambda f: f.write(buf.getvalue().encode()))


def bd_markdown(matrix: dict, metrics: list[str]) -> str:
    lines = [
        "BD-rate: the bits the row's codec needs for the same quality as the column's, in percent",
        "(negative: fewer). Mean curves over the images; blank: the curves share no range of quality.",
        "",
    ]
    for m in metrics:
        codecs = list(matrix[m])
        lines += [f"## {LABELS[m]}", "", "| codec | " + " | ".join(codecs) + " |", "| --- " * (len(codecs) + 1) + "|"]
        for t in codecs:
            cells = ["" if a == t or matrix[m][t][a] is None else f"{matrix[m][t][a]:+.1f}%" for a in codecs]
            lines.append(f"| {t} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def plot_curves(curves_by_codec: dict[str, list[dict]], metrics: list[str], path_stem: Path, title: str) -> list[str]:
    """One figure of a subplot per measure, as PNG and SVG; the names of the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matplotlib.rcParams["svg.fonttype"] = "none"  # text as text: a third of the bytes of glyph paths

    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.6), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        for codec, points in curves_by_codec.items():
            front = pareto_front(points, metric)
            if not front:
                continue
            style = "o-" if codec.startswith("dq") else "s-" if codec.startswith("vqgan") else ".--"
            ax.plot([p["bpp"] for p in front], [p[metric] for p in front], style, label=codec, ms=4, lw=1.4)
        ax.set_xscale("log")
        ax.set_xlabel("bits per pixel (whole file)")
        ax.set_ylabel(LABELS[metric])
        if metric in LOWER_IS_BETTER:
            ax.invert_yaxis()
        ax.grid(True, which="major", alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    written = []
    for ext in ("png", "svg"):
        buf = io.BytesIO()
        fig.savefig(buf, format=ext, dpi=72)
        target = path_stem.with_suffix(f".{ext}")
        target.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(target, lambda f, b=buf: f.write(b.getvalue()))
        written.append(target.name)
    plt.close(fig)
    return written


def write_report(report_dir: Path, meta: dict, results: list[dict], finished: bool) -> dict:
    """Every file of the report from the results so far; the summary it wrote."""
    from dqcodec.compare.page import write_page

    metrics, codecs = meta["metrics"], meta["codecs"]
    write_csv(report_dir / "results.csv", results)
    mean = curves(results, codecs, metrics)
    matrix = bd_matrix(mean, metrics)
    first = next((c for c in codecs if c.startswith("dq")), codecs[0])
    summary = {
        **meta,
        "finished": finished,
        "images": len(results),
        "failed_images": [r["image"] for r in results if r.get("error")],
        "mean_curves": mean,
        "bd_rate": matrix,
        "bd_method": f"bjontegaard {BD_METHOD}, on each curve's Pareto front",
        "per_image_bd_rate": {m: per_image_bd(results, first, codecs, m) for m in metrics},
        "per_image": results,
    }
    text = json.dumps(summary, indent=1, default=float)
    write_atomic(report_dir / "summary.json", lambda f: f.write(text.encode()))
    md = bd_markdown(matrix, metrics)
    write_atomic(report_dir / "bd-rate.md", lambda f: f.write(md.encode()))
    if mean:
        plot_curves(mean, metrics, report_dir / "plots" / "mean", f"mean of {len(results)} images")
    write_page(report_dir, summary)
    return summary


def plot_image(report_dir: Path, result: dict, codecs: list[str], metrics: list[str]) -> None:
    """The RD curves of one image (plots/<image>.png and .svg)."""
    from dqcodec.compare.sweep import slug

    per = {c: sorted(image_points(result, c), key=lambda p: p["bpp"]) for c in codecs}
    if any(per.values()):
        stem = report_dir / "plots" / slug(Path(result["image"]).stem)
        plot_curves({c: p for c, p in per.items() if p}, metrics, stem, result["image"])
