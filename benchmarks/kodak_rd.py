"""Rate-distortion on Kodak: dqc (DQ-VAE), the fixed-grid VQGAN baseline, JPEG, WebP, AVIF.

    python -m benchmarks.kodak_rd [--kodak ../shared/data/kodak] [--out benchmarks/results]

Rate is the size of the whole file in bits per pixel; distortion PSNR (RGB, 8-bit) and MS-SSIM.
For the learned codecs the reconstruction is computed from the encoder's tokens, which the tests
show to be bit-identical to what `dqc decode` returns; it also reports the bits the tokens would
cost without the prior (fixed-length codes: log2(3) per region, log2(K) per code).
Writes kodak_rd.csv and kodak_rd.json under --out.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import platform
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from dqcodec.codec import analyze, encode, image_to_tensor, levels_for_quality, load_model, reconstruct
from dqcodec.metrics import ms_ssim
from dqcodec.models.dqvae import Tokens

DQ_QUALITIES = (0, 15, 30, 50, 65, 80, 100)
VQ_QUALITIES = (0, 50, 100)
JPEG_QUALITIES = (5, 10, 20, 30, 50, 75)
WEBP_QUALITIES = (0, 5, 20, 40, 60, 80)
AVIF_QUALITIES = (5, 10, 20, 35, 50, 70)


def metrics(ref: np.ndarray, out: np.ndarray) -> tuple[float, float]:
    mse = np.mean((ref.astype(np.float64) - out.astype(np.float64)) ** 2)
    psnr = 10 * math.log10(255**2 / mse) if mse > 0 else float("inf")
    t = lambda a: torch.from_numpy(a.copy()).permute(2, 0, 1)[None].float() / 255  # noqa: E731
    return psnr, float(ms_ssim(t(ref), t(out)))


def pillow_codec(img: Image.Image, fmt: str, quality: int) -> tuple[int, np.ndarray]:
    buf = io.BytesIO()
    opts = {"JPEG": {"optimize": True}, "WEBP": {"method": 6}, "AVIF": {"speed": 4}}[fmt]
    img.save(buf, format=fmt, quality=quality, **opts)
    size = buf.tell()
    buf.seek(0)
    return size, np.asarray(Image.open(buf).convert("RGB"))


def unprior_bits(tokens: Tokens, num_codes: int) -> float:
    levels = tokens.levels
    counts = [(levels == lv).sum().item() * (4**lv) for lv in range(3)]
    return levels.numel() * math.log2(3) + sum(counts) * math.log2(num_codes)


def learned_codec(img: Image.Image, model: str, quality: float) -> tuple[int, np.ndarray, float, dict]:
    m = load_model(model)
    data = encode(img, quality=quality, model=model)
    # the tokens `encode` codes, recomputed without running the prior a second time
    score, idx = analyze(m, image_to_tensor(img)[0])
    tokens = Tokens(levels_for_quality(m, score, quality)[0][None], tuple(i[None] for i in idx))  # type: ignore[arg-type]
    out = reconstruct(tokens, img.width, img.height, model)
    lv = tokens.levels
    shares = {"coarse": (lv == 0).float().mean().item(), "fine": (lv == 2).float().mean().item()}
    return len(data), out, unprior_bits(tokens, m.vae.cfg.num_codes), shares


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kodak", type=Path, default=Path("../shared/data/kodak"))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    ap.add_argument("--limit", type=int, default=0, help="only the first N images (quick look)")
    ap.add_argument("--codecs", default="dq,vqgan,jpeg,webp,avif")
    args = ap.parse_args()
    files = sorted(args.kodak.glob("kodim*.png"))[: args.limit or None]
    if not files:
        raise SystemExit(f"no kodim*.png under {args.kodak}")
    codecs = args.codecs.split(",")
    rows = []
    for f in files:
        img = Image.open(f).convert("RGB")
        ref = np.asarray(img)
        npx = img.width * img.height
        runs: list[tuple[str, float]] = []
        runs += [("dq", q) for q in DQ_QUALITIES if "dq" in codecs]
        runs += [("vqgan", q) for q in VQ_QUALITIES if "vqgan" in codecs]
        runs += [("jpeg", q) for q in JPEG_QUALITIES if "jpeg" in codecs]
        runs += [("webp", q) for q in WEBP_QUALITIES if "webp" in codecs]
        runs += [("avif", q) for q in AVIF_QUALITIES if "avif" in codecs]
        for codec, q in runs:
            t0 = time.perf_counter()
            extra: dict = {}
            if codec in ("dq", "vqgan"):
                size, out, raw_bits, shares = learned_codec(img, codec, q)
                extra = {"bpp_without_prior": raw_bits / npx, **{f"share_{k}": v for k, v in shares.items()}}
            else:
                size, out = pillow_codec(img, codec.upper(), int(q))
            psnr, msssim = metrics(ref, out)
            row = {"image": f.name, "codec": codec, "quality": q, "bytes": size, "bpp": 8 * size / npx}
            row |= {"psnr": psnr, "ms_ssim": msssim, "seconds": time.perf_counter() - t0, **extra}
            rows.append(row)
            print(f"{f.name} {codec:6} q={q:<5} bpp {row['bpp']:.4f} psnr {psnr:.2f} ms-ssim {msssim:.4f}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    keys = sorted({k for r in rows for k in r}, key=lambda k: list(rows[0]).index(k) if k in rows[0] else 99)
    with (args.out / "kodak_rd.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    summary: dict[str, list] = {}
    for codec in dict.fromkeys(r["codec"] for r in rows):
        for q in dict.fromkeys(r["quality"] for r in rows if r["codec"] == codec):
            sel = [r for r in rows if r["codec"] == codec and r["quality"] == q]
            entry = {k: float(np.mean([r[k] for r in sel])) for k in sel[0] if isinstance(sel[0][k], float)}
            summary.setdefault(codec, []).append({"quality": q, "images": len(sel), **entry})
    meta = {"machine": platform.platform(), "processor": platform.processor(), "torch_threads": torch.get_num_threads()}
    (args.out / "kodak_rd.json").write_text(json.dumps({"meta": meta, "mean": summary}, indent=1))
    for codec, entries in summary.items():
        for e in entries:
            print(
                f"MEAN {codec:6} q={e['quality']:<5} bpp {e['bpp']:.4f} psnr {e['psnr']:.2f} ms-ssim {e['ms_ssim']:.4f}"
            )


if __name__ == "__main__":
    main()
