"""How well and how fast `--bpp` reaches its target on Kodak: the achieved rate against the
target, and the time of the --bpp encode against a `-q` encode of the same rate (the quality
step just above the map it coded).

    python -m benchmarks.bpp_rate [--images 24] [--targets 0.05,0.1,0.2]

Both encodes run in this process one after the other (same machine load), default tune, the
scale of the target's band; times are CPU seconds of the process (both cores), and wall.
Writes bpp_rate.json under --out.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
from PIL import Image

import dqcodec
from dqcodec import encoding as codec
from dqcodec.encoder import ratecontrol
from dqcodec.format import bitstream


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kodak", type=Path, default=Path("../shared/data/kodak"))
    ap.add_argument("--images", type=int, default=24)
    ap.add_argument("--targets", default="0.05,0.1,0.2")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = ap.parse_args()
    targets = [float(t) for t in args.targets.split(",")]
    rows = []
    coded_passes = [0]
    encode_tiles = ratecontrol.encode_tiles

    def counting(*a, **k):  # noqa: ANN002, ANN003, ANN202
        coded_passes[0] += 1
        return encode_tiles(*a, **k)

    ratecontrol.encode_tiles = counting  # type: ignore[assignment]
    fits = []
    fit_rate = codec.fit_rate

    def recording(*a, **k):  # noqa: ANN002, ANN003, ANN202
        fits.append(fit_rate(*a, **k))
        return fits[-1]

    codec.fit_rate = recording  # type: ignore[assignment]
    dqcodec.encode(Image.new("RGB", (64, 64)), target_bpp=0.1)  # warm-up
    for f in sorted(args.kodak.glob("kodim*.png"))[: args.images]:
        img = Image.open(f).convert("RGB")
        pixels = img.width * img.height
        for target in targets:
            coded_passes[0] = 0
            t0, c0 = time.perf_counter(), time.process_time()
            data = dqcodec.encode(img, target_bpp=target)
            bpp_s, bpp_cpu = time.perf_counter() - t0, time.process_time() - c0
            passes = coded_passes[0]
            quality = fits[-1][2].quality
            c = bitstream.read(data)
            scale = c.coded_width / img.width if c.coded_size else 1.0
            # the -q encode of the same rate: the quality step above the one found, whose map holds
            # every region of the coded one (--bpp may blend two maps between quality steps)
            same_rate = min(100.0, quality + 100.0 / 2**ratecontrol.QUALITY_STEPS)
            t0, c0 = time.perf_counter(), time.process_time()
            q_data = dqcodec.encode(img, quality=same_rate, scale=scale)
            q_s, q_cpu = time.perf_counter() - t0, time.process_time() - c0
            bpp = 8 * len(data) / pixels
            row = {"image": f.name, "target": target, "bpp": bpp, "error": bpp / target - 1, "quality": quality}
            row["q_bpp"] = 8 * len(q_data) / pixels
            times = {"bpp_s": bpp_s, "q_s": q_s, "bpp_cpu_s": bpp_cpu, "q_cpu_s": q_cpu}
            rows.append({**row, "scale": scale, **times, "coded_passes": passes})
            print(f"{f.name} {target}: {bpp:.4f} bpp ({100 * (bpp / target - 1):+.1f}%), q {quality:.1f}, "
                  f"{bpp_cpu:.1f} CPU-s vs -q {q_cpu:.1f} ({passes} passes)", flush=True)  # fmt: skip
    summary = {}
    for target in targets:
        sel = [r for r in rows if r["target"] == target]
        err = np.array([r["error"] for r in sel])
        ratio = np.array([r["bpp_s"] / r["q_s"] for r in sel])
        cpu_ratio = np.array([r["bpp_cpu_s"] / r["q_cpu_s"] for r in sel])
        summary[str(target)] = {
            "mean_abs_error": float(np.abs(err).mean()),
            "max_over": float(err.max()),
            "mean_time_ratio": float(ratio.mean()),
            "max_time_ratio": float(ratio.max()),
            "mean_cpu_ratio": float(cpu_ratio.mean()),
            "max_cpu_ratio": float(cpu_ratio.max()),
            "mean_coded_passes": float(np.mean([r["coded_passes"] for r in sel])),
        }
        s = summary[str(target)]
        print(f"target {target}: mean |error| {100 * s['mean_abs_error']:.2f}%, max over {100 * s['max_over']:+.2f}%, "
              f"CPU time x{s['mean_cpu_ratio']:.2f} of -q (max x{s['max_cpu_ratio']:.2f}), "
              f"wall x{s['mean_time_ratio']:.2f}, {s['mean_coded_passes']:.2f} passes")  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {"machine": platform.platform(), "images": args.images}
    (args.out / "bpp_rate.json").write_text(json.dumps({"meta": meta, "summary": summary, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
