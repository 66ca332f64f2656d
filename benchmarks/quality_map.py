"""Where each scale's rate-distortion curve is best, on BSDS500 test images (never Kodak): the
data behind `-q`'s path across scales (dqcodec/encoder/qualitymap.py) and `--bpp`'s scale bands.

    python -m benchmarks.quality_map [--images 24] [--scales 0.5,0.71,1,1.5,2] [--stem quality_map]

For each image, tune, scale and within-scale quality (`--internal`), the map is chosen, coded
and decoded as `dqcodec.encode` does at effort 0; reports the mean bpp, PSNR, MS-SSIM and
SSIMULACRA2 of every (scale, quality), and for each scale the rates where it is the best of all
scales at equal rate (its PSNR and SSIMULACRA2 over the others' interpolated curves).
Writes benchmarks/results/<stem>.json.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import numpy as np
from PIL import Image

from dqcodec.compare.metrics import ALWAYS, measure_all
from dqcodec.decoding import reconstruct
from dqcodec.encoder.ratecontrol import analyze, coded_size, levels_for_quality
from dqcodec.encoding import image_to_tensor, write_tokens
from dqcodec.models.dqvae import Tokens
from dqcodec.models.loading import load_model
from dqcodec.models.transform import resample_picture

INTERNAL = (0, 25, 50, 75, 100)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("../shared/data/train/bsds500/test"))
    ap.add_argument("--images", type=int, default=24)
    ap.add_argument("--skip", type=int, default=100, help="start at this image (others than effort.py's)")
    ap.add_argument("--scales", default="0.5,0.71,1,1.5,2")
    ap.add_argument("--internal", default=",".join(str(q) for q in INTERNAL))
    ap.add_argument("--tunes", default="ssim,psnr")
    ap.add_argument("--model", default="dq")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    ap.add_argument("--stem", default="quality_map")
    args = ap.parse_args()
    metric_names = list(ALWAYS)
    m = load_model(args.model)
    files = sorted(args.data.glob("*.jpg"))[args.skip : args.skip + args.images]
    scales = [float(s) for s in args.scales.split(",")]
    internal = [float(q) for q in args.internal.split(",")]
    tunes = args.tunes.split(",") if not m.fixed_grid else ["ssim"]
    rows = []
    for f in files:
        img = Image.open(f).convert("RGB")
        x, _ = image_to_tensor(img)
        ref = np.asarray(img)
        for scale in scales:
            coded = coded_size(*img.size, scale)
            picture = resample_picture(x, *coded)
            for tune in tunes:
                a = analyze(m, picture, tune=tune)
                for q in internal:
                    levels = levels_for_quality(m, a, q)[0]
                    data = write_tokens(m, levels, a.idx, *img.size, coded=coded)
                    tokens = Tokens(levels[None], tuple(i[None] for i in a.idx))  # type: ignore[arg-type]
                    out = reconstruct(tokens, *img.size, m.name, coded=coded)
                    row = {"image": f.name, "tune": tune, "scale": scale, "quality": q}
                    row |= {"bpp": 8 * len(data) / (img.width * img.height)}
                    rows.append(row | measure_all(metric_names, ref, out))
        print(f.name, "done", flush=True)

    mean: dict[str, list[dict]] = {}
    for tune in tunes:
        for scale in scales:
            for q in internal:
                sel = [r for r in rows if r["tune"] == tune and r["scale"] == scale and r["quality"] == q]
                entry = {k: float(np.mean([r[k] for r in sel])) for k in ["bpp", *metric_names]}
                mean.setdefault(tune, []).append({"scale": scale, "quality": q, **entry})
    best = {tune: {metric: best_scale_by_rate(mean[tune], scales, metric) for metric in metric_names} for tune in tunes}
    result = {
        "meta": {
            "machine": platform.platform(),
            "images": [f.name for f in files],
            "model": args.model,
            "effort": 0,
        },  # fmt: skip
        "mean": mean,
        "best_scale_by_rate": best,
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.stem}.json").write_text(json.dumps(result, indent=1))
    for tune in tunes:
        for e in mean[tune]:
            print(f"{tune} x{e['scale']:<4} q{e['quality']:<5g} bpp {e['bpp']:.4f} "
                  + " ".join(f"{k} {e[k]:.3f}" for k in metric_names))  # fmt: skip
        print(tune, json.dumps(best[tune]))
    path = suggested_path(mean["ssim"], scales, "ssimulacra2")
    result["suggested_path"] = path
    (args.out / f"{args.stem}.json").write_text(json.dumps(result, indent=1))
    print("suggested qualitymap.PATH:", json.dumps(path))


def suggested_path(entries: list[dict], scales: list[float], metric: str) -> list[list[float]]:
    """qualitymap.PATH from the mean curves: each scale codes from the rate where it overtakes the
    scale below to the rate where the next one overtakes it (each curve interpolated in log rate;
    a scale never best is left out), and each stretch gets a share of -q 0..100 in proportion to
    the log-rates it spans, so that -q is about linear in log rate."""
    curves = {}
    for s in scales:
        pts = sorted((e["bpp"], e[metric], e["quality"]) for e in entries if e["scale"] == s)
        curves[s] = (np.log([p[0] for p in pts]), np.array([p[1] for p in pts]), np.array([p[2] for p in pts]))
    grid = np.linspace(min(c[0].min() for c in curves.values()), max(c[0].max() for c in curves.values()), 400)
    best = []
    for r in grid:
        values = {s: float(np.interp(r, c[0], c[1])) for s, c in curves.items() if c[0].min() <= r <= c[0].max()}
        best.append(max(values, key=values.__getitem__))
    # stretches of the grid, in order of rate, each with the best scale; a scale's stretch must rise
    stretches: list[list] = []
    for r, s in zip(grid, best, strict=True):
        if stretches and stretches[-1][0] == s:
            stretches[-1][2] = r
        elif not stretches or s > stretches[-1][0]:
            stretches.append([s, r, r])
        else:
            stretches[-1][2] = r  # a lower scale again: keep the higher one (monotone in scale)
    total = grid[-1] - grid[0]
    path, q = [], 0.0
    for i, (s, lo, hi) in enumerate(stretches):
        rates, _, internal = curves[s]
        q_lo = 0.0 if i == 0 else float(np.interp(lo, rates, internal))
        q_hi = 100.0 if i == len(stretches) - 1 else float(np.interp(hi, rates, internal))
        q_end = 100.0 if i == len(stretches) - 1 else round(q + 100 * (hi - lo) / total)
        path += [[q, s, round(q_lo)], [q_end, s, round(q_hi)]]
        q = q_end
    return path


def best_scale_by_rate(entries: list[dict], scales: list[float], metric: str, points: int = 60) -> list[list[float]]:
    """[bpp, best scale at that rate] on a log grid of rates: the scale whose curve (interpolated
    in log rate) is highest there, among those that reach it."""
    curves = {}
    for s in scales:
        pts = sorted((e["bpp"], e[metric]) for e in entries if e["scale"] == s)
        curves[s] = (np.log([p[0] for p in pts]), np.array([p[1] for p in pts]))
    lo = min(c[0].min() for c in curves.values())
    hi = max(c[0].max() for c in curves.values())
    out = []
    for r in np.linspace(lo, hi, points):
        values = {s: float(np.interp(r, *c)) for s, c in curves.items() if c[0].min() <= r <= c[0].max()}
        out.append([float(np.exp(r)), max(values, key=values.__getitem__)])
    return out


if __name__ == "__main__":
    main()
