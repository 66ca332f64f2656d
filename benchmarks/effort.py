"""`--effort` on BSDS500 test images (never Kodak): what each level buys and costs.

    python -m benchmarks.effort [--images 24] [--efforts 0,1,2,3,4,5] [--stem effort]

Each image is analysed once; for each tune, quality and effort the map is chosen, the tokens
refined (`codec.refined_map_and_tokens`, as `dqcodec.encode` does: the highest efforts choose the
map again), coded, and decoded as `dqc decode` does (without the colour correction: this measures
the tokens). Reports PSNR, MS-SSIM and SSIMULACRA2 against the file's bytes, the refinement's CPU
seconds, and the BD-rate of each effort against effort 0 (benchmarks.report.bd_rate).

`--variant NAME:STEPS:LR:MSW:RATEW[:START[:LR_END]]` adds a refinement setting to try (an
`effort.Effort` with that many steps and that learning rate, MS-SSIM weight, rate weight, start
("codes" or "latents", `refine.START`) and last step's rate), for choosing them.
Writes benchmarks/results/<stem>.json and .md.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from benchmarks.report import bd_rate
from dqcodec import encoding
from dqcodec.compare.metrics import Measures
from dqcodec.decoding import reconstruct
from dqcodec.encoder import effort as efforts
from dqcodec.encoder import refine
from dqcodec.encoder.ratecontrol import analyze, levels_for_quality
from dqcodec.encoding import image_to_tensor, refined_map_and_tokens, write_tokens
from dqcodec.models.dqvae import Tokens
from dqcodec.models.loading import load_model

QUALITIES = (15, 30, 50, 80)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("../shared/data/train/bsds500/test"))
    ap.add_argument("--images", type=int, default=24)
    ap.add_argument("--efforts", default=",".join(str(e) for e in range(efforts.MAX_EFFORT + 1)))
    ap.add_argument("--variant", action="append", default=[], help="NAME:STEPS:LR:MSW:RATEW")
    ap.add_argument("--tunes", default="ssim,psnr")
    ap.add_argument("--models", default="dq")
    ap.add_argument("--qualities", default=",".join(str(q) for q in QUALITIES))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    ap.add_argument("--stem", default="effort")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    settings: dict[str, tuple[int, tuple]] = {}  # name -> (effort index, (msw, ratew, start))
    for e in args.efforts.split(","):
        if e:
            settings[f"e{e}"] = (int(e), (refine.MS_SSIM_WEIGHT, refine.RATE_WEIGHT, refine.START))
    variants = list(efforts.EFFORTS)
    for v in args.variant:
        name, steps, lr, msw, ratew, *start = v.split(":")
        variants.append(efforts.Effort(int(steps), float(lr), float(start[1]) if len(start) > 1 else None))
        settings[name] = (len(variants) - 1, (float(msw), float(ratew), start[0] if start else refine.START))
    efforts.EFFORTS = encoding.EFFORTS = tuple(variants)

    metrics = Measures()
    files = sorted(args.data.glob("*.jpg"))[: args.images]
    qualities = [float(q) for q in args.qualities.split(",")]
    rows = []
    for f in files:
        img = Image.open(f).convert("RGB")
        x, _ = image_to_tensor(img)
        ref = np.asarray(img)
        for model in args.models.split(","):
            m = load_model(model)
            for tune in args.tunes.split(",") if not m.fixed_grid else ["ssim"]:
                a = analyze(m, x, tune=tune)
                for q in qualities:
                    levels = levels_for_quality(m, a, q)[0]
                    for name, (index, (msw, ratew, start)) in settings.items():
                        refine.MS_SSIM_WEIGHT, refine.RATE_WEIGHT, refine.START = msw, ratew, start
                        t0 = time.process_time()
                        chosen, idx = refined_map_and_tokens(m, a, x, img.size, levels, index, quality=q)
                        cpu = time.process_time() - t0
                        data = write_tokens(m, chosen, idx, *img.size)
                        tokens = Tokens(chosen[None], tuple(i[None] for i in idx))  # type: ignore[arg-type]
                        out = reconstruct(tokens, *img.size, model)
                        row = {"image": f.name, "model": model, "tune": tune, "quality": q, "setting": name}
                        row |= {"bpp": 8 * len(data) / (img.width * img.height), "refine_cpu_s": cpu}
                        rows.append(row | metrics(ref, out))
                print(f"{f.name} {model} done", flush=True)

    summary = {}
    table = ["| model | tune | setting | refine CPU-s / image | " + " | ".join(f"BD-rate {k}" for k in metrics.names)
             + " |", "|---|---|---|---|" + "---|" * len(metrics.names)]  # fmt: skip
    for model in args.models.split(","):
        for tune in dict.fromkeys(r["tune"] for r in rows if r["model"] == model):
            sel = [r for r in rows if r["model"] == model and r["tune"] == tune]
            anchor_name = next(iter(settings))
            for name in settings:
                bds = {}
                for metric in metrics.names:
                    per_image = [
                        bd_rate(
                            [r for r in sel if r["setting"] == name and r["image"] == im],
                            [r for r in sel if r["setting"] == anchor_name and r["image"] == im],
                            metric,
                        )
                        for im in dict.fromkeys(r["image"] for r in sel)
                    ]
                    found = [v for v in per_image if v is not None]
                    bds[metric] = float(np.mean(found)) if found else None
                cpu = float(np.mean([r["refine_cpu_s"] for r in sel if r["setting"] == name])) * len(qualities)
                summary[f"{model}/{tune}/{name}"] = {"bd_rate_vs_" + anchor_name: bds, "refine_cpu_s_per_image": cpu}
                cells = " | ".join("n/a" if bds[k] is None else f"{bds[k]:+.2f}%" for k in metrics.names)
                table.append(f"| {model} | {tune} | {name} | {cpu / len(qualities):.2f} | {cells} |")
    described = {
        k: [efforts.EFFORTS[i].steps, efforts.EFFORTS[i].lr, *extra, efforts.EFFORTS[i].lr_end]
        for k, (i, extra) in settings.items()
    }
    meta = {"machine": platform.platform(), "images": len(files), "qualities": qualities, "threads": args.threads,
            "settings (steps, lr, ms-ssim weight, rate weight, start, last lr)": described,
            "bd_rate": "per image (benchmarks.report.bd_rate over the qualities), then the mean"}  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.stem}.json").write_text(json.dumps({"meta": meta, "summary": summary, "rows": rows}, indent=1))
    (args.out / f"{args.stem}.md").write_text("\n".join(table) + "\n")
    print("\n".join(table))


if __name__ == "__main__":
    main()
