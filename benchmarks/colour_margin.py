"""What the colour correction's block-mean bound costs along `-q`, on BSDS500 test images (never
Kodak): `colour_fit.MEAN_MARGIN`, the net gain in dB the bound may give up, against leaving it
out (margin 0: the bound only where it is free) and keeping it at any price (inf, dqc 0.4.0).

    python -m benchmarks.colour_margin [--images 12] [--margins 0,0.1,inf] [--qualities 10,20,...,70]

Each image is coded with `dqcodec.encode` at the default effort at each -q, once per margin, and
decoded as `dqc decode` does. Reports, per margin, the mean rate and colour-chunk bytes at each
-q, the BD-rate against the first margin given (per image, then the mean), and at -q 50 the mean
and worst error of the 64x64 blocks' mean colour (`benchmarks.colour`'s measure).
Writes benchmarks/results/colour_margin.json.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import numpy as np
from PIL import Image

import dqcodec
from benchmarks.colour import chunk_bytes, mean_errors
from benchmarks.report import bd_rate
from dqcodec.compare.metrics import ALWAYS, measure_all
from dqcodec.encoder import colour_fit


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("../shared/data/train/bsds500/test"))
    ap.add_argument("--images", type=int, default=12)
    ap.add_argument("--margins", default="0,0.1,inf")
    ap.add_argument("--qualities", default="10,20,30,40,50,60,70")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = ap.parse_args()
    margins = [float(m) for m in args.margins.split(",")]
    qualities = [float(q) for q in args.qualities.split(",")]
    files = sorted(args.data.glob("*.jpg"))[: args.images]
    rows = []
    for f in files:
        img = Image.open(f).convert("RGB")
        ref = np.asarray(img)
        for margin in margins:
            colour_fit.MEAN_MARGIN = margin
            for q in qualities:
                data = dqcodec.encode(img, quality=q)
                out = np.asarray(dqcodec.decode(data).convert("RGB"))
                size = chunk_bytes(data)
                colour_bytes = size["ccor"] + size["flat"]
                row = {"image": f.name, "margin": margin, "quality": q, "bpp": 8 * len(data) / (img.width * img.height)}
                row |= {"colour_bytes": colour_bytes} | measure_all(list(ALWAYS), ref, out)
                if q == 50:
                    errors = mean_errors(ref, out)
                    row |= {"block_mean_error": float(errors.mean()), "block_mean_worst": float(errors.max())}
                rows.append(row)
        print(f.name, flush=True)

    summary = {}
    for margin in margins:
        sel = [r for r in rows if r["margin"] == margin]
        entry: dict = {
            "bpp": {f"{q:g}": float(np.mean([r["bpp"] for r in sel if r["quality"] == q])) for q in qualities},
            "colour_bytes": {
                f"{q:g}": float(np.mean([r["colour_bytes"] for r in sel if r["quality"] == q])) for q in qualities
            },  # fmt: skip
        }
        at50 = [r for r in sel if r["quality"] == 50]
        if at50:
            entry["q50_block_mean_error"] = float(np.mean([r["block_mean_error"] for r in at50]))
            entry["q50_block_mean_worst"] = float(max(r["block_mean_worst"] for r in at50))
        anchor = [r for r in rows if r["margin"] == margins[0]]
        entry[f"bd_rate_vs_margin_{margins[0]:g}"] = {
            k: float(np.mean([v for v in (bd_rate([r for r in sel if r["image"] == f.name],
                                                  [r for r in anchor if r["image"] == f.name], k) for f in files)
                              if v is not None]))
            for k in ALWAYS
        }  # fmt: skip
        summary[f"{margin:g}"] = entry
        print(f"margin {margin:g}: {json.dumps(entry)}", flush=True)
    meta = {"machine": platform.platform(), "images": [f.name for f in files], "qualities": qualities,
            "effort": "default", "bd_rate": "per image (bd_rate over the qualities), then the mean"}  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "colour_margin.json").write_text(json.dumps({"meta": meta, "summary": summary, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
