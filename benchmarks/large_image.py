"""Time and peak memory of dqc on one large image (a Kodak photo scaled up), on this CPU.

    python -m benchmarks.large_image [--size 4096x4096] [--quality 0]

Each step runs in a fresh subprocess so that its peak RSS is its own. Writes large_image.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
from pathlib import Path

WORKER = r"""
import json, resource, sys, time
from PIL import Image
import dqcodec
step, path, w, h, quality = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
t = time.perf_counter()
if step == "encode":
    img = Image.open(path).convert("RGB").resize((w, h), Image.Resampling.BICUBIC)
    t = time.perf_counter()
    data = dqcodec.encode(img, quality=quality)
    open(path + ".dqc", "wb").write(data)
    extra = {"bytes": len(data), "bpp": 8 * len(data) / (w * h)}
else:
    data = open(path + ".dqc", "rb").read()
    dqcodec.decode(data).load()
    extra = {}
seconds = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": seconds, "peak_rss_mb": peak, **extra}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--image", type=Path, default=Path("../shared/data/kodak/kodim05.png"))
    ap.add_argument("--size", default="4096x4096")
    ap.add_argument("--quality", type=float, default=0.0)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    work = Path("/tmp") / f"dqc_large_{w}x{h}.png"
    work.write_bytes(args.image.read_bytes())
    result = {"size": [w, h], "megapixels": w * h / 1e6, "quality": args.quality, "machine": platform.platform()}
    try:
        for step in ("encode", "decode"):
            cmd = [sys.executable, "-c", WORKER, step, str(work), str(w), str(h), str(args.quality)]
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode:
                raise SystemExit(f"{step} failed:\n{r.stderr}")
            result[step] = json.loads(r.stdout.strip().splitlines()[-1])
            print(step, result[step], flush=True)
    finally:
        work.unlink(missing_ok=True)
        Path(str(work) + ".dqc").unlink(missing_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "large_image.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
