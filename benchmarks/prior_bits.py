"""Bits per token of the DQ-Transformer prior, per stream and per group schedule, on Kodak.

    python -m benchmarks.prior_bits [--images 8] [--qualities 30,80]

For every full 256x256 tile of the first N Kodak images, the tokens of the shipped DQ-VAE are
scored by the prior under teacher forcing (what the range coder spends, up to the integer
quantization of probabilities) for several schedules: P=1 (one pass per stream) up to the fully
sequential order (one token per pass). Compares with log2(K) bits per code and log2(3) per map
token (no prior). Writes prior_bits.json under --out.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from dqcodec.codec import analyze, levels_for_quality, load_model
from dqcodec.models.dqvae import Tokens
from dqcodec.tokens import KIND_GRID, NUM_KINDS, batch_tile_tokens

SCHEDULES = {
    "P=1 (4 passes)": (1, 1, 1, 1),
    "P=2 (16 passes)": (2, 2, 2, 2),
    "P=4 (64 passes, default)": (4, 4, 4, 4),
    "P=8 (256 passes)": (8, 8, 8, 8),
    "sequential": KIND_GRID,
}
STREAMS = ("map", "coarse", "medium", "fine")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kodak", type=Path, default=Path("../shared/data/kodak"))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--qualities", default="30,80")
    ap.add_argument("--model", default="dq")
    args = ap.parse_args()
    m = load_model(args.model)
    k = m.vae.cfg.num_codes
    results = {}
    for q in (float(v) for v in args.qualities.split(",")):
        bits = {name: np.zeros(NUM_KINDS) for name in SCHEDULES}
        counts = np.zeros(NUM_KINDS)
        pixels = 0
        for f in sorted(args.kodak.glob("kodim*.png"))[: args.images]:
            x = torch.from_numpy(np.asarray(Image.open(f).convert("RGB")).copy()).permute(2, 0, 1)[None] / 255.0
            a = analyze(m, x)
            tok = Tokens(levels_for_quality(m, a, q)[0][None], tuple(i[None] for i in a.idx))  # type: ignore[arg-type]
            rh, rw = tok.levels.shape[1:]
            for y0 in range(0, rh - 15, 16):
                for x0 in range(0, rw - 15, 16):
                    lv = tok.levels[:, y0 : y0 + 16, x0 : x0 + 16]
                    idx = tuple(
                        t[:, y0 * s : (y0 + 16) * s, x0 * s : (x0 + 16) * s] for t, s in zip(tok.idx, (1, 2, 4))
                    )
                    pixels += 256 * 256
                    for name, periods in SCHEDULES.items():
                        t, valid = batch_tile_tokens(lv, idx, torch.tensor([periods]))
                        with torch.no_grad():
                            b = m.prior.loss_bits(t.kind, t.pos, t.value, t.group, valid.float())
                        for kind in range(NUM_KINDS):
                            bits[name][kind] += b[t.kind == kind].sum().item()
                    for kind in range(NUM_KINDS):
                        counts[kind] += (t.kind == kind).sum().item()
        entry = {"tokens": dict(zip(STREAMS, counts.tolist())), "pixels": pixels}
        raw = counts[0] * math.log2(3) + counts[1:].sum() * math.log2(k)
        entry["bpp_without_prior"] = raw / pixels
        for name, b in bits.items():
            entry[name] = {
                "bpp": b.sum() / pixels,
                "bits_per_token": {s: (b[i] / counts[i] if counts[i] else None) for i, s in enumerate(STREAMS)},
                "bits_per_code": b[1:].sum() / max(1, counts[1:].sum()),
            }
        results[f"quality {q:g}"] = entry
        print(f"quality {q:g}: {int(counts.sum())} tokens, no prior {entry['bpp_without_prior']:.4f} bpp")
        seq = entry["sequential"]["bpp"]
        for name in SCHEDULES:
            e = entry[name]
            print(
                f"  {name:26} {e['bpp']:.4f} bpp ({100 * (e['bpp'] / seq - 1):+.1f}% vs sequential), "
                f"{e['bits_per_code']:.2f} bits/code vs log2(K) = {math.log2(k):.0f}"
            )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "prior_bits.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
