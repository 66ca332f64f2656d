"""Bits per token of the integer prior that codes, against the float prior it was quantised from,
per stream and per group schedule, on Kodak.

    python -m benchmarks.prior_bits [--images 8] [--qualities 30,80] [--models dq,vqgan]

For every full 256x256 tile of the first N Kodak images, the tokens of the shipped transform are
scored under each schedule, from P=1 (one pass per stream) to the fully sequential order (one
token per pass): by the integer prior (`dqcodec/weights/prior_*.npz`), as the exact code lengths
-log2(f / 2^20) of its frequency tables, which is what the range coder spends (within a few bytes
per tile); and by the float prior of dqc 0.1 (`training/weights/prior_*_float.pt`, teacher forcing,
float64 softmax). Compares with log2(K) bits per code and log2(3) per map token (no prior).
Writes prior_bits.json under --out.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from dqcodec.encoder.ratecontrol import analyze, levels_for_quality
from dqcodec.encoding import image_to_tensor
from dqcodec.format.entropy import PRECISION
from dqcodec.format.tokens import KIND_GRID, KIND_MAP, NUM_KINDS, Schedule, batch_tile_tokens, tile_tokens
from dqcodec.models import DQTransformer, prior_from_checkpoint
from dqcodec.models.loading import load_model

SCHEDULES = {
    "P=1 (4 passes)": (1, 1, 1, 1),
    "P=2 (16 passes)": (2, 2, 2, 2),
    "P=4 (64 passes, default)": (4, 4, 4, 4),
    "P=8 (256 passes)": (8, 8, 8, 8),
    "sequential": KIND_GRID,
}
STREAMS = ("map", "coarse", "medium", "fine")
FLOAT_PRIORS = {"dq": "prior_dq_float.pt", "vqgan": "prior_vq_float.pt"}
WEIGHTS = Path(__file__).resolve().parent.parent / "training" / "weights"


def float_prior(model: str) -> DQTransformer:
    return prior_from_checkpoint(torch.load(WEIGHTS / FLOAT_PRIORS[model], map_location="cpu", weights_only=True))


def tiles_of(m, path: Path, quality: float) -> list[tuple[torch.Tensor, tuple[torch.Tensor, ...]]]:
    """The full 256x256 tiles (levels, index maps) of an image at a quality (default tune)."""
    a = analyze(m, image_to_tensor(Image.open(path))[0])
    levels = levels_for_quality(m, a, quality)[0]
    out = []
    for y0 in range(0, levels.shape[0] - 15, 16):
        for x0 in range(0, levels.shape[1] - 15, 16):
            idx = tuple(t[y0 * s : (y0 + 16) * s, x0 * s : (x0 + 16) * s] for t, s in zip(a.idx, (1, 2, 4)))
            out.append((levels[y0 : y0 + 16, x0 : x0 + 16], idx))
    return out


def integer_bits(m, levels: torch.Tensor, idx: tuple[torch.Tensor, ...], periods: tuple[int, ...]) -> np.ndarray:
    """Exact code lengths per stream under the integer prior (all groups in one pass)."""
    t = tile_tokens(levels, idx, Schedule(periods))
    freq_map, freq_code = m.prior.frequencies_all([(t.kind, t.pos, t.value, t.group)], PRECISION)[0]
    n_map = int((t.kind == KIND_MAP).sum())
    rows = [(freq_map, t.value[:n_map], t.kind[:n_map]), (freq_code, t.value[n_map:], t.kind[n_map:])]
    out = np.zeros(NUM_KINDS)
    for freq, value, kind in rows:
        bits = -torch.log2(freq[torch.arange(len(value)), value].double() / 2**PRECISION)
        for k in range(NUM_KINDS):
            out[k] += float(bits[kind == k].sum())
    return out


def float_bits(prior: DQTransformer, levels: torch.Tensor, idx: tuple[torch.Tensor, ...], periods) -> np.ndarray:
    t, valid = batch_tile_tokens(levels[None], tuple(i[None] for i in idx), torch.tensor([periods]))
    with torch.no_grad():
        b = prior.loss_bits(t.kind, t.pos, t.value, t.group, valid.float())
    return np.array([b[t.kind == k].sum().item() for k in range(NUM_KINDS)])


def per_token(bits: np.ndarray, counts: np.ndarray) -> list[float | None]:
    return [b / c if c else None for b, c in zip(bits.tolist(), counts.tolist())]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kodak", type=Path, default=Path("../shared/data/kodak"))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--qualities", default="30,80")
    ap.add_argument("--models", default="dq,vqgan")
    args = ap.parse_args()
    path = args.out / "prior_bits.json"
    results: dict = {"meta": {"images": args.images, "precision": PRECISION}}
    for model in args.models.split(","):
        m, fp = load_model(model), float_prior(model)
        k = m.vae.cfg.num_codes
        results[model] = {"integer_prior": dict(m.prior.meta), "float_prior": f"training/weights/{FLOAT_PRIORS[model]}"}
        for q in (float(v) for v in args.qualities.split(",")):
            t0 = time.time()
            ints = {name: np.zeros(NUM_KINDS) for name in SCHEDULES}
            floats = {name: np.zeros(NUM_KINDS) for name in SCHEDULES}
            counts, pixels = np.zeros(NUM_KINDS), 0
            for f in sorted(args.kodak.glob("kodim*.png"))[: args.images]:
                for levels, idx in tiles_of(m, f, q):
                    pixels += 256 * 256
                    for name, periods in SCHEDULES.items():
                        ints[name] += integer_bits(m, levels, idx, periods)
                        floats[name] += float_bits(fp, levels, idx, periods)
                    t = tile_tokens(levels, idx, Schedule())
                    counts += np.array([(t.kind == kind).sum().item() for kind in range(NUM_KINDS)])
            entry: dict = {"tokens": dict(zip(STREAMS, counts.tolist())), "pixels": pixels}
            entry["bpp_without_prior"] = (counts[0] * math.log2(3) + counts[1:].sum() * math.log2(k)) / pixels
            for name in SCHEDULES:
                i_bpp, f_bpp = ints[name].sum() / pixels, floats[name].sum() / pixels
                entry[name] = {
                    "bpp": i_bpp,
                    "float_bpp": f_bpp,
                    "integer_vs_float": i_bpp / f_bpp - 1,
                    "bits_per_token": dict(zip(STREAMS, per_token(ints[name], counts))),
                    "bits_per_code": ints[name][1:].sum() / max(1, counts[1:].sum()),
                }
            results[model][f"quality {q:g}"] = entry
            seq = entry["sequential"]["bpp"]
            print(f"{model} quality {q:g}: {int(counts.sum())} tokens, no prior {entry['bpp_without_prior']:.4f} bpp"
                  f" ({time.time() - t0:.0f} s)")  # fmt: skip
            for name in SCHEDULES:
                e = entry[name]
                print(
                    f"  {name:26} integer {e['bpp']:.4f} bpp, float {e['float_bpp']:.4f} "
                    f"({100 * e['integer_vs_float']:+.2f}%), {100 * (e['bpp'] / seq - 1):+.1f}% vs sequential, "
                    f"{e['bits_per_code']:.2f} bits/code vs log2(K) = {math.log2(k):.0f}"
                )
            args.out.mkdir(parents=True, exist_ok=True)
            if path.exists():  # keep the models of other runs (models may run in parallel processes)
                results = {**json.loads(path.read_text()), model: results[model], "meta": results["meta"]}
            path.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
