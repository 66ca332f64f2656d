"""Fit the encoder's distortion estimate (`dqcodec.encoder.distortion`) to the shipped DQ-VAE.

    python -m training.train_distortion --out dqcodec/weights/distortion_dq.pt [--extra 150] [--steps 12000]

Targets are what the encoder measured before: every region's squared error and 1 - SSIM measure
with the picture decoded at each level (`ratecontrol.decode_every_level`, `rdo`), on BSDS500
train and val and --extra images of train/extra (never Kodak); they are cached under --cache, so
that a second fit does not decode again. The network fits their log1p and its steps from level
to level by least squares (`fit_loss`). BSDS500 test images score it: R^2 within each image,
and the rate-distortion cost of the maps it picks against the measured ones (`proxy_bd_rate`).
About 10 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import math
import random
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from benchmarks.report import bd_rate
from dqcodec.encoder.distortion import DistortionEstimator, estimate, region_features
from dqcodec.encoder.ratecontrol import decode_every_level
from dqcodec.encoder.rdo import (
    PSNR_SCALE,
    REGION_BITS,
    STRUCTURAL_SCALE,
    RegionCosts,
    choose_levels,
    region_distortion,
    region_rate,
    ssim_distortion,
    structural_mix,
)
from dqcodec.encoding import image_to_tensor
from dqcodec.models.loading import LoadedModel, load_model
from dqcodec.models.transform import encode_tiled, pad16

# features, log1p of the distortions, the gate's score, the distortions (squared, ssim)
Sample = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


@torch.no_grad()
def sample(m: LoadedModel, path: Path) -> dict:
    """One image's picture and measured distortions (2, L, h, w): squared error, 1 - SSIM measure."""
    x, _ = image_to_tensor(Image.open(path).convert("RGB"))
    h, w = x.shape[-2:]
    latents, _ = encode_tiled(m.vae, pad16(x) * 2 - 1)
    idx = tuple(m.vae.quantizer.indices(z)[0] for z in latents)
    decoded = decode_every_level(m, idx, w, h)
    original = (x[0] * 255).round().to(torch.uint8)
    return {"file": path.name, "x": original, "mse": region_distortion(decoded, original).float(),
            "ssim": ssim_distortion(decoded, original).float()}  # fmt: skip


def measured(m: LoadedModel, paths: list[Path], cache: Path) -> list[dict]:
    if cache.exists():
        return torch.load(cache, weights_only=True)
    rows = [sample(m, p) for p in paths]
    cache.parent.mkdir(parents=True, exist_ok=True)
    torch.save(rows, cache)
    return rows


@torch.no_grad()
def featurize(m: LoadedModel, rows: list[dict]) -> list[Sample]:
    out = []
    for r in rows:
        height, width = r["x"].shape[-2:]
        x = pad16(r["x"][None].float() / 255)
        latents, score = encode_tiled(m.vae, x * 2 - 1)
        idx = tuple(m.vae.quantizer.indices(z)[0] for z in latents)
        f = region_features(x[0], width, height, latents, idx, m.vae.quantizer.embed, score[0])
        truth = torch.stack([r["mse"], r["ssim"]]).double()
        out.append((f, torch.log1p(truth).float(), score[0], truth))
    return out


def fit_loss(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Squared error of log1p(distortion), plus that of its steps from level to level: the maps
    follow from what a finer level gains, so the steps weigh as much as the levels."""
    steps = predicted.diff(dim=1) - target.diff(dim=1)
    return (predicted - target).pow(2).mean() + steps.pow(2).mean()


def r_squared(est: DistortionEstimator, data: list[Sample]) -> list[list[float]]:
    """Of log1p(distortion) within each image, per measure and level."""
    err, var = torch.zeros(2, 3), torch.zeros(2, 3)
    with torch.no_grad():
        for f, t, _, _ in data:
            err += (est(f) - t).pow(2).sum((2, 3))
            var += (t - t.mean((2, 3), keepdim=True)).pow(2).sum((2, 3))
    return (1 - err / var).numpy().round(3).tolist()


def proxy_bd_rate(est: DistortionEstimator, data: list[Sample], qualities=(10, 25, 40, 55, 70, 85, 95)) -> dict:
    """BD-rate per tune of the maps the estimate picks against those the measured distortions
    pick, both scored by the measured distortions and REGION_BITS (no coding: a quick proxy for
    benchmarks/distortion_estimate.py)."""
    result = {}
    for tune, scale in (("ssim", STRUCTURAL_SCALE), ("psnr", PSNR_SCALE)):
        curves: dict[str, list[dict]] = {"measured": [], "estimated": []}
        for q in qualities:
            points: dict[str, list[tuple[float, float]]] = {"measured": [], "estimated": []}
            for f, _, score, truth in data:
                guess = estimate(est, f)
                pixels = int(f[-1].sum() * 256)
                true_cost = truth[0] if tune == "psnr" else structural_mix(*truth)
                for name, (sq, ss) in (("measured", truth), ("estimated", guess)):
                    d = sq if tune == "psnr" else structural_mix(sq, ss)
                    costs = RegionCosts(d, region_rate(d.shape[1:]), pixels)
                    levels = choose_levels(costs, q, scale, None if tune == "psnr" else score)
                    dist = float(true_cost.gather(0, levels[None]).sum()) / pixels
                    points[name].append((float(torch.tensor(REGION_BITS)[levels].sum()) / pixels, dist))
            for name, pts in points.items():
                bits, dist = np.mean([p[0] for p in pts]), np.mean([p[1] for p in pts])
                curves[name].append({"bpp": bits, "db": -10 * math.log10(dist)})
        result[tune] = round(bd_rate(curves["estimated"], curves["measured"], "db") or math.nan, 2)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("../shared/data/train"))
    ap.add_argument("--extra", type=int, default=150, help="images of train/extra besides BSDS500 train and val")
    ap.add_argument("--val", type=int, default=60, help="BSDS500 test images that score the fit")
    ap.add_argument("--cache", type=Path, default=Path("runs/distortion"))
    ap.add_argument("--steps", type=int, default=12000)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    torch.manual_seed(0)
    m = load_model("dq")
    bsds = args.data / "bsds500"
    extra = sorted((args.data / "extra").glob("*.jpg"))
    random.Random(0).shuffle(extra)
    train_paths = sorted((bsds / "train").glob("*.jpg")) + sorted((bsds / "val").glob("*.jpg")) + extra[: args.extra]
    val_paths = sorted((bsds / "test").glob("*.jpg"))[: args.val]
    train = featurize(m, measured(m, train_paths, args.cache / f"train_{args.extra}.pt"))
    val = featurize(m, measured(m, val_paths, args.cache / f"val_{args.val}.pt"))

    est = DistortionEstimator()
    features = torch.cat([f.flatten(1) for f, *_ in train], 1)
    est.shift.data, est.scale.data = features.mean(1), features.std(1).clamp(min=1e-3)
    targets = torch.cat([t.flatten(2) for _, t, *_ in train], 2)
    est.net[-1].bias.data = targets.mean(2).flatten()  # start at the mean, not at 0
    opt = torch.optim.AdamW(est.net.parameters(), lr=args.lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, args.lr, total_steps=args.steps)
    for step in range(args.steps):
        batch = [train[i] for i in torch.randint(len(train), (8,))]
        loss = sum(fit_loss(est(f), t) for f, t, *_ in batch) / len(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        schedule.step()
        if step % 2000 == 0 or step == args.steps - 1:
            print(f"step {step}: loss {loss.item():.4f}, val R^2 {r_squared(est, val)}", flush=True)
    print(f"val proxy BD-rate of the estimate's maps against the measured ones (%): {proxy_bd_rate(est, val)}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(est.state_dict(), args.out)


if __name__ == "__main__":
    main()
