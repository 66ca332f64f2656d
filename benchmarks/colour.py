"""Colour fidelity: flat patches, single pixels, and the mean colour of 64x64 blocks of photos.

    python -m benchmarks.colour [--quality 50] [--effort E] [--stem colour]

1. Flat 64x64 patches of 64 colours (the corners and edges of the RGB cube, greys, and random
   ones): the largest error of any sample, rim included.
2. 1x1 pictures of the same colours: the largest error of a channel.
3. Kodak: the error of the mean colour of every 64x64 block (whole blocks), per channel: the
   mean, the 95th percentile and the largest, on kodim03, 07 and 23 and over all 24 images; and
   the bytes of each file, of its colour correction (CCOR) and of its flat blocks (FLAT).

Through the public API (`dqcodec.encode` / `dqcodec.decode`), so it measures what users get.
Writes benchmarks/results/<stem>.json.
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
from pathlib import Path

import numpy as np
from PIL import Image

import dqcodec
from dqcodec.encoder.effort import DEFAULT_EFFORT
from dqcodec.format import bitstream

BLOCK = 64


def test_colours(count: int = 64, seed: int = 0) -> list[tuple[int, int, int]]:
    """The 8 corners of the RGB cube, the 12 edge midpoints, 4 greys and random colours."""
    corners = list(itertools.product((0, 255), repeat=3))
    edges = [c for c in itertools.product((0, 128, 255), repeat=3) if sorted(c).count(128) == 1]
    greys = [(g, g, g) for g in (64, 128, 192, 230)]
    fixed = corners + edges + greys + [(200, 30, 40)]
    rng = np.random.default_rng(seed)
    return fixed + [tuple(int(v) for v in rng.integers(0, 256, 3)) for _ in range(count - len(fixed))]


def round_trip(picture: np.ndarray, quality: float, effort: int) -> np.ndarray:
    return np.asarray(dqcodec.decode(coded(picture, quality, effort)).convert("RGB"))


def coded(picture: np.ndarray, quality: float, effort: int) -> bytes:
    return dqcodec.encode(picture, quality=quality, effort=effort)


def chunk_bytes(data: bytes) -> dict[str, int]:
    """The file's bytes, and those of its colour correction (CCOR) and flat blocks (FLAT)."""
    c = bitstream.read(data)
    return {"file": len(data), "ccor": len(c.colour or b""), "flat": len(c.flat or b"")}


def flat_errors(colours: list[tuple[int, int, int]], side: int, quality: float, effort: int) -> list[int]:
    """For each colour, the largest error of any sample of a side x side flat picture."""
    out = []
    for c in colours:
        picture = np.broadcast_to(np.array(c, np.uint8), (side, side, 3)).copy()
        out.append(int(np.abs(round_trip(picture, quality, effort).astype(int) - picture.astype(int)).max()))
    return out


def mean_errors(original: np.ndarray, decoded: np.ndarray) -> np.ndarray:
    """|mean colour error| of every whole 64x64 block, per channel: (blocks, 3)."""
    h, w = (s // BLOCK * BLOCK for s in original.shape[:2])

    def means(a: np.ndarray) -> np.ndarray:
        return a[:h, :w].astype(np.float64).reshape(h // BLOCK, BLOCK, w // BLOCK, BLOCK, 3).mean((1, 3)).reshape(-1, 3)

    return np.abs(means(decoded) - means(original))


def block_mean_errors(path: Path, quality: float, effort: int) -> tuple[np.ndarray, dict[str, int]]:
    """`mean_errors` of a photo's round trip, and the bytes."""
    ref = np.asarray(Image.open(path).convert("RGB"))
    data = coded(ref, quality, effort)
    return mean_errors(ref, np.asarray(dqcodec.decode(data).convert("RGB"))), chunk_bytes(data)


def stats(errors: np.ndarray) -> dict[str, float]:
    return {
        "mean": float(errors.mean()),
        "p95": float(np.percentile(errors, 95)),
        "worst": float(errors.max()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kodak", type=Path, default=Path("../shared/data/kodak"))
    ap.add_argument("--quality", type=float, default=50.0)
    ap.add_argument("--effort", type=int, default=DEFAULT_EFFORT)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    ap.add_argument("--stem", default="colour")
    args = ap.parse_args()
    colours = test_colours()
    flat = flat_errors(colours, 64, args.quality, args.effort)
    pixel = flat_errors(colours, 1, args.quality, args.effort)
    print(f"flat 64x64: worst sample error {max(flat)}, median over colours {np.median(flat):.0f}", flush=True)
    print(f"1x1: worst channel error {max(pixel)}, median {np.median(pixel):.0f}", flush=True)
    per_image, sizes = {}, {}
    for path in sorted(args.kodak.glob("kodim*.png")):
        per_image[path.name], sizes[path.name] = block_mean_errors(path, args.quality, args.effort)
        print(path.name, {k: round(v, 2) for k, v in stats(per_image[path.name]).items()}, sizes[path.name], flush=True)
    named = {n: {**stats(e), "bytes": sizes[n]} for n, e in per_image.items()}
    result = {
        "meta": {
            "machine": platform.platform(),
            "quality": args.quality,
            "effort": args.effort,
            "dqc": dqcodec.__version__,
        },  # fmt: skip
        "flat_64": {"worst": max(flat), "per_colour": dict(zip(map(str, colours), flat))},
        "pixel_1x1": {"worst": max(pixel), "per_colour": dict(zip(map(str, colours), pixel))},
        "kodak_block_means": {
            "kodim03_07_23": stats(np.concatenate([per_image[f"kodim{i}.png"] for i in ("03", "07", "23")])),
            "all": stats(np.concatenate(list(per_image.values()))),
            "bytes": {k: sum(b[k] for b in sizes.values()) for k in ("file", "ccor", "flat")},
            "per_image": named,
        },
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.stem}.json").write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result["kodak_block_means"].items() if k != "per_image"}, indent=1))


if __name__ == "__main__":
    main()
