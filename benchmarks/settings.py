"""What each setting reaches on Kodak, and where JPEG, WebP and AVIF sit at the same size: the
README's table for choosing `-q` and `--effort`.

    python -m benchmarks.settings [--kodak ../shared/data/kodak] [--images 24] [--only "-q 25,-q 75"]

Each setting codes every image through the public API (`dqcodec.encode`, then `decode`), as
`dqc encode` would; bpp counts the whole file. The other codecs are read from the committed
`dqc compare` report of the same images (`benchmarks/results/compare-kodak/results.csv`): each
one's PSNR and SSIMULACRA2 interpolated, per image, at dqc's rate (linearly in log rate between
its two nearest points); an image where dqc's file is smaller than the codec's smallest is
counted as "cannot go that low", and one above its largest gets that point (the report's
rates end at JPEG quality 75's size). Writes benchmarks/results/settings.{json,md}; with --only,
just those settings are measured again and the others kept from settings.json (its meta says which
rows which version of dqc measured).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import platform
import time
from pathlib import Path

import numpy as np
from PIL import Image

import dqcodec
from dqcodec.compare.metrics import Measures

SETTINGS = [  # (label, encode options)
    ("-q 0", {"quality": 0}),
    ("-q 25", {"quality": 25}),
    ("-q 50 (default)", {"quality": 50}),
    ("-q 75", {"quality": 75}),
    ("-q 100", {"quality": 100}),
    ("-q 50 -e 0", {"quality": 50, "effort": 0}),
    ("-q 50 -e 5", {"quality": 50, "effort": 5}),
]
OTHERS = ("jpeg", "webp", "avif")
MEASURES = ("psnr", "ssimulacra2")


def curves(report: Path) -> dict[tuple[str, str], list[tuple[float, dict[str, float]]]]:
    """(image, codec) -> its points (bpp, measures), by rate, from a compare report's results.csv."""
    out: dict[tuple[str, str], list[tuple[float, dict[str, float]]]] = {}
    with open(report / "results.csv", newline="") as f:
        for row in csv.DictReader(f):
            if row["codec"] in OTHERS and row["bpp"]:
                out.setdefault((row["image"], row["codec"]), []).append(
                    (float(row["bpp"]), {m: float(row[m]) for m in MEASURES})
                )
    return {k: sorted(v, key=lambda p: p[0]) for k, v in out.items()}


def at_rate(points: list[tuple[float, dict[str, float]]], bpp: float) -> dict[str, float] | None:
    """The measures interpolated at bpp (linear in log rate); None below the curve's first point,
    the last point's above its last (a codec at its best)."""
    if bpp < points[0][0]:
        return None
    for (r0, m0), (r1, m1) in zip(points, points[1:]):
        if r0 <= bpp <= r1:
            t = (math.log(bpp) - math.log(r0)) / (math.log(r1) - math.log(r0)) if r1 > r0 else 0.0
            return {m: m0[m] + t * (m1[m] - m0[m]) for m in MEASURES}
    return points[-1][1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kodak", type=Path, default=Path("../shared/data/kodak"))
    ap.add_argument("--report", type=Path, default=Path("benchmarks/results/compare-kodak"))
    ap.add_argument("--images", type=int, default=24)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    ap.add_argument("--only", help="measure only these settings (labels, comma-separated), keep the others")
    args = ap.parse_args()
    only = set(args.only.split(",")) if args.only else None
    earlier = json.loads((args.out / "settings.json").read_text()) if only else {"meta": {}, "settings": []}
    kept = {r["setting"]: r for r in earlier["settings"]}
    labels = [label.removesuffix(" (default)") for label, _ in SETTINGS]
    if only and not only <= set(labels):
        ap.error(f"--only: unknown settings {sorted(only - set(labels))}; known: {', '.join(labels)}")
    paths = sorted(args.kodak.glob("kodim*.png"))[: args.images]
    others = curves(args.report)
    measure = Measures(MEASURES)
    rows = []
    measured_by = earlier["meta"].get("measured_by") or {label: earlier["meta"].get("dqc") for label in kept}
    for label, options in SETTINGS:
        if only is not None and label.removesuffix(" (default)") not in only:
            rows.append(kept[label])
            continue
        measured_by[label] = dqcodec.__version__
        per_image = []
        for path in paths:
            picture = np.asarray(Image.open(path).convert("RGB"))
            t0 = time.process_time()
            data = dqcodec.encode(picture, **options)
            cpu = time.process_time() - t0
            decoded = np.asarray(dqcodec.decode(data).convert("RGB"))
            bpp = 8 * len(data) / (picture.shape[0] * picture.shape[1])
            entry = {"image": path.name, "bpp": bpp, "encode_cpu_s": cpu, **measure(picture, decoded)}
            for codec in OTHERS:
                entry[codec] = at_rate(others[path.name, codec], bpp) if (path.name, codec) in others else None
            per_image.append(entry)
        row = {"setting": label, "options": options, "images": len(per_image)}
        for key in ("bpp", "encode_cpu_s", *MEASURES):
            row[key] = float(np.mean([e[key] for e in per_image]))
        for codec in OTHERS:
            reached = [e[codec] for e in per_image if e[codec] is not None]
            row[codec] = {
                "images": len(reached),
                **({m: float(np.mean([r[m] for r in reached])) for m in MEASURES} if reached else {}),
            }
        row["per_image"] = per_image
        rows.append(row)
        print(label, {k: round(v, 3) for k, v in row.items() if isinstance(v, float)}, flush=True)
    meta = {"machine": platform.platform(), "dqc": dqcodec.__version__, "report": str(args.report),
            "measured_by": measured_by}  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "settings.json").write_text(json.dumps({"meta": meta, "settings": rows}, indent=1))
    (args.out / "settings.md").write_text(table(rows, len(paths)))
    print(table(rows, len(paths)))


def table(rows: list[dict], images: int) -> str:
    def other(r: dict, codec: str) -> str:
        o = r[codec]
        if not o["images"]:
            return "cannot go that low"
        shown = f"{o['psnr']:.1f} dB, {o['ssimulacra2']:.1f}"
        return shown if o["images"] == images else f"{shown} ({o['images']} of {images} images)"

    lines = [
        f"Kodak, means of {images} images. SSIMULACRA2: higher is better (90 is visually lossless, 30 poor).",
        "",
        "| setting | bpp | PSNR | SSIMULACRA2 | encode CPU s | JPEG at that size | WebP | AVIF |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| `{r['setting']}` | {r['bpp']:.3f} | {r['psnr']:.1f} dB | {r['ssimulacra2']:.1f} | "
            f"{r['encode_cpu_s']:.1f} | {other(r, 'jpeg')} | {other(r, 'webp')} | {other(r, 'avif')} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
