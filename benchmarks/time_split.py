"""Where a decode's CPU time goes: the prior's attention kernel, the fused block tails (their
three products, norms and GELU, one C call each; AVX512-VNNI), its other matrix products (the C
product, or torch's int8 kernels), its other C steps (norms, projections into the cache, GELU,
frequencies), the rest of the prior (Python and torch bookkeeping, embeddings, the range coder),
and the synthesis transform.
And an encode's: the analysis transform, vector quantisation with the distortion estimate (the
rest of `ratecontrol.analyze`), the prior coding the tokens, and the rest.

    python -m benchmarks.time_split [--images kodim01,kodim05,kodim13] [--qualities 50,100]

One thread (torch and the prior), CPU seconds of the process, each image encoded twice and
decoded twice (the faster run of each counts). First, one int8 product call at 16 and at 512
rows, torch's and the C kernel's where it runs (`pass_cost`). Writes time_split.json under --out.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from PIL import Image

import dqcodec
from dqcodec import decoding
from dqcodec import encoding as codec
from dqcodec.encoder import ratecontrol
from dqcodec.format.intmath import int8_product, native_kernels, pack_weights
from dqcodec.models import transform

KODAK = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "kodak"
C_STEPS = ("norm", "project", "gelu", "frequencies")


def timed(owner: object, name: str, clock: dict[str, float], key: str | None = None) -> None:
    """Wrap owner.name so that its CPU seconds add up in clock[key or name]."""
    fn = getattr(owner, name)

    def wrapper(*args, **kwargs):
        t = time.process_time()
        try:
            return fn(*args, **kwargs)
        finally:
            clock[key or name] += time.process_time() - t

    setattr(owner, name, wrapper)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", default="kodim01,kodim05,kodim13")
    ap.add_argument("--qualities", default="50,100")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args()
    torch.set_num_threads(1)
    kernels = native_kernels()
    if kernels is None:
        raise SystemExit("the C kernels are not built or not used on this CPU: this split is of the C path")
    passes = pass_cost()
    print(json.dumps(passes))  # before torch._int_mm is wrapped for the split
    clock = {"attention": 0.0, "block_tail": 0.0, "products": 0.0, "c_steps": 0.0, "synthesize": 0.0}
    timed(kernels, "attention", clock)
    for name in C_STEPS:
        timed(kernels, name, clock, "c_steps")
    timed(torch, "_int_mm", clock, "products")
    if hasattr(kernels, "gemm"):
        timed(kernels, "gemm", clock, "products")
        timed(kernels, "block_tail", clock)
    timed(transform, "synthesize", clock)
    codec.synthesize = decoding.synthesize = transform.synthesize  # the names they imported
    encoding = {"analysis_transform": 0.0, "analyze": 0.0, "prior_coding": 0.0}
    timed(ratecontrol, "encode_tiled", encoding, "analysis_transform")
    timed(ratecontrol, "analyze", encoding)
    codec.analyze = ratecontrol.analyze
    timed(codec, "encode_tiles", encoding, "prior_coding")
    rows = []
    for q in map(float, args.qualities.split(",")):
        for name in args.images.split(","):
            im = Image.open(KODAK / f"{name}.png").convert("RGB")
            enc = None
            for _ in range(2):
                encoding.update(dict.fromkeys(encoding, 0.0))
                t = time.process_time()
                blob = dqcodec.encode(im, quality=q, workers=1)
                total = time.process_time() - t
                if enc is None or total < enc["encode_total_s"]:
                    vq_and_estimate = encoding["analyze"] - encoding["analysis_transform"]
                    enc = {"encode_total_s": total, "analysis_transform_s": encoding["analysis_transform"],
                           "vq_and_distortion_estimate_s": vq_and_estimate, "prior_coding_s": encoding["prior_coding"],
                           "encode_rest_s": total - encoding["analyze"] - encoding["prior_coding"]}  # fmt: skip
            best = None
            for _ in range(2):
                clock.update(dict.fromkeys(clock, 0.0))
                t = time.process_time()
                dqcodec.decode(blob, workers=1)
                total = time.process_time() - t
                if best is None or total < best["total_s"]:
                    best = {"image": name, "quality": q, "total_s": total}
                    best |= {f"{k}_s": v for k, v in clock.items()}
                    best["rest_of_prior_s"] = total - sum(clock.values())
            assert best is not None and enc is not None
            rows.append(best | enc)
            print(json.dumps(rows[-1]))
    meta = {"attention": f"C kernel ({kernels.isa})", "threads": 1}
    args.out.mkdir(parents=True, exist_ok=True)
    result = {"meta": meta, "rows": rows, "pass_cost": passes}
    (args.out / "time_split.json").write_text(json.dumps(result, indent=1) + "\n")


def pass_cost() -> dict:
    """The microseconds of one int8 product call (256 x 1024 weights, the prior's fc1) at 16 and
    512 rows, by torch and by the C kernel where it runs: the fixed cost a pass pays per product."""
    out: dict = {}
    weights = torch.randint(-63, 64, (256, 1024), dtype=torch.int8)
    packed = pack_weights(weights)
    products = {"int8_product": lambda a: torch._int_mm(a, weights)}
    if packed is not None:
        products["c_product"] = lambda a: int8_product(a, weights, packed)
    for label, product in products.items():
        for rows in (16, 512):
            acts = torch.randint(-127, 128, (rows, 256), dtype=torch.int8)
            calls = 20000 // rows
            product(acts)
            t = time.perf_counter()
            for _ in range(calls):
                product(acts)
            seconds = (time.perf_counter() - t) / calls
            out[f"{label}_us_{rows}_rows"] = seconds * 1e6
            out[f"{label}_gmacs_{rows}_rows"] = rows * 256 * 1024 / seconds / 1e9
    return out


if __name__ == "__main__":
    main()
