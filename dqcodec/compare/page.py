"""index.html of a comparison: one page that works offline, from files beside it (plots/, crops/).

At the top, the verdict: dqc's BD-rate against each codec per measure, coloured, with the number
of images where dqc needs fewer bits, and the mean RD plots. Below, each image: its crops at one
matched rate, side by side, where the codecs differ most, with what each file cost, and dqc's
granularity map over its crop at a click.
"""

from __future__ import annotations

import html
import math
from pathlib import Path

import numpy as np

from dqcodec.compare.metrics import LABELS, better
from dqcodec.compare.report import pareto_front
from dqcodec.fileio import write_atomic

STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em auto; max-width: 1400px; padding: 0 1em; color: #222; }
h1 { margin-bottom: 0.2em; } .meta { color: #555; }
table { border-collapse: collapse; margin: 0.6em 0; }
td, th { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.win { background: #c9efc9; } .lose { background: #f6cccc; } .even { background: #eee; }
.plots img, img.wide { max-width: 100%; border: 1px solid #ddd; }
.grid { display: flex; flex-wrap: wrap; gap: 10px; }
figure { margin: 0; width: 160px; } body.zoom figure { width: 320px; }
figure img { width: 160px; height: 160px; image-rendering: pixelated; border: 1px solid #999; display: block; }
body.zoom figure img { width: 320px; height: 320px; }
figcaption { font-size: 12px; } .image { border-top: 2px solid #ddd; margin-top: 1.2em; }
.controls { position: sticky; top: 0; background: #fff; padding: 6px 0; border-bottom: 1px solid #ddd; z-index: 1; }
.note { color: #a33; }
"""

SCRIPT = """
const mapBox = document.getElementById('show-map');
mapBox.addEventListener('change', () => {
  for (const img of document.querySelectorAll('img[data-map]')) {
    img.src = mapBox.checked ? img.dataset.map : img.dataset.plain;
  }
});
const zoomBox = document.getElementById('zoom');
zoomBox.addEventListener('change', () => document.body.classList.toggle('zoom', zoomBox.checked));
"""


def _cell(value: float | None) -> str:
    if value is None:
        return '<td class="even">no overlap</td>'
    kind = "win" if value < -1 else "lose" if value > 1 else "even"
    return f'<td class="{kind}">{value:+.1f}%</td>'


def verdict(summary: dict) -> str:
    metrics, codecs = summary["metrics"], list(summary["bd_rate"][summary["metrics"][0]]) if summary["bd_rate"] else []
    if not codecs:
        return "<p>No codec has results yet.</p>"
    test = next((c for c in codecs if c.startswith("dq")), codecs[0])
    judge = "ssimulacra2" if "ssimulacra2" in metrics else metrics[0]
    rows = [f"<tr><th>{html.escape(test)} against</th>" + "".join(f"<th>{LABELS[m]}</th>" for m in metrics)
            + f"<th>images where {html.escape(test)} needs fewer bits ({LABELS[judge]})</th></tr>"]  # fmt: skip
    per_image = summary["per_image_bd_rate"].get(judge, {})
    for anchor in codecs:
        if anchor == test:
            continue
        values = [v.get(anchor) for v in per_image.values() if v.get(anchor) is not None]
        wins = sum(v < 0 for v in values)
        cells = "".join(_cell(summary["bd_rate"][m][test].get(anchor)) for m in metrics)
        rows.append(f"<tr><td>{html.escape(anchor)}</td>{cells}<td>{wins} of {len(values)}</td></tr>")
    return (
        f"<p>BD-rate of <b>{html.escape(test)}</b>: the bits it needs for the same quality as each codec, over the"
        " mean curves. <span class='win'>Green</span>: fewer bits, <span class='lose'>red</span>: more.</p>"
        f"<table>{''.join(rows)}</table>"
    )


def score_at(points: list[dict], bpp: float, metric: str) -> float | None:
    """A mean curve's `metric` at `bpp` (linear in log rate along its Pareto front); None outside it."""
    front = pareto_front(points, metric)
    if len(front) < 2 or not front[0]["bpp"] * 0.97 <= bpp <= front[-1]["bpp"] * 1.03:
        return None
    rates = [math.log(p["bpp"]) for p in front]
    return float(np.interp(math.log(bpp), rates, [p[metric] for p in front]))


def by_rate(summary: dict) -> str:
    """At each rate dqc was compared at: every codec's score there, the best in bold, dqc's cell
    green where it is the best and red where it is not."""
    metrics = summary["metrics"]
    metric = "ssimulacra2" if "ssimulacra2" in metrics else metrics[0]
    curves = summary["mean_curves"]
    test = next((c for c in curves if c.startswith("dq")), None)
    if test is None:
        return ""
    others = [c for c in curves if c != test]
    head = f"<tr><th>bpp</th><th>{html.escape(test)}</th>" + "".join(f"<th>{html.escape(c)}</th>" for c in others)
    rows = [head + "</tr>"]
    for point in pareto_front(curves[test], metric):
        scores = {c: score_at(curves[c], point["bpp"], metric) for c in others}
        known = {c: v for c, v in scores.items() if v is not None}
        best = None
        for v in known.values():
            best = v if best is None or better(metric, v, best) else best
        wins = best is None or not better(metric, best, point[metric])
        cells = [f"<td class='{'win' if wins else 'lose'}'><b>{_score(metric, point[metric])}</b></td>" if wins
                 else f"<td class='lose'>{_score(metric, point[metric])}</td>"]  # fmt: skip
        for c in others:
            v = scores[c]
            low = bool(curves[c]) and point["bpp"] < min(q["bpp"] for q in curves[c])
            text = ("cannot go this low" if low else "not reached") if v is None else _score(metric, v)
            cells.append(f"<td><b>{text}</b></td>" if v is not None and v == best and not wins else f"<td>{text}</td>")
        rows.append(f"<tr><td>{point['bpp']:.3f}</td>{''.join(cells)}</tr>")
    return (
        f"<p>{LABELS[metric]} at each rate {html.escape(test)} was compared at (mean over the images; the other codecs"
        " interpolated at the same rate on their own curves): where it is the best and where it is not.</p>"
        f"<table>{''.join(rows)}</table>"
    )


def bd_tables(summary: dict) -> str:
    parts = []
    for m in summary["metrics"]:
        table = summary["bd_rate"].get(m, {})
        codecs = list(table)
        if not codecs:
            continue
        head = "<tr><th>codec vs</th>" + "".join(f"<th>{html.escape(c)}</th>" for c in codecs) + "</tr>"
        body = "".join(
            f"<tr><td>{html.escape(t)}</td>"
            + "".join("<td></td>" if a == t else _cell(table[t].get(a)) for a in codecs)
            + "</tr>"
            for t in codecs
        )  # fmt: skip
        parts.append(f"<h3>{LABELS[m]}</h3><table>{head}{body}</table>")
    return "".join(parts)


def _score(metric: str, value: float) -> str:
    return f"{value:.4f}" if metric == "ms_ssim" else f"{value:.2f}"


def image_section(result: dict, metrics: list[str], plot_exists: bool, crops_exist: bool) -> str:
    name = html.escape(result["image"])
    if result.get("error"):
        return f"<section class='image'><h3>{name}</h3><p class='note'>{html.escape(result['error'])}</p></section>"
    parts = [f"<section class='image' id='{name}'><h3>{name}</h3>"]
    crops = result.get("crops") or {}
    if crops.get("codecs") and crops_exist:
        x, y, w, h = crops["box"]
        parts.append(f"<p>Crops at about {crops['target_bpp']:.3f} bpp, the {w}x{h} region at ({x}, {y}) where the"
                     " codecs differ most.</p><div class='grid'>")  # fmt: skip
        parts.append(f"<figure><img src='crops/{html.escape(crops['original'])}' alt='original'>"
                     "<figcaption><b>original</b></figcaption></figure>")  # fmt: skip
        for entry in crops["codecs"]:
            src = "crops/" + html.escape(entry["crop"])
            extra = f" data-plain='{src}' data-map='crops/{html.escape(entry['map'])}'" if entry.get("map") else ""
            scores = ", ".join(f"{LABELS[m].split(' ')[0]} {_score(m, v)}" for m, v in entry["scores"].items())
            parts.append(f"<figure><img src='{src}'{extra} alt='{html.escape(entry['codec'])}'><figcaption>"
                         f"<b>{html.escape(entry['codec'])}</b> {entry['bytes']:,} bytes, {entry['bpp']:.3f} bpp"
                         f"<br>{scores}</figcaption></figure>")  # fmt: skip
        parts.append("</div>")
    elif crops.get("codecs"):
        parts.append("<p class='note'>This copy of the report has no crops (a rerun makes them).</p>")
    elif crops.get("error"):
        parts.append(f"<p class='note'>no crops: {html.escape(crops['error'])}</p>")
    failures = [row for row in result["rows"] if row.get("error")]
    for row in failures:
        parts.append(f"<p class='note'>{html.escape(row['codec'])}: {html.escape(row['error'])}</p>")
    if plot_exists:
        from dqcodec.compare.sweep import slug

        stem = html.escape(slug(Path(result["image"]).stem))
        parts.append(f"<details><summary>RD curves of {name}</summary><a href='plots/{stem}.svg'>"
                     f"<img src='plots/{stem}.png' alt='RD curves of {name}' class='wide'></a></details>")  # fmt: skip
    parts.append("</section>")
    return "".join(parts)


def write_page(report_dir: Path, summary: dict) -> None:
    from dqcodec.compare.sweep import slug

    metrics = summary["metrics"]
    state = "" if summary["finished"] else " <span class='note'>(partial: the run was stopped)</span>"
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in summary.get("notes", []))
    mean_plot = (
        "<div class='plots'><a href='plots/mean.svg'><img src='plots/mean.png' alt='mean RD curves'></a></div>"
        if (report_dir / "plots" / "mean.png").exists() else ""
    )  # fmt: skip
    sections = "".join(
        image_section(
            r,
            metrics,
            (report_dir / "plots" / f"{slug(Path(r['image']).stem)}.png").exists(),
            bool(r.get("crops")) and (report_dir / "crops" / str((r["crops"] or {}).get("original"))).exists(),
        )
        for r in summary["per_image"]
    )  # fmt: skip
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>dqc compare: {summary["images"]} images</title>
<style>{STYLE}</style></head><body>
<h1>dqc compare{state}</h1>
<p class="meta">{summary["images"]} images · codecs: {html.escape(", ".join(summary["codecs"]))} ·
measures: {html.escape(", ".join(LABELS[m] for m in metrics))} · {html.escape(summary["rates"])} ·
{html.escape(summary["made_by"])} · <a href="results.csv">results.csv</a> · <a href="summary.json">summary.json</a></p>
{f'<ul class="note">{notes}</ul>' if notes else ""}
<h2>Where it wins and where it loses</h2>
{verdict(summary)}
{by_rate(summary)}
{mean_plot}
<details><summary>BD-rate of every codec against every other</summary>{bd_tables(summary)}</details>
<h2>Each image</h2>
<div class="controls"><label><input type="checkbox" id="show-map"> show dqc's granularity map on its crops
(blue: 4 codes a region, red: 16)</label> &nbsp; <label><input type="checkbox" id="zoom"> 2x</label></div>
{sections}
<script>{SCRIPT}</script>
</body></html>
"""
    write_atomic(report_dir / "index.html", lambda f: f.write(page.encode()))
