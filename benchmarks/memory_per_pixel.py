"""Peak memory of `dqc encode` (-q 50) and `dqc decode` against the picture's size: the figures
behind the CLI's memory check (ENCODE_BYTES_PER_PIXEL, DECODE_BYTES_PER_PIXEL in cli/main.py),
which refuses a picture that cannot fit before any of its pixels is decoded.

    python -m benchmarks.memory_per_pixel [--sizes 1024,2048,4096]

Each run is a fresh `dqc` process; peak RSS is its maximum resident set (model loading
included). The picture is scikit-image's astronaut, resized. Writes memory_per_pixel.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data

PEAK_OF_CHILD = (
    "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, capture_output=True); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
)


def peak_of(args: list[str]) -> tuple[float, float]:
    """(peak RSS in MB, wall seconds) of one dqc run, through a fresh parent that reports its only child's peak."""
    t0 = time.perf_counter()
    cmd = [sys.executable, "-c", PEAK_OF_CHILD, sys.executable, "-m", "dqcodec.cli.main", *args]
    peak_kb = int(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    return peak_kb / 1024, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1024,2048,4096", help="square picture sides")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for side in sorted(int(s) for s in args.sizes.split(",")):
            png, dqc, back = (os.path.join(tmp, f"{side}.{ext}") for ext in ("png", "dqc", "out.png"))
            Image.fromarray(np.asarray(data.astronaut())).resize((side, side), Image.LANCZOS).save(png)
            encode_mb, encode_s = peak_of(["encode", "-q", "50", "--allow-large", png, "-o", dqc])
            decode_mb, decode_s = peak_of(["decode", "--allow-large", dqc, "-o", back])
            rows.append(
                {
                    "side": side,
                    "megapixels": side * side / 1e6,
                    "encode_peak_mb": encode_mb,
                    "encode_s": encode_s,
                    "decode_peak_mb": decode_mb,
                    "decode_s": decode_s,
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    slopes = {}
    for kind in ("encode", "decode"):
        mp = np.array([r["megapixels"] for r in rows])
        mb = np.array([r[f"{kind}_peak_mb"] for r in rows])
        slope = np.diff(mb) / np.diff(mp)  # MB per MP = bytes per pixel
        slopes[f"{kind}_bytes_per_pixel"] = [round(float(s), 1) for s in slope]
    result = {"rows": rows, **slopes, "note": "bytes per pixel between consecutive sizes (peak RSS growth)"}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "memory_per_pixel.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(slopes))


if __name__ == "__main__":
    main()
