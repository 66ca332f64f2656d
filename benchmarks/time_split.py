"""Where a decode's CPU time goes: the prior's attention kernel, the rest of the prior (linear
layers, norms, the integer elementwise work, Python), and the synthesis transform.

    python -m benchmarks.time_split [--images kodim01,kodim05,kodim13] [--qualities 50,100]

One thread (torch and the prior), CPU seconds of the process, each image encoded first and
decoded twice (the faster run counts). Writes time_split.json under --out.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from PIL import Image

import dqcodec
from dqcodec import codec, transform
from dqcodec.intmath import native_kernels
from dqcodec.models import intprior

KODAK = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "kodak"


def timed(owner: object, name: str, clock: dict[str, float], static: bool = False) -> None:
    """Wrap owner.name so that its CPU seconds add up in clock[name]."""
    fn = getattr(owner, name)

    def wrapper(*args, **kwargs):
        t = time.process_time()
        try:
            return fn(*args, **kwargs)
        finally:
            clock[name] += time.process_time() - t

    setattr(owner, name, staticmethod(wrapper) if static else wrapper)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", default="kodim01,kodim05,kodim13")
    ap.add_argument("--qualities", default="50,100")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args()
    torch.set_num_threads(1)
    clock = {"_attend_native": 0.0, "_attend": 0.0, "synthesize": 0.0}
    timed(intprior.IntPrior, "_attend_native", clock, static=True)
    timed(intprior.IntPrior, "_attend", clock, static=True)
    timed(transform, "synthesize", clock)
    codec.synthesize = transform.synthesize  # the name codec imported
    rows = []
    for q in map(float, args.qualities.split(",")):
        for name in args.images.split(","):
            im = Image.open(KODAK / f"{name}.png").convert("RGB")
            blob = dqcodec.encode(im, quality=q, workers=1)
            best = None
            for _ in range(2):
                clock.update(dict.fromkeys(clock, 0.0))
                t = time.process_time()
                dqcodec.decode(blob, workers=1)
                total = time.process_time() - t
                if best is None or total < best["total_s"]:
                    attention = clock["_attend_native"] + clock["_attend"]
                    best = {
                        "image": name,
                        "quality": q,
                        "total_s": total,
                        "attention_s": attention,
                        "synthesis_s": clock["synthesize"],
                        "rest_of_prior_s": total - attention - clock["synthesize"],
                    }
            rows.append(best)
            print(json.dumps(best))
    kernels = native_kernels()
    meta = {"attention": f"C kernel ({kernels.isa})" if kernels else "torch", "threads": 1}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "time_split.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
