"""Peak memory of `dqc encode --bpp X` against `dqc encode -q Q` of the same image, where Q and
the scale are those --bpp settles on (so both code the same picture at the same rate).

    python -m benchmarks.bpp_memory [--images 4] [--targets 0.05,0.1,0.2]

Every encode is a fresh `dqc` process whose peak RSS (model loading included) a parent reads
from RUSAGE_CHILDREN; the two runs of an image alternate, so they see the same machine load.
Writes bpp_memory.json under --out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from pathlib import Path

from PIL import Image

from benchmarks.memory_per_pixel import peak_of
from dqcodec.encoder.ratecontrol import DEFAULT_TUNE, fit_rate
from dqcodec.encoding import image_to_tensor
from dqcodec.format.tokens import Schedule
from dqcodec.models.loading import load_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kodak", type=Path, default=Path("../shared/data/kodak"))
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--targets", default="0.05,0.1,0.2")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = ap.parse_args()
    m = load_model("dq")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for f in sorted(args.kodak.glob("kodim*.png"))[: args.images]:
            x, _ = image_to_tensor(Image.open(f).convert("RGB"))
            for target in (float(t) for t in args.targets.split(",")):
                coded, _, fit = fit_rate(m, x, target, None, Schedule(), "cpu", DEFAULT_TUNE)
                scale = coded[0] / x.shape[-1]
                out = os.path.join(tmp, "out.dqc")
                by_bpp, _ = peak_of(["encode", str(f), "-o", out, "--overwrite", "--bpp", str(target)])
                by_q, _ = peak_of(["encode", str(f), "-o", out, "--overwrite", "-q", str(fit.quality),
                                "--scale", f"{scale:.6f}"])  # fmt: skip
                rows.append({"image": f.name, "target": target, "quality": fit.quality, "scale": scale,
                             "bpp_peak_mb": by_bpp, "q_peak_mb": by_q, "difference_mb": by_bpp - by_q})  # fmt: skip
                print(json.dumps(rows[-1]), flush=True)
    summary = {}
    for target in sorted({r["target"] for r in rows}):
        sel = [r for r in rows if r["target"] == target]
        summary[str(target)] = {
            "mean_bpp_peak_mb": sum(r["bpp_peak_mb"] for r in sel) / len(sel),
            "mean_q_peak_mb": sum(r["q_peak_mb"] for r in sel) / len(sel),
            "max_difference_mb": max(r["difference_mb"] for r in sel),
        }
    print(json.dumps(summary, indent=1))
    meta = {"machine": platform.platform(), "cpus": os.cpu_count(), "images": args.images}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bpp_memory.json").write_text(json.dumps({"meta": meta, "summary": summary, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
