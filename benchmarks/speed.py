"""Encode/decode speed and peak memory on Kodak: dqc, and Pillow's JPEG, WebP, AVIF and JPEG XL, on this CPU.

    python -m benchmarks.speed [--images 6]

Each codec setting runs in a fresh subprocess (so its peak RSS is its own, model loading
included); times are per image, after one warm-up image. Writes speed.json under --out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

WORKER = r"""
import io, json, resource, sys, time
from pathlib import Path
from PIL import Image
codec, quality, scale, files = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4:]
from benchmarks.codecs import LEARNED, pillow_encode
if codec in LEARNED:
    import dqcodec
    model, tune = LEARNED[codec]
    enc = lambda im: dqcodec.encode(im, quality=quality, model=model, tune=tune, scale=scale)
    dec = lambda b: dqcodec.decode(b, model=model)
else:
    enc = lambda im: pillow_encode(im, codec, int(quality))
    dec = lambda b: Image.open(io.BytesIO(b)).convert("RGB")
rows = []
imgs = [Image.open(f).convert("RGB") for f in files]
dec(enc(imgs[0]))  # warm-up: model loading, first-call costs
for f, im in zip(files, imgs):
    t0 = time.perf_counter(); blob = enc(im); t1 = time.perf_counter()
    out = dec(blob); out.load(); t2 = time.perf_counter()
    rows.append({"image": Path(f).name, "bytes": len(blob), "encode_s": t1 - t0, "decode_s": t2 - t1})
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"rows": rows, "peak_rss_mb": peak}))
"""

REPO = Path(__file__).resolve().parent.parent
SETTINGS = [  # codec, quality, scale (dqc's --scale)
    ("jpeg", 50, 1),
    ("webp", 20, 1),
    ("avif", 20, 1),
    ("jxl", 20, 1),
    ("dq", 0, 0.5),
    ("dq", 0, 1),
    ("dq", 50, 1),
    ("dq", 100, 1),
    ("dq", 100, 1.5),
    ("dq-psnr", 50, 1),
    ("vqgan", 50, 1),
]


def name(codec: str, quality: float, scale: float) -> str:
    return f"{codec} q={quality}" + ("" if scale == 1 else f" scale {scale}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kodak", type=Path, default=Path("../shared/data/kodak"))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    ap.add_argument("--images", type=int, default=6)
    args = ap.parse_args()
    files = [str(p) for p in sorted(args.kodak.glob("kodim*.png"))[: args.images]]
    results = {}
    # the worker imports benchmarks.codecs from this checkout
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    for codec, q, scale in SETTINGS:
        cmd = [sys.executable, "-c", WORKER, codec, str(q), str(scale), *files]
        r = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if r.returncode:
            raise SystemExit(f"{name(codec, q, scale)} failed:\n{r.stderr}")
        d = json.loads(r.stdout.strip().splitlines()[-1])
        n = len(d["rows"])
        results[name(codec, q, scale)] = {
            "encode_s": sum(x["encode_s"] for x in d["rows"]) / n,
            "decode_s": sum(x["decode_s"] for x in d["rows"]) / n,
            "bpp": sum(8 * x["bytes"] / (768 * 512) for x in d["rows"]) / n,
            "peak_rss_mb": d["peak_rss_mb"],
            "rows": d["rows"],
        }
    base = results["jpeg q=50"]
    print("| codec | bpp | encode s/image | decode s/image | x JPEG encode | x JPEG decode | peak RSS MB |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for label, e in results.items():
        print(
            f"| {label} | {e['bpp']:.4f} | {e['encode_s']:.3f} | {e['decode_s']:.3f} | "
            f"{e['encode_s'] / base['encode_s']:.0f} | {e['decode_s'] / base['decode_s']:.0f} | "
            f"{e['peak_rss_mb']:.0f} |"
        )
    meta = {"machine": platform.platform(), "cpus": os.cpu_count(), "images": len(files)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "speed.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1))


if __name__ == "__main__":
    main()
