"""What the encoder's distortion estimate (`dqcodec.encoder.distortion`) costs in rate-distortion, and what
it saves in time, against measuring every region's distortion by decoding the picture at each level.

    python -m benchmarks.distortion_estimate [--data ../shared/data/kodak] [--images 24]
        [--qualities 0,15,30,50,65,80,90,100] [--stem distortion_estimate]

For every image and tune, the analysis runs both ways (`ratecontrol.analyze` with
distortion="measured" and "estimated"; CPU seconds of each, at this process's torch threads),
and each quality's map is coded for real: exact bits under the integer prior, the decoder's
picture, PSNR, MS-SSIM and SSIMULACRA2. Writes <stem>.json (per image, tune, quality) and
<stem>.md (BD-rate of the estimate against measuring, per tune and metric; the share of maps
that came out identical; analysis time) under --out.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from benchmarks.report import bd_rate, write_results
from dqcodec.compare.metrics import Measures
from dqcodec.encoder.ratecontrol import DISTORTIONS, TUNES, analyze, levels_for_quality
from dqcodec.encoding import image_to_tensor, write_tokens
from dqcodec.models.loading import load_model
from dqcodec.models.transform import synthesize


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("../shared/data/kodak"))
    ap.add_argument("--images", type=int, default=24)
    ap.add_argument("--qualities", default="0,15,30,50,65,80,90,100")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    ap.add_argument("--stem", default="distortion_estimate")
    args = ap.parse_args()
    files = sorted(p for p in args.data.iterdir() if p.suffix.lower() in (".png", ".jpg"))[: args.images]
    qualities = [float(q) for q in args.qualities.split(",")]
    m, metrics = load_model("dq"), Measures()
    rows: list[dict] = []
    t0 = time.time()
    for f in files:
        img = Image.open(f).convert("RGB")
        x, _ = image_to_tensor(img)
        ref = np.asarray(img)
        for tune in TUNES:
            analyses, seconds = {}, {}
            for costs in DISTORTIONS:
                c0 = time.process_time()
                analyses[costs] = analyze(m, x, tune=tune, distortion=costs)
                seconds[costs] = time.process_time() - c0
            coded: dict[bytes, dict] = {}  # maps coded already (the two ways often agree)
            for q in qualities:
                maps = {costs: levels_for_quality(m, a, q)[0] for costs, a in analyses.items()}
                for costs, levels in maps.items():
                    a = analyses[costs]
                    key = levels.to(torch.uint8).numpy().tobytes()
                    if key not in coded:
                        data = write_tokens(m, levels, a.idx, img.width, img.height)
                        out = synthesize(m.vae, levels, a.idx, img.width, img.height).permute(1, 2, 0).numpy()
                        coded[key] = {"bpp": 8 * len(data) / (img.width * img.height), **metrics(ref, out)}
                    same = torch.equal(levels, maps["measured"])
                    rows.append({"image": f.name, "tune": tune, "costs": costs, "quality": q,
                                 "analysis_cpu_s": seconds[costs], "same_map": same, **coded[key]})  # fmt: skip
        print(f"{f.name}: {time.time() - t0:.0f} s", flush=True)
    report(rows, qualities, metrics.names, args.out / args.stem)


def report(rows: list[dict], qualities: list[float], metric_names: list[str], out: Path) -> None:
    def curve(tune: str, costs: str) -> list[dict]:
        pts = []
        for q in qualities:
            sel = [r for r in rows if r["tune"] == tune and r["costs"] == costs and r["quality"] == q]
            pts.append({k: float(np.mean([r[k] for r in sel])) for k in ["bpp", *metric_names]})
        return pts

    head = " | ".join(f"BD-rate {n}" for n in metric_names)
    lines = [f"| tune | {head} | maps identical | analysis CPU-s, measured / estimated |",
             "| --- " * (len(metric_names) + 3) + "|"]  # fmt: skip
    summary = {}
    for tune in TUNES:
        anchor, test = curve(tune, "measured"), curve(tune, "estimated")
        bd = {n: bd_rate(test, anchor, n) for n in metric_names}
        est = [r for r in rows if r["tune"] == tune and r["costs"] == "estimated"]
        same = float(np.mean([r["same_map"] for r in est]))
        secs = {c: float(np.mean([r["analysis_cpu_s"] for r in rows if r["tune"] == tune and r["costs"] == c]))
                for c in DISTORTIONS}  # fmt: skip
        summary[tune] = {"bd_rate": bd, "same_map": same, "analysis_cpu_s": secs, "measured": anchor, "estimated": test}
        cells = " | ".join("-" if v is None else f"{v:+.2f}%" for v in bd.values())
        lines.append(f"| {tune} | {cells} | {same:.0%} | {secs['measured']:.2f} / {secs['estimated']:.2f} |")
    write_results(out, summary, rows, lines)


if __name__ == "__main__":
    main()
