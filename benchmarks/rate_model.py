"""Fit and check `ratemodel.RATE_WEIGHTS`: the prediction of a region's bits at each level.

    python -m benchmarks.rate_model [--fit 16] [--check 8]

Fit: on --fit BSDS500 validation images, every region's bits (encode_tiles' region_bits) with the
whole map at each level in turn, least squares per level on (1, novelty, gate score). Check: on
--check BSDS500 test images, the predicted bits of the default tune's maps at q25, q50 and q75
against their coded bits, before any measurement (the first proposal of --bpp) and after the
map of a quality 5 below or above was coded and observed (the second: the first proposal is
typically that close). Never Kodak.
Writes rate_model.json under --out; copy the weights into dqcodec/encoder/ratemodel.py.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from dqcodec.encoder import ratemodel
from dqcodec.encoder.ratecontrol import analyze, levels_for_quality
from dqcodec.encoding import image_to_tensor
from dqcodec.format.coding import encode_tiles
from dqcodec.format.tokens import Schedule
from dqcodec.models.dqvae import NUM_LEVELS
from dqcodec.models.loading import load_model


def region_bits(m, a, levels: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
    bits = torch.zeros(levels.shape, dtype=torch.float64)
    encode_tiles(m.prior, levels, a.idx, Schedule(), region_bits=bits)
    return bits


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("../shared/data/train/bsds500"))
    ap.add_argument("--fit", type=int, default=16)
    ap.add_argument("--check", type=int, default=8)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = ap.parse_args()
    m = load_model("dq")

    features: list[list[torch.Tensor]] = [[] for _ in range(NUM_LEVELS)]
    targets: list[list[torch.Tensor]] = [[] for _ in range(NUM_LEVELS)]
    for f in sorted((args.data / "val").glob("*.jpg"))[: args.fit]:
        a = analyze(m, image_to_tensor(Image.open(f).convert("RGB"))[0])
        novelty = ratemodel.code_novelty(a.idx)
        for level in range(NUM_LEVELS):
            bits = region_bits(m, a, torch.full(a.score.shape, level))
            ones = torch.ones_like(bits)
            features[level].append(torch.stack([ones, novelty[level], a.score.double()], -1).reshape(-1, 3))
            targets[level].append(bits.flatten())
        print(f.name, flush=True)
    weights, r2 = [], []
    for level in range(NUM_LEVELS):
        x, y = torch.cat(features[level]), torch.cat(targets[level])
        w = torch.linalg.lstsq(x, y[:, None]).solution[:, 0]
        weights.append([round(float(v), 2) for v in w])
        r2.append(round(float(1 - ((x @ w - y) ** 2).mean() / y.var()), 3))
    ratemodel.RATE_WEIGHTS = tuple(tuple(w) for w in weights)  # type: ignore[assignment]  # checked with the new fit
    print("weights", weights, "R2", r2)

    checks = []
    qualities = (25, 50, 75)
    for f in sorted((args.data / "test").glob("*.jpg"))[: args.check]:
        a = analyze(m, image_to_tensor(Image.open(f).convert("RGB"))[0])
        every = sorted({q + d for q in qualities for d in (-5, 0, 5)})
        maps = {q: levels_for_quality(m, a, q)[0] for q in every}
        coded = {q: region_bits(m, a, maps[q]) for q in every}
        predicted = ratemodel.predicted_bits(a.idx, a.score)
        for q in qualities:
            true = float(coded[q].sum())
            first = ratemodel.RateModel(predicted).bits(maps[q]) / true - 1
            seconds = []
            for near in (q - 5, q + 5):
                model = ratemodel.RateModel(predicted)
                model.observe(maps[near], coded[near])
                seconds.append(model.bits(maps[q]) / true - 1)
            checks.append({"image": f.name, "quality": q, "first": first, "second": seconds})
        print(f.name, [(c["quality"], round(c["first"], 3)) for c in checks[-3:]], flush=True)
    first = np.abs([c["first"] for c in checks])
    second = np.abs([s for c in checks for s in c["second"]])
    summary = {
        "weights": weights,
        "r2": r2,
        "first_mean_abs": float(first.mean()),
        "first_max_abs": float(first.max()),
        "second_mean_abs": float(second.mean()),
        "second_max_abs": float(second.max()),
    }
    print(summary)
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {"fit_images": args.fit, "check_images": args.check, "data": "BSDS500 val (fit), test (check)"}
    result = {"meta": meta, "summary": summary, "checks": checks}
    (args.out / "rate_model.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
