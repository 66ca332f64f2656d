"""The encoder's nearest-code search (`quantize.nearest_codes`) on Kodak latents, at 1 thread:
the C kernel (the shipped path), the torch loop (its fallback, the same sums), and the matrix
product |z|^2 - 2 z.e + |e|^2 that the search used before (training's `_training_indices`, at
several distance-chunk sizes). Time per image, and how many indices differ from the C kernel's.

    python -m benchmarks.vq_search [--images 4] [--chunks 16384,1024,256] [--repeats 5]

Writes vq_search.json under --out.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image

import dqcodec.models.quantize as quantize
from dqcodec.encoding import image_to_tensor
from dqcodec.models.loading import load_model
from dqcodec.models.transform import encode_tiled, pad16


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kodak", type=Path, default=Path("../shared/data/kodak"))
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--chunks", default="16384,1024,256")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    vae = load_model("dq").vae
    vq = vae.quantizer
    saved_chunk, saved_kernel = quantize.INDEX_CHUNK, quantize._search_kernel

    def product(chunk: int) -> Callable[[torch.Tensor], torch.Tensor]:
        def search(z: torch.Tensor) -> torch.Tensor:
            quantize.INDEX_CHUNK = chunk
            return vq._training_indices(z)

        return search

    def torch_loop(z: torch.Tensor) -> torch.Tensor:
        quantize.INDEX_CHUNK, quantize._search_kernel = saved_chunk, lambda: None
        try:
            return vq.indices(z)
        finally:
            quantize._search_kernel = saved_kernel

    searches = {"C kernel": vq.indices, "torch loop": torch_loop}
    searches |= {f"matrix product, chunk {c}": product(int(c)) for c in args.chunks.split(",")}
    ms: dict[str, list[float]] = {k: [] for k in searches}
    differ = dict.fromkeys(searches, 0)
    total = 0
    try:
        for f in sorted(args.kodak.glob("kodim*.png"))[: args.images]:
            x, _ = image_to_tensor(Image.open(f).convert("RGB"))
            with torch.no_grad():
                latents, _ = encode_tiled(vae, pad16(x) * 2 - 1)
            reference = [vq.indices(z) for z in latents]
            total += sum(r.numel() for r in reference)
            for i in range(args.repeats):  # interleaved, so every search sees the same machine load
                for label, search in searches.items():
                    t0 = time.perf_counter()
                    idx = [search(z) for z in latents]
                    ms[label].append(1000 * (time.perf_counter() - t0))
                    if i == 0:
                        differ[label] += sum(int((a != b).sum()) for a, b in zip(idx, reference))
    finally:
        quantize.INDEX_CHUNK, quantize._search_kernel = saved_chunk, saved_kernel
    results = {k: {"median_ms": statistics.median(ms[k]), "indices_differing": differ[k]} for k in searches}
    for label, r in results.items():
        print(f"{label:>28}: {r['median_ms']:6.1f} ms per image, {r['indices_differing']} of {total} indices differ")
    meta = {"machine": platform.platform(), "threads": 1, "images": args.images, "indices": total}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "vq_search.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
