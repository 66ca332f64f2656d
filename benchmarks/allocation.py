"""Per-image granularity allocation: which per-region distortion measure should the default tune
minimise? Measured on BSDS500 test images (never Kodak), against today's default (the DGC gate
ranks regions, quality fixes the shares).

    python -m benchmarks.allocation [--images 12] [--qualities 10,25,40,55,70,85,95]

Every candidate decodes the image once per level (all coarse, all medium, all fine), measures a
distortion D[l, i] of every 16x16 region i at every level l, and codes each region at
argmin_l D[l, i] + lambda R[l] with lambda from the quality's slope and the image's own all-medium
distortion (`dqcodec.rdo.multiplier`), so the shares follow each image's content. Candidates:

    mse        squared RGB error (today's --tune psnr)
    luma       squared error of Y (BT.601) plus a quarter of Cb and Cr
    ssim       region mean of 1 - SSIM of Y (8x8 windows, 4-px stride), times 255^2 * 256
    grad       squared RGB error plus twice the squared error of horizontal/vertical gradients
    mse_ssim   half mse, half ssim (each normalised by its all-medium total)

Each measure is tried with two rules: "free" (every region its own least cost, as above) and
"ranked" (the gate's ranking of regions is kept, and only how many regions are fine and medium
follows from the least total cost; settings named gate+<measure>).

Each setting is coded for real: exact bits under the integer prior (the .dqc size), picture from
the decoder, PSNR, MS-SSIM and SSIMULACRA2. Writes allocation.json (per image and setting) and
allocation.md (BD-rates against the gate, share spreads) under --out.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from benchmarks.kodak_rd import Metrics
from benchmarks.report import bd_rate
from dqcodec.codec import image_to_tensor, write_tokens
from dqcodec.loading import LoadedModel, load_model
from dqcodec.models.dqvae import NUM_LEVELS
from dqcodec.ratecontrol import analyze, levels_for_quality
from dqcodec.rdo import RegionCosts, levels_at, multiplier, region_distortion, region_rate, region_sums
from dqcodec.transform import synthesize

Distortion = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (L,3,H,W), (3,H,W) uint8 -> (L,h,w)


def _ycbcr(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.double().unbind(-3)
    y = 0.299 * r + 0.587 * g + 0.114 * b
    return torch.stack([y, 0.564 * (b - y), 0.713 * (r - y)], -3)


def luma(decoded: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    d = _ycbcr(decoded) - _ycbcr(original)[None]
    weights = torch.tensor([1.0, 0.25, 0.25], dtype=torch.float64)[None, :, None, None]
    return region_sums((d.pow(2) * weights).sum(1, keepdim=True))


def ssim_error(decoded: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    x, y = _ycbcr(decoded)[:, :1], _ycbcr(original)[None, :1].expand(len(decoded), -1, -1, -1)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2

    def mean(t: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(t, 8, stride=4, padding=2, count_include_pad=False)

    mx, my = mean(x), mean(y)
    vx, vy, cxy = mean(x * x) - mx**2, mean(y * y) - my**2, mean(x * y) - mx * my
    ssim = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    dssim = F.interpolate(1 - ssim, size=x.shape[-2:], mode="nearest")
    return region_sums(dssim) * 255.0**2


def grad(decoded: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    d = decoded.double() - original.double()[None]
    gx, gy = d[..., :, 1:] - d[..., :, :-1], d[..., 1:, :] - d[..., :-1, :]
    edge = F.pad(gx.pow(2).sum(1, keepdim=True), (0, 1)) + F.pad(gy.pow(2).sum(1, keepdim=True), (0, 0, 0, 1))
    return region_distortion(decoded, original) + 2 * region_sums(edge)


def mse_ssim(decoded: torch.Tensor, original: torch.Tensor, weight: float = 0.5) -> torch.Tensor:
    """`weight` of mse and 1 - weight of ssim, each normalised by its all-medium total."""
    a, b = region_distortion(decoded, original), ssim_error(decoded, original)
    return weight * a / a[1].sum() + (1 - weight) * b / b[1].sum()


CANDIDATES: dict[str, Distortion] = {
    "mse": region_distortion,
    "luma": luma,
    "ssim": ssim_error,
    "grad": grad,
    "mse_ssim": mse_ssim,
}


def candidate(name: str) -> Distortion:
    """A measure by name; "mse_ssim@w" weighs mse by w and ssim by 1 - w."""
    if "@" in name:
        base, weight = name.split("@")
        return lambda decoded, original: mse_ssim(decoded, original, float(weight))
    return CANDIDATES[name]


def ranked_levels(costs: RegionCosts, score: torch.Tensor, lam: float) -> torch.Tensor:
    """Levels by the gate's ranking (top regions fine, next medium, rest coarse) with the counts
    of least total D + lam R: prefix sums over the ranking, the best fine count per upper count."""
    n = score.numel()
    order = torch.argsort(score.reshape(n), descending=True, stable=True)
    c = (costs.distortion + lam * costs.rate).reshape(NUM_LEVELS, n)[:, order]
    zero = torch.zeros(NUM_LEVELS, 1, dtype=c.dtype)
    pre = torch.cat([zero, c.cumsum(1)], 1)  # pre[l, k]: cost of the first k ranked regions at level l
    best_fine = torch.cummin(pre[2] - pre[1], 0)  # over fine counts <= upper count
    total = best_fine.values + pre[1] + (pre[0, -1] - pre[0])
    n_up = int(torch.argmin(total))
    n_fine = int(best_fine.indices[n_up])
    rank = torch.empty(n, dtype=torch.long)
    rank[order] = torch.arange(n)
    return ((rank < n_up).long() + (rank < n_fine).long()).view(score.shape)


def code(m: LoadedModel, a, levels: torch.Tensor, img: Image.Image, ref: np.ndarray, metrics: Metrics) -> dict:
    data = write_tokens(m, levels, a.idx, img.width, img.height)
    out = synthesize(m.vae, levels, a.idx, img.width, img.height, "cpu").permute(1, 2, 0).numpy()
    return {
        "bpp": 8 * len(data) / (img.width * img.height),
        **metrics(ref, out),
        "share_coarse": (levels == 0).float().mean().item(),
        "share_fine": (levels == 2).float().mean().item(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("../shared/data/train/bsds500/test"))
    ap.add_argument("--images", type=int, default=12)
    ap.add_argument("--qualities", default="10,25,40,55,70,85,95")
    ap.add_argument("--candidates", default=",".join(CANDIDATES))
    ap.add_argument("--rules", default="free,ranked")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = ap.parse_args()
    m, metrics = load_model("dq"), Metrics()
    qualities = [float(q) for q in args.qualities.split(",")]
    names = args.candidates.split(",")
    files = sorted(args.data.glob("*.jpg"))[:: max(1, len(list(args.data.glob("*.jpg"))) // args.images)]
    rows: list[dict] = []
    settings = ["gate"]
    t0 = time.time()
    for f in files[: args.images]:
        img = Image.open(f).convert("RGB")
        ref = np.asarray(img)
        x, _ = image_to_tensor(img)
        a = analyze(m, x)
        original = (x[0] * 255).round().to(torch.uint8)
        uniform = [torch.full(a.score.shape, lv) for lv in range(NUM_LEVELS)]
        decoded = torch.stack([synthesize(m.vae, lv, a.idx, img.width, img.height, "cpu") for lv in uniform])
        for q in qualities:
            rows.append({"image": f.name, "setting": "gate", "quality": q,
                         **code(m, a, levels_for_quality(m, a, q)[0], img, ref, metrics)})  # fmt: skip
        for name in names:
            dist = CANDIDATES[name](decoded, original)
            costs = RegionCosts(dist, region_rate(dist.shape[1:]), img.width * img.height)
            for rule in args.rules.split(","):
                setting = name if rule == "free" else f"gate+{name}"
                for q in qualities:
                    lam = multiplier(costs, q)
                    if lam == float("inf"):
                        levels = torch.zeros(dist.shape[1:], dtype=torch.long)
                    else:
                        levels = levels_at(costs, lam) if rule == "free" else ranked_levels(costs, a.score, lam)
                    rows.append({"image": f.name, "setting": setting, "quality": q,
                                 **code(m, a, levels, img, ref, metrics)})  # fmt: skip
                settings.append(setting)
        print(f"{f.name}: {time.time() - t0:.0f} s", flush=True)
    report(rows, list(dict.fromkeys(settings)), qualities, metrics.names, args.out)


def report(rows: list[dict], settings: list[str], qualities: list[float], metric_names: list[str], out: Path) -> None:
    def mean_curve(setting: str) -> list[dict]:
        pts = []
        for q in qualities:
            sel = [r for r in rows if r["setting"] == setting and r["quality"] == q]
            pts.append({k: float(np.mean([r[k] for r in sel])) for k in ["bpp", *metric_names]})
        return pts

    anchor = mean_curve("gate")
    lines = ["| setting | " + " | ".join(f"BD-rate {n}" for n in metric_names) + " | fine share at q55 (min-max) "
             "| coarse share at q55 (min-max) |", "| --- " * (len(metric_names) + 3) + "|"]  # fmt: skip
    summary = {}
    for s in settings:
        curve = mean_curve(s)
        bd = {n: bd_rate(curve, anchor, n) for n in metric_names}
        mid = [r for r in rows if r["setting"] == s and r["quality"] == 55.0]
        fine, coarse = [r["share_fine"] for r in mid], [r["share_coarse"] for r in mid]
        summary[s] = {"bd_rate_vs_gate": bd, "curve": curve}
        cells = " | ".join("-" if v is None else f"{v:+.1f}%" for v in bd.values())
        spread = f"{min(fine):.2f}-{max(fine):.2f} | {min(coarse):.2f}-{max(coarse):.2f}" if mid else "- | -"
        lines.append(f"| {s} | {cells} | {spread} |")
    out.mkdir(parents=True, exist_ok=True)
    (out / "allocation.json").write_text(json.dumps({"summary": summary, "rows": rows}, indent=1))
    (out / "allocation.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
