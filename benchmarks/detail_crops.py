"""Does detail survive? Crops of kodim23's macaw eye and kodim05's numbers at about 0.1 bpp.

    python -m benchmarks.detail_crops [--kodak ../shared/data/kodak] [--bpp 0.1]

For each image: the original, dqc before (the gate's fixed shares, the default up to dqc 0.2),
dqc now (the default tune), two experiments for structure (a ranking that adds edge error; the
default map with regions promoted where edge error turns their own least cost finer, "rescue W",
see benchmarks/allocation.py and allocation_rescue.md for their cost on BSDS500), and WebP and
AVIF files of at most the same size (or their smallest, if that is over), each crop enlarged 3x
without smoothing. Every dqc file is the highest quality whose coded size stays at or under the
target (bisection on the real file). Writes detail_<image>.png and detail_crops.json (bpp and
PSNR of the whole image and of each crop) under --out.
"""

from __future__ import annotations

import argparse
import io
import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from benchmarks.allocation import edge_error, edge_ranking, gate_levels, rescue_structure
from benchmarks.codecs import pillow_encode
from dqcodec.encoder.ratecontrol import Analysis, analyze, decode_every_level, highest, levels_for_quality
from dqcodec.encoder.rdo import STRUCTURAL_SCALE, choose_levels, multiplier
from dqcodec.encoding import image_to_tensor, write_tokens
from dqcodec.metrics import psnr_of_pictures
from dqcodec.models.loading import LoadedModel, load_model
from dqcodec.models.transform import synthesize

# image -> crops (left, top, right, bottom) in pixels
CROPS = {
    "kodim23": [(150, 180, 278, 276)],  # the blue-and-yellow macaw's eye
    "kodim05": [(400, 10, 528, 106), (262, 222, 390, 318)],  # helmet "21", "CR 250" on the red bike
}
ZOOM = 3
Levels = Callable[[LoadedModel, Analysis, float], torch.Tensor]
EDGE_WEIGHT = 1.5
RESCUE_WEIGHTS = (0.25, 0.5)


def edge_levels(edge: torch.Tensor) -> Levels:
    """The default tune's counts along a ranking that adds the edge error the finer levels recover
    (`benchmarks.allocation.edge_ranking`), an experiment for structure the gate misses."""

    def levels(m: LoadedModel, a: Analysis, q: float) -> torch.Tensor:
        assert a.costs is not None
        return choose_levels(a.costs, q, STRUCTURAL_SCALE, ranking=edge_ranking(a.score, edge, EDGE_WEIGHT))

    return levels


def rescue_levels(edge: torch.Tensor, weight: float) -> Levels:
    """The default tune's map, then `benchmarks.allocation.rescue_structure`: regions whose own least cost turns
    finer once edge error counts (at `weight` of its all-medium total) are promoted."""
    edge_n = edge / edge[1].sum().clamp(min=1e-9)

    def levels(m: LoadedModel, a: Analysis, q: float) -> torch.Tensor:
        assert a.costs is not None
        base = levels_for_quality(m, a, q)[0]
        lam = multiplier(a.costs, q, STRUCTURAL_SCALE)
        return base if math.isinf(lam) else rescue_structure(base, a.costs, edge_n, lam, weight)

    return levels


def dqc_settings(m: LoadedModel, a: Analysis, img: Image.Image) -> dict[str, Levels]:
    original = (image_to_tensor(img)[0][0] * 255).round().to(torch.uint8)
    decoded = decode_every_level(m, a.idx, img.width, img.height)
    edge = edge_error(decoded, original)
    return {
        "dqc before": gate_levels,
        "dqc now": lambda m, a, q: levels_for_quality(m, a, q)[0],
        f"dqc edges {EDGE_WEIGHT:g}": edge_levels(edge),
        **{f"dqc rescue {w:g}": rescue_levels(edge, w) for w in RESCUE_WEIGHTS},
    }


def dqc_at_rate(m: LoadedModel, a: Analysis, img: Image.Image, budget: int, levels: Levels) -> tuple[int, np.ndarray]:
    """Bytes and picture of the highest quality (1/128 steps) whose file fits `budget` bytes."""

    def size(q: float) -> int:
        return len(write_tokens(m, levels(m, a, q), a.idx, img.width, img.height))

    lo = highest(lambda q: size(q) <= budget, 0.0, 100.0, 7)
    pic = synthesize(m.vae, levels(m, a, lo), a.idx, img.width, img.height, "cpu").permute(1, 2, 0).numpy()
    return size(lo), pic


def pillow_at_rate(img: Image.Image, codec: str, budget: int) -> tuple[int, np.ndarray]:
    """Bytes and picture of the highest quality setting whose file fits `budget` bytes."""
    best: tuple[int, np.ndarray] | None = None
    for q in range(0, 101, 2):
        data = pillow_encode(img, codec, q)
        if len(data) > budget:
            break
        best = (len(data), np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))
    if best is None:  # even the lowest setting is over: show it anyway, with its size
        data = pillow_encode(img, codec, 0)
        best = (len(data), np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))
    return best


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return min(psnr_of_pictures(a, b), 100.0)


def sheet(ref: np.ndarray, pictures: dict[str, tuple[int, np.ndarray]], crops: list, pixels: int) -> Image.Image:
    """One row per crop, one column per picture, labelled with its bpp."""
    columns = {"original": (0, ref), **pictures}
    w, h = (crops[0][2] - crops[0][0]) * ZOOM, (crops[0][3] - crops[0][1]) * ZOOM
    label = 18
    out = Image.new("RGB", (len(columns) * (w + 4), len(crops) * (h + label + 4)), "white")
    draw = ImageDraw.Draw(out)
    for r, box in enumerate(crops):
        for c, (name, (size, pic)) in enumerate(columns.items()):
            x, y = c * (w + 4), r * (h + label + 4)
            tile = Image.fromarray(pic).crop(box).resize((w, h), Image.NEAREST)
            out.paste(tile, (x, y + label))
            text = name if name == "original" else f"{name} {8 * size / pixels:.3f} bpp"
            draw.text((x + 2, y + 3), text, fill="black")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kodak", type=Path, default=Path("../shared/data/kodak"))
    ap.add_argument("--bpp", type=float, default=0.1)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = ap.parse_args()
    m = load_model("dq")
    args.out.mkdir(parents=True, exist_ok=True)
    results = {}
    for name, crops in CROPS.items():
        img = Image.open(args.kodak / f"{name}.png").convert("RGB")
        ref = np.asarray(img)
        pixels = img.width * img.height
        budget = int(args.bpp * pixels / 8)
        a = analyze(m, image_to_tensor(img)[0])
        dqc = dqc_settings(m, a, img)
        pictures = {label: dqc_at_rate(m, a, img, budget, levels) for label, levels in dqc.items()}
        pictures |= {codec: pillow_at_rate(img, codec, budget) for codec in ("webp", "avif")}
        sheet(ref, pictures, crops, pixels).save(args.out / f"detail_{name}.png")
        results[name] = {
            label: {
                "bpp": 8 * size / pixels,
                "psnr": psnr(ref, pic),
                "crop_psnr": [psnr(ref[t:b, x0:x1], pic[t:b, x0:x1]) for x0, t, x1, b in crops],
            }
            for label, (size, pic) in pictures.items()
        }
        print(name, json.dumps(results[name]), flush=True)
    (args.out / "detail_crops.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
