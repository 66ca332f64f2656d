"""Per-image granularity allocation: which per-region distortion measure should the default tune
minimise? Measured on BSDS500 test images (never Kodak), against the default up to dqc 0.2 (the
DGC gate ranks regions, quality fixes the shares; `gate_levels`).

    python -m benchmarks.allocation [--images 12] [--qualities 10,25,40,55,70,85,95]
        [--candidates ssim,mse_ssim@0.1] [--rules free,ranked,edge0.5] [--alphas 1,0.5,0] [--stem allocation]

The runs behind the default (10 images each; results under benchmarks/results/):

    python -m benchmarks.allocation --images 10                      # allocation.md
    python -m benchmarks.allocation --images 10 --candidates ssim,mse_ssim@0.25,mse_ssim@0.5 \
        --rules ranked --alphas 1,0.5,0 --stem allocation_lambda
    python -m benchmarks.allocation --images 10 --candidates mse_ssim@0.1,mse_ssim@0.15,luma \
        --rules ranked --stem allocation_mix
    python -m benchmarks.allocation --images 10 --candidates mse_ssim@0.1 \
        --rules ranked,rescue0.25,rescue0.5,rescue1 --stem allocation_rescue

Every candidate decodes the image once per level (all coarse, all medium, all fine), measures a
distortion D[l, i] of every 16x16 region i at every level l, and codes each region at
argmin_l D[l, i] + lambda R[l] with lambda from the quality's slope and the image's own all-medium
distortion (`dqcodec.encoder.rdo.multiplier`), so the shares follow each image's content. Candidates:

    mse        squared RGB error (today's --tune psnr)
    luma       squared error of Y (BT.601) plus a quarter of Cb and Cr
    ssim       region mean of 1 - SSIM of Y (8x8 windows, 4-px stride), times 255^2 * 256
    grad       squared RGB error plus twice the squared error of horizontal/vertical gradients
    mse_ssim   half mse, half ssim (each normalised by its all-medium total); mse_ssim@w: w mse

Rules: "free" (every region its own least cost, as above), "ranked" (the gate's ranking of
regions is kept, and only how many regions are fine and medium follows from the least total cost;
settings named gate+<measure>), "edgeW" (ranked, by the gate's score plus W x the edge error
that the finer levels recover, `edge_ranking`) and "rescueW" (ranked, then regions whose own
least cost turns finer once W x their edge error counts are promoted, `rescue_structure`).
--alphas: lambda scales with the image's own all-medium error to this power (1: `rdo.multiplier`;
0: one lambda for all images; setting^alpha).

Each setting is coded for real: exact bits under the integer prior (the .dqc size), picture from
the decoder, PSNR, MS-SSIM and SSIMULACRA2. Writes allocation.json (per image and setting) and
allocation.md (BD-rates against the gate, share spreads) under --out.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from benchmarks.report import bd_rate, write_results
from dqcodec.compare.metrics import Measures
from dqcodec.encoder.ratecontrol import Analysis, analyze, decode_every_level
from dqcodec.encoder.rdo import (
    RegionCosts,
    levels_at,
    multiplier,
    ranked_levels,
    region_distortion,
    region_rate,
    region_sums,
    ssim_distortion,
    structural_distortion,
)
from dqcodec.encoding import image_to_tensor, write_tokens
from dqcodec.models.dqvae import rank_levels
from dqcodec.models.loading import LoadedModel, load_model
from dqcodec.models.transform import synthesize

Distortion = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (L,3,H,W), (3,H,W) uint8 -> (L,h,w)


def _ycbcr(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.double().unbind(-3)
    y = 0.299 * r + 0.587 * g + 0.114 * b
    return torch.stack([y, 0.564 * (b - y), 0.713 * (r - y)], -3)


def luma(decoded: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    d = _ycbcr(decoded) - _ycbcr(original)[None]
    weights = torch.tensor([1.0, 0.25, 0.25], dtype=torch.float64)[None, :, None, None]
    return region_sums((d.pow(2) * weights).sum(1, keepdim=True))


def edge_error(decoded: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    """Squared error of horizontal and vertical pixel differences, summed per region: structure
    (edges, strokes of text, thin lines) that a level loses or invents. Shapes as `rdo.region_distortion`."""
    d = decoded.double() - original.double()[None]
    gx, gy = d[..., :, 1:] - d[..., :, :-1], d[..., 1:, :] - d[..., :-1, :]
    return region_sums(
        F.pad(gx.pow(2).sum(1, keepdim=True), (0, 1)) + F.pad(gy.pow(2).sum(1, keepdim=True), (0, 0, 0, 1))
    )


def rescue_structure(
    levels: torch.Tensor, costs: RegionCosts, edge: torch.Tensor, lam: float, weight: float
) -> torch.Tensor:
    """Promote the regions whose own least cost is a finer level only once the structure term
    counts: argmin D + weight * edge + lam * R above argmin D + lam * R. `edge` (L, h, w) is
    `edge_error` relative to its all-medium total, like the default tune's D."""
    plain = levels_at(costs, lam)
    with_edges = torch.argmin(costs.distortion + weight * edge + lam * costs.rate, dim=0)
    return torch.where(with_edges > plain, torch.maximum(levels, with_edges), levels)


def grad(decoded: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    return region_distortion(decoded, original) + 2 * edge_error(decoded, original)


def edge_ranking(score: torch.Tensor, edge: torch.Tensor, weight: float) -> torch.Tensor:
    """The gate's score plus `weight` x the structure the finer levels recover (edge error at
    coarse minus at fine), both as z-scores over the image: a ranking that moves regions whose
    coarse decoding loses or invents edges up."""

    def z(t: torch.Tensor) -> torch.Tensor:
        return (t - t.mean()) / t.std().clamp(min=1e-9)

    return z(score.double()) + weight * z(edge[0] - edge[2])


def mse_ssim(decoded: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    return structural_distortion(decoded, original, 0.5)


CANDIDATES: dict[str, Distortion] = {
    "mse": region_distortion,
    "luma": luma,
    "ssim": ssim_distortion,
    "grad": grad,
    "mse_ssim": mse_ssim,
}


def candidate(name: str) -> Distortion:
    """A measure by name; "mse_ssim@w" weighs mse by w and ssim by 1 - w."""
    if "@" in name:
        base, weight = name.split("@")
        return lambda decoded, original: structural_distortion(decoded, original, float(weight))
    return CANDIDATES[name]


def gate_levels(m: LoadedModel, a: Analysis, quality: float) -> torch.Tensor:
    """The default up to dqc 0.2: the gate ranks regions and the quality fixes the shares, the
    same for every image (0..50 turns coarse regions medium, 50..100 medium ones fine)."""
    fine = max(0.0, (quality - 50) / 50)
    medium = quality / 50 if quality <= 50 else 1.0 - fine
    return rank_levels(a.score[None], torch.tensor([fine]), torch.tensor([medium]))[0]


def code(m: LoadedModel, a, levels: torch.Tensor, img: Image.Image, ref: np.ndarray, metrics: Measures) -> dict:
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
    ap.add_argument(
        "--rules",
        default="free,ranked",
        help="free, ranked, edgeW (ranked by edge_ranking at weight W) or rescueW (ranked, then rescue_structure)",
    )
    ap.add_argument("--alphas", default="1", help="exponents of the image's own error in lambda (1: rdo.multiplier)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    ap.add_argument("--stem", default="allocation", help="name of the result files")
    args = ap.parse_args()
    m, metrics = load_model("dq"), Measures()
    qualities = [float(q) for q in args.qualities.split(",")]
    names, alphas = args.candidates.split(","), [float(v) for v in args.alphas.split(",")]
    files = sorted(args.data.glob("*.jpg"))[:: max(1, len(list(args.data.glob("*.jpg"))) // args.images)]
    files = files[: args.images]
    t0 = time.time()
    images, costs = [], {}  # costs[name][i]: RegionCosts of image i under measure `name`
    for f in files:
        img = Image.open(f).convert("RGB")
        x, _ = image_to_tensor(img)
        a = analyze(m, x)
        original = (x[0] * 255).round().to(torch.uint8)
        decoded = decode_every_level(m, a.idx, img.width, img.height)
        images.append((f, img, a, edge_error(decoded, original)))
        for name in names:
            dist = candidate(name)(decoded, original)
            costs.setdefault(name, []).append(RegionCosts(dist, region_rate(dist.shape[1:]), img.width * img.height))
    # lambda = multiplier * (typical / own)^(1 - alpha): alpha 1 scales lambda by the image's own
    # all-medium error per pixel, alpha 0 gives every image the typical one (geometric mean)
    typical = {n: math.exp(np.mean([math.log(_reference(c)) for c in costs[n]])) for n in names}
    rows: list[dict] = []
    settings = ["gate"]
    for i, (f, img, a, edge) in enumerate(images):
        ref = np.asarray(img)
        for q in qualities:
            rows.append({"image": f.name, "setting": "gate", "quality": q,
                         **code(m, a, gate_levels(m, a, q), img, ref, metrics)})  # fmt: skip
        for name in names:
            c = costs[name][i]
            for rule in args.rules.split(","):
                for alpha in alphas:
                    setting = {"free": name, "ranked": f"gate+{name}"}.get(rule, f"gate+{name}+{rule}")
                    setting += "" if alpha == 1 else f"^{alpha:g}"
                    ranking = a.score if not rule.startswith("edge") else edge_ranking(a.score, edge, float(rule[4:]))
                    for q in qualities:
                        lam = multiplier(c, q) * (typical[name] / _reference(c)) ** (1 - alpha)
                        if lam == float("inf"):
                            levels = torch.zeros(c.distortion.shape[1:], dtype=torch.long)
                        else:
                            levels = levels_at(c, lam) if rule == "free" else ranked_levels(c, ranking, lam)
                            if rule.startswith("rescue"):
                                edge_n = edge / edge[1].sum().clamp(min=1e-9)
                                levels = rescue_structure(levels, c, edge_n, lam, float(rule[6:]))
                        rows.append({"image": f.name, "setting": setting, "quality": q,
                                     **code(m, a, levels, img, ref, metrics)})  # fmt: skip
                    settings.append(setting)
        print(f"{f.name}: {time.time() - t0:.0f} s", flush=True)
    report(rows, list(dict.fromkeys(settings)), qualities, metrics.names, args.out / args.stem)


def _reference(c: RegionCosts) -> float:
    """The all-medium map's error per pixel."""
    return float(c.distortion[1].sum()) / c.pixels


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
    write_results(out, summary, rows, lines)


if __name__ == "__main__":
    main()
