"""Rate-distortion on Kodak: dqc (both tunes), the fixed-grid VQGAN, JPEG, WebP, AVIF, JPEG XL.

    python -m benchmarks.kodak_rd [--kodak ../shared/data/kodak] [--out benchmarks/results]

Rate is the size of the whole file in bits per pixel. Distortion: PSNR (RGB, 8-bit), MS-SSIM,
SSIMULACRA2 (pip `ssimulacra2`; higher is better, 90 is visually lossless) and LPIPS (AlexNet)
where the `lpips` package and its weights are already installed (nothing is downloaded).

Learned codecs: the image is analysed once per model, then each quality's granularity map is
chosen and entropy-coded exactly as `dqcodec.encode` does (same functions); the picture is the
DQ-VAE decoder's output for those tokens, which the tests show `dqc decode` returns bit for bit.
`dq` is the default tune "ssim" (DGC gate ranking), `dq-psnr` the tune "psnr", both at effort 0
(the nearest codes, dqc 0.2's encoder) and an explicit scale. Settings with a scale other than 1
code a resampled picture (RSMP, `--scale`), as `dqcodec.encode` does. Rows also report what the
tokens would cost without the prior (log2(3) bits per region, log2(K) per code).

The `ROUND_TRIP` codecs are real round trips through `dqcodec.encode` and `dqcodec.decode` at
a -q (its path across scales, `qualitymap`) and an effort: `dq-default` is what `dqc encode -q Q`
writes, with every default; `dq-e5` the highest effort; `dq-psnr-default` and `vqgan-default`
their tune's and model's defaults.
Writes kodak_rd.csv and kodak_rd.json under --out. With --codecs, rows of the other codecs are
kept from an existing kodak_rd.csv there.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from benchmarks.codecs import LEARNED, pillow_encode
from dqcodec.codec import image_to_tensor, reconstruct, write_tokens
from dqcodec.loading import LoadedModel, load_model
from dqcodec.metrics import ms_ssim
from dqcodec.models.dqvae import Tokens
from dqcodec.qualitytarget import measure
from dqcodec.ratecontrol import Analysis, analyze, coded_size, levels_for_quality
from dqcodec.transform import resample_picture


def at(scale: float, *qualities: float) -> list[tuple[float, float]]:
    return [(q, scale) for q in qualities]


ROUND_TRIP_QUALITIES = (0, 15, 30, 45, 60, 75, 90, 100)
# codec -> (model, tune, effort: None for the default) of the round-trip codecs
ROUND_TRIP = {
    "dq-default": ("dq", "ssim", None),
    "dq-e5": ("dq", "ssim", 5),
    "dq-psnr-default": ("dq", "psnr", None),
    "vqgan-default": ("vqgan", "ssim", None),
}
PATH = 0.0  # the "scale" of a setting whose -q chooses its scale (qualitymap)
# (quality, scale) settings; scale is dqc's --scale (1 = the picture at its own size; PATH: -q's own)
SETTINGS = {
    "dq": at(0.5, 0, 50) + at(0.71, 50) + at(1, 0, 15, 30, 50, 65, 80, 90, 100) + at(1.5, 30, 50, 65, 100),
    "dq-psnr": at(0.5, 0, 35) + at(0.71, 35) + at(1, 0, 20, 35, 50, 65, 80, 100) + at(1.5, 50, 65, 80, 100),
    "vqgan": at(0.5, 0) + at(0.71, 0, 50, 100) + at(1, 0, 50, 100) + at(1.5, 0, 50, 100),
    **{
        codec: [(q, PATH) for q in ROUND_TRIP_QUALITIES] for codec in ("dq-default", "dq-psnr-default", "vqgan-default")
    },
    "dq-e5": [(q, PATH) for q in ROUND_TRIP_QUALITIES],
    "jpeg": at(1, 5, 10, 20, 30, 50, 75),
    "webp": at(1, 0, 5, 20, 40, 60, 80),
    "avif": at(1, 5, 10, 20, 35, 50, 70),
    "jxl": at(1, 1, 5, 10, 20, 35, 50),
}


class Metrics:
    """Distortion metrics of a decoded picture against its reference."""

    def __init__(self) -> None:
        self.names = ["psnr", "ms_ssim"]
        try:
            from ssimulacra2 import compute_ssimulacra2

            self._ssimulacra2: Callable | None = compute_ssimulacra2
            self.names.append("ssimulacra2")
        except ImportError:
            self._ssimulacra2 = None
        self._lpips = _lpips_model()
        if self._lpips is not None:
            self.names.append("lpips")

    def __call__(self, ref: np.ndarray, out: np.ndarray) -> dict[str, float]:
        mse = np.mean((ref.astype(np.float64) - out.astype(np.float64)) ** 2)
        r, o = (torch.from_numpy(a.copy()).permute(2, 0, 1)[None].float() / 255 for a in (ref, out))
        res = {"psnr": 10 * math.log10(255**2 / mse) if mse > 0 else float("inf"), "ms_ssim": float(ms_ssim(r, o))}
        if self._ssimulacra2 is not None:
            res["ssimulacra2"] = measure("ssimulacra2", ref, out)
        if self._lpips is not None:
            with torch.no_grad():
                res["lpips"] = float(self._lpips(r * 2 - 1, o * 2 - 1))
        return res


def _lpips_model() -> torch.nn.Module | None:
    """LPIPS only if the package and its weights are already on this machine (it would otherwise download)."""
    try:
        import lpips  # type: ignore[import-not-found]

        weights = Path(lpips.__file__).parent / "weights" / "v0.1" / "alex.pth"
        backbone = Path(torch.hub.get_dir()) / "checkpoints" / "alexnet-owt-7be5be79.pth"
        if not (weights.exists() and backbone.exists()):
            return None
        return lpips.LPIPS(net="alex", verbose=False).eval()
    except Exception:  # not installed, or torchvision missing
        return None


def pillow_codec(img: Image.Image, codec: str, quality: int) -> tuple[int, np.ndarray]:
    data = pillow_encode(img, codec, quality)
    return len(data), np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def unprior_bits(levels: torch.Tensor, num_codes: int) -> float:
    codes = sum((levels == lv).sum().item() * 4**lv for lv in range(3))
    return levels.numel() * math.log2(3) + codes * math.log2(num_codes)


def round_trip(
    img: Image.Image, quality: float, model: str, tune: str, effort: int | None
) -> tuple[int, np.ndarray, dict]:
    """dqcodec.encode at -q `quality` (and `effort`, else its default), then dqcodec.decode."""
    import dqcodec
    from dqcodec import bitstream

    t0 = time.process_time()
    data = dqcodec.encode(
        img, quality=quality, model=model, tune=tune, **({} if effort is None else {"effort": effort})
    )
    encode_cpu = time.process_time() - t0
    c = bitstream.read(data)
    extra = {"encode_cpu_s": encode_cpu, "coded_scale": c.coded_width / img.width, "colour_bytes": len(c.colour or b"")}
    return len(data), np.asarray(dqcodec.decode(data).convert("RGB")), extra


def learned_codec(
    m: LoadedModel, a: Analysis, img: Image.Image, quality: float, scale: float
) -> tuple[int, np.ndarray, dict]:
    levels = levels_for_quality(m, a, quality)[0]
    coded = coded_size(img.width, img.height, scale)
    data = write_tokens(m, levels, a.idx, img.width, img.height, coded=coded)
    tokens = Tokens(levels[None], tuple(i[None] for i in a.idx))  # type: ignore[arg-type]
    out = reconstruct(tokens, img.width, img.height, m.name, coded=coded)
    extra = {
        "bpp_without_prior": unprior_bits(levels, m.vae.cfg.num_codes) / (img.width * img.height),
        "share_coarse": (levels == 0).float().mean().item(),
        "share_fine": (levels == 2).float().mean().item(),
    }
    return len(data), out, extra


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kodak", type=Path, default=Path("../shared/data/kodak"))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    ap.add_argument("--limit", type=int, default=0, help="only the first N images (quick look)")
    ap.add_argument("--codecs", default=",".join(SETTINGS))
    args = ap.parse_args()
    files = sorted(args.kodak.glob("kodim*.png"))[: args.limit or None]
    if not files:
        raise SystemExit(f"no kodim*.png under {args.kodak}")
    codecs = args.codecs.split(",")
    metrics = Metrics()
    print("metrics:", ", ".join(metrics.names), flush=True)
    rows = kept_rows(args.out / "kodak_rd.csv", codecs) if args.codecs != ap.get_default("codecs") else []
    for f in files:
        img = Image.open(f).convert("RGB")
        ref = np.asarray(img)
        npx = img.width * img.height
        analyses: dict[tuple[str, float], tuple[LoadedModel, Analysis]] = {}
        for codec in codecs:
            for q, scale in SETTINGS[codec]:
                t0 = time.perf_counter()
                extra: dict = {}
                if codec in ROUND_TRIP:
                    size, out, extra = round_trip(img, q, *ROUND_TRIP[codec])
                elif codec in LEARNED:
                    if (codec, scale) not in analyses:
                        model, tune = LEARNED[codec]
                        m = load_model(model)
                        x = resample_picture(image_to_tensor(img)[0], *coded_size(*img.size, scale))
                        analyses[codec, scale] = (m, analyze(m, x, tune=tune))
                    size, out, extra = learned_codec(*analyses[codec, scale], img, q, scale)
                else:
                    size, out = pillow_codec(img, codec, int(q))
                seconds = time.perf_counter() - t0
                row = {"image": f.name, "codec": codec, "quality": q, "scale": scale}
                row |= {"bytes": size, "bpp": 8 * size / npx}
                row |= metrics(ref, out) | {"seconds": seconds, **extra}
                rows.append(row)
                scores = " ".join(f"{k} {row[k]:.4f}" for k in metrics.names)
                where = "path" if scale == PATH else f"x{scale}"
                print(f"{f.name} {codec:7} q={q:<4} {where:<5} bpp {row['bpp']:.4f} {scores}", flush=True)
    write_results(rows, metrics.names, args.out)


def kept_rows(csv_path: Path, rerun: list[str]) -> list[dict]:
    """Rows of the codecs not being rerun, from an earlier kodak_rd.csv (numbers as floats)."""
    if not csv_path.exists():
        return []

    def value(k: str, v: str) -> object:
        if k in ("image", "codec") or v == "":
            return v
        return float(v)

    with csv_path.open() as fh:
        rows = [{k: value(k, v) for k, v in r.items() if v != ""} for r in csv.DictReader(fh)]
    return [r | {"scale": r.get("scale", 1.0)} for r in rows if r["codec"] not in rerun]


def write_results(rows: list[dict], metric_names: list[str], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with (out / "kodak_rd.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    summary: dict[str, list] = {}
    for codec in dict.fromkeys(r["codec"] for r in rows):
        for q, scale in dict.fromkeys((r["quality"], r["scale"]) for r in rows if r["codec"] == codec):
            sel = [r for r in rows if r["codec"] == codec and r["quality"] == q and r["scale"] == scale]
            entry = {k: float(np.mean([r[k] for r in sel])) for k in sel[0] if isinstance(sel[0][k], float)}
            summary.setdefault(codec, []).append({**entry, "quality": q, "scale": scale, "images": len(sel)})
    meta = {
        "machine": platform.platform(),
        "processor": platform.processor(),
        "torch_threads": torch.get_num_threads(),
        "metrics": metric_names,
        "lpips": "lpips" in metric_names or "not installed with its weights here; skipped",
    }
    (out / "kodak_rd.json").write_text(json.dumps({"meta": meta, "mean": summary}, indent=1))
    for codec, entries in summary.items():
        for e in entries:
            scores = " ".join(f"{k} {e[k]:.4f}" for k in metric_names)
            print(f"MEAN {codec:7} q={e['quality']:<4} x{e['scale']:<4} bpp {e['bpp']:.4f} {scores}")


if __name__ == "__main__":
    main()
