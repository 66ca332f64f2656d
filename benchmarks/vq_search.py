"""The VQ nearest-code search (`VectorQuantizer.indices`) at several distance-chunk sizes: time per
Kodak image at 1 thread, and whether the indices are identical to the largest chunk's.

    python -m benchmarks.vq_search [--images 4] [--chunks 16384,4096,1024,256]

The search is memory-bound: a chunk of 16384 vectors makes a 16384 x codebook distance matrix
(64 MB) that leaves the caches; smaller chunks keep it in them. Writes vq_search.json under --out.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from PIL import Image

import dqcodec.quantize as quantize
from dqcodec.codec import image_to_tensor
from dqcodec.loading import load_model
from dqcodec.transform import encode_tiled, pad16


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kodak", type=Path, default=Path("../shared/data/kodak"))
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--chunks", default="16384,4096,1024,256")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    m = load_model("dq")
    chunks = [int(c) for c in args.chunks.split(",")]
    ms: dict[int, list[float]] = {c: [] for c in chunks}
    identical = {c: True for c in chunks}
    saved = quantize.INDEX_CHUNK
    try:
        for f in sorted(args.kodak.glob("kodim*.png"))[: args.images]:
            x, _ = image_to_tensor(Image.open(f).convert("RGB"))
            with torch.no_grad():
                latents, _ = encode_tiled(m.vae, pad16(x) * 2 - 1)
            reference = None
            for _ in range(args.repeats):  # interleaved, so every size sees the same machine load
                for c in chunks:
                    quantize.INDEX_CHUNK = c
                    t0 = time.perf_counter()
                    idx = [m.vae.quantizer.indices(z) for z in latents]
                    ms[c].append(1000 * (time.perf_counter() - t0))
                    reference = reference or idx
                    identical[c] &= all(torch.equal(a, b) for a, b in zip(idx, reference))
    finally:
        quantize.INDEX_CHUNK = saved
    results = {str(c): {"median_ms": statistics.median(ms[c]), "identical": identical[c]} for c in chunks}
    for c, r in results.items():
        print(f"chunk {c:>6}: {r['median_ms']:.1f} ms per image, indices {'identical' if r['identical'] else 'DIFFER'}")
    meta = {"machine": platform.platform(), "threads": 1, "images": args.images, "shipped_chunk": saved}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "vq_search.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
