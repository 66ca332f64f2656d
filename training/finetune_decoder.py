"""Fine-tune the synthesis (the DQ-VAE's decoder) of shipped models, the rest frozen.

    nice -n 19 python -m training.finetune_decoder --out runs/finetune --hours 8

The encoder, the codebook and the DGC gate stay as shipped, so every image's tokens, and so the
prior and every file's bits, are unchanged: only the picture the tokens decode to changes.

1. Tokens. Each training image (BSDS500 train/val, wiki, extra; never BSDS500 test or Kodak) goes
   through the shipped encoder once, as `dqc encode` would code it (`ratecontrol.analyze`), and
   its granularity maps are drawn as rate control draws them (`ratecontrol.levels_for_quality`)
   at several qualities and both tunes; a quarter of the images are also coded at a scale of
   `--bpp`'s bands (0.5, 0.71 or 1.5). The cache (`tokens_<model>.pt`) is built once, resumably.
   Beside the photos, `--synthetic` pictures of flat colours (saturated ones too), flat shapes and
   gradients (`synthetic_picture`), which photos seldom hold and the shipped decoder gets wrong.
2. Steps. A batch of `--batch` crops of `--crop` px, aligned to the 16-px regions, each with one
   of its image's maps: the decoder synthesises the crop from its tokens (bfloat16 autocast where
   the CPU has it) and the loss is stage 1's, 1000 MSE + 20 (1 - MS-SSIM). A `--synthetic-share`
   of the crops come from the synthetic pictures, and a `--small-share` of the steps take crops of
   16 to 64 px (as many pixels in all): small pictures are mostly border, which a 256-px crop
   seldom teaches.
3. Models. Every model in `--models` takes the same number of steps, one after the other (the
   fixed-grid baseline with every region at one level, drawn per crop), so comparisons stay fair.
4. State. AdamW at a constant rate after a warm-up, and an exponential moving average of the
   weights, which is what gets evaluated and exported; a checkpoint every few minutes
   (`ckpt_<model>.pt`) from which a rerun resumes; a line of the log (`log.txt`) every
   `--log-every` steps, with PSNR and MS-SSIM on held-out BSDS500 test crops.

`--export-dir` writes each model's decoder alone (`decoder_<model>.pt`, fp16), for shipping.
"""

from __future__ import annotations

import argparse
import copy
import math
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from dqcodec.encoder.ratecontrol import analyze, coded_size, levels_for_quality
from dqcodec.metrics import ms_ssim
from dqcodec.models.dqvae import Decoder
from dqcodec.models.loading import load_model
from dqcodec.models.transform import resample_picture
from training.data import list_images

QUALITIES = (0, 15, 30, 50, 70, 85, 100)  # maps per image, tune "ssim"
PSNR_QUALITIES = (20, 60, 100)  # and tune "psnr"
EXTRA_SCALES = (0.5, 0.71, 1.5)  # --bpp's scale bands besides 1
MIN_SIDE = 128  # px; smaller images are left out
BORDER_REGIONS = 2  # token context around every crop; the new decoder pads a picture's tokens so


def picture(path: Path) -> torch.Tensor:
    """(1, 3, H, W) float in [0, 1]."""
    rgb = np.asarray(Image.open(path).convert("RGB"))
    return torch.from_numpy(rgb.copy()).permute(2, 0, 1)[None].float() / 255.0


def synthetic_picture(rng: random.Random, side: int = 256) -> torch.Tensor:
    """(1, 3, side, side) in [0, 1]: a flat colour (half of them saturated: a channel at 0 or 255),
    with up to four flat rectangles or discs of other colours, or a linear gradient between two."""

    def colour() -> torch.Tensor:
        c = [rng.random() for _ in range(3)]
        if rng.random() < 0.5:
            c[rng.randrange(3)] = float(rng.random() < 0.5)
        return torch.tensor(c)[:, None, None]

    yy, xx = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    if rng.random() < 0.25:
        a, b = colour(), colour()
        angle = rng.random() * 2 * math.pi
        t = ((xx * math.cos(angle) + yy * math.sin(angle)) / side).clamp(-1, 1) * 0.5 + 0.5
        return (a + (b - a) * t)[None].clamp(0, 1)
    x = colour().expand(3, side, side).clone()
    for _ in range(rng.randrange(5)):
        cy, cx, r = rng.randrange(side), rng.randrange(side), rng.randrange(4, side // 2)
        inside = (
            (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
            if rng.random() < 0.5
            else ((yy - cy).abs() < r) & ((xx - cx).abs() < r)
        )
        x = torch.where(inside, colour(), x)
    return (x * 255).round()[None] / 255


def image_tokens(model: str, x: torch.Tensor) -> dict:
    """What the shipped encoder makes of picture x: the coded picture (uint8, cropped to whole
    regions), the code indices of each level and the maps rate control draws for it."""
    m = load_model(model)
    h16, w16 = x.shape[-2] // 16, x.shape[-1] // 16
    maps = []
    a = analyze(m, x, "cpu", "ssim")
    if m.fixed_grid:
        maps = [torch.full(a.score.shape, level, dtype=torch.uint8) for level in range(3)]
    else:
        maps = [levels_for_quality(m, a, q)[0].to(torch.uint8) for q in QUALITIES]
        a_psnr = analyze(m, x, "cpu", "psnr", "estimated")
        maps += [levels_for_quality(m, a_psnr, q)[0].to(torch.uint8) for q in PSNR_QUALITIES]
    return {
        "picture": (x[0, :, : h16 * 16, : w16 * 16] * 255).round().to(torch.uint8),
        "idx": [i[: h16 * s, : w16 * s].to(torch.int16) for i, s in zip(a.idx, (1, 2, 4))],
        "maps": torch.stack([mp[:h16, :w16] for mp in maps]),
    }


def build_cache(model: str, paths: list[Path], cache: Path, seed: int = 0) -> list[dict]:
    """Tokens of every image (and a quarter of them at another scale), saved as they are made."""
    items: list[dict] = torch.load(cache, weights_only=True) if cache.exists() else []
    done = {(it["path"], it["scale"]) for it in items}
    rng = random.Random(seed)
    jobs = [(p, 1.0) for p in paths] + [(p, rng.choice(EXTRA_SCALES)) for p in paths if rng.random() < 0.25]
    t0, last_save = time.time(), time.time()
    for n, (path, scale) in enumerate(jobs):
        if (str(path), scale) in done:
            continue
        x = picture(path)
        coded = coded_size(x.shape[-1], x.shape[-2], scale)
        if min(coded) < MIN_SIDE:
            continue
        items.append({"path": str(path), "scale": scale, **image_tokens(model, resample_picture(x, *coded))})
        if time.time() - last_save > 120:
            torch.save(items, cache)
            last_save = time.time()
            print(f"{model}: tokens of {n + 1}/{len(jobs)} images, {(time.time() - t0) / 60:.1f} min", flush=True)
    torch.save(items, cache)
    return items


def build_synthetic(model: str, count: int, cache: Path, seed: int = 0) -> list[dict]:
    if cache.exists():
        return torch.load(cache, weights_only=True)
    rng = random.Random(seed + 7)
    items = [
        {"path": f"synthetic-{i}", "scale": 1.0, **image_tokens(model, synthetic_picture(rng))} for i in range(count)
    ]
    torch.save(items, cache)
    return items


def crop_batch(
    items: list[dict],
    size: int,
    crop: int,
    rng: random.Random,
    synthetic: list[dict] | None = None,
    share: float = 0.0,
    margin: int = BORDER_REGIONS,
) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
    """(pictures (B, 3, crop, crop) in [0, 1], code indices per level, levels (B, crop/16 + 2 margin,
    ...)): crops of `items`, and a `share` of them of `synthetic`, with `margin` regions of token
    context around each crop: the image's own tokens, or beyond its edges its edge tokens repeated,
    as the decoder pads a picture's token grid (DQVAEConfig.border_regions)."""
    r = crop // 16
    pics, idx, levels = [], [[], [], []], []
    fitting = [it for it in items if min(it["maps"].shape[-2:]) >= r]
    for _ in range(size):
        it = rng.choice(synthetic) if synthetic and rng.random() < share else rng.choice(fitting)
        h, w = it["maps"].shape[-2:]
        y, x = rng.randrange(h - r + 1), rng.randrange(w - r + 1)
        pics.append(it["picture"][:, y * 16 : (y + r) * 16, x * 16 : (x + r) * 16])
        for lv, s in enumerate((1, 2, 4)):
            rows = torch.arange((y - margin) * s, (y + r + margin) * s).clamp(0, h * s - 1)
            cols = torch.arange((x - margin) * s, (x + r + margin) * s).clamp(0, w * s - 1)
            idx[lv].append(it["idx"][lv][rows][:, cols])
        rows = torch.arange(y - margin, y + r + margin).clamp(0, h - 1)
        cols = torch.arange(x - margin, x + r + margin).clamp(0, w - 1)
        levels.append(it["maps"][rng.randrange(len(it["maps"]))][rows][:, cols])
    return (
        torch.stack(pics).float() / 255.0,
        [torch.stack(i).long() for i in idx],
        torch.stack(levels).long(),
    )


def synthesis_loss(x_hat: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, float, float]:
    """Stage 1's loss on a synthesised batch (x_hat in [-1, 1]): (loss, PSNR, MS-SSIM)."""
    y = (x_hat.float() + 1) / 2
    mse = F.mse_loss(y, x)
    msssim = ms_ssim(y.clamp(0, 1), x).mean()
    return 1000 * mse + 20 * (1 - msssim), -10 * math.log10(max(mse.item(), 1e-12)), msssim.item()


class Run:
    """One model's decoder being fine-tuned: the trained copy, its average, the optimiser."""

    def __init__(self, model: str, out: Path, lr: float, ema: float, autocast: bool) -> None:
        self.name, self.ckpt = model, out / f"ckpt_{model}.pt"
        self.vae = load_model(model).vae
        self.decoder: Decoder = copy.deepcopy(self.vae.decoder).train().requires_grad_(True)
        self.average: Decoder = copy.deepcopy(self.vae.decoder).eval()
        self.opt = torch.optim.AdamW(self.decoder.parameters(), lr=lr, betas=(0.9, 0.99), weight_decay=0.0)
        self.lr, self.ema, self.autocast, self.step = lr, ema, autocast, 0
        if self.ckpt.exists():
            ck = torch.load(self.ckpt, map_location="cpu", weights_only=True)
            self.decoder.load_state_dict(ck["decoder"])
            self.average.load_state_dict(ck["average"])
            self.opt.load_state_dict(ck["opt"])
            self.step = ck["step"]
            print(f"{model}: resumed at step {self.step}", flush=True)

    def synthesise(self, decoder: Decoder, idx: list[torch.Tensor], levels: torch.Tensor) -> torch.Tensor:
        """The crop's picture: the decoder's output for its tokens, their margin cut off."""
        codes = [self.vae.quantizer.lookup(i) for i in idx]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.autocast):
            y = decoder(codes, self.vae.masks_from_levels(levels))
        m = 16 * BORDER_REGIONS
        return y[..., m : y.shape[-2] - m, m : y.shape[-1] - m]

    def train_step(self, x: torch.Tensor, idx: list[torch.Tensor], levels: torch.Tensor, warmup: int) -> tuple:
        lr = self.lr * min(1.0, (self.step + 1) / warmup)
        for g in self.opt.param_groups:
            g["lr"] = lr
        loss, psnr, msssim = synthesis_loss(self.synthesise(self.decoder, idx, levels), x)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.decoder.parameters(), 1.0)
        self.opt.step()
        with torch.no_grad():
            for avg, p in zip(self.average.state_dict().values(), self.decoder.state_dict().values()):
                avg.lerp_(p, 1 - self.ema) if avg.is_floating_point() else avg.copy_(p)
        self.step += 1
        return loss.item(), psnr, msssim

    @torch.no_grad()
    def evaluate(self, batch: tuple) -> tuple[float, float, float, float]:
        """PSNR and MS-SSIM of the shipped decoder and of the average on held-out crops (float32)."""
        x, idx, levels = batch
        codes = [self.vae.quantizer.lookup(i) for i in idx]
        masks = self.vae.masks_from_levels(levels)
        m = 16 * BORDER_REGIONS
        out = []
        for dec in (self.vae.decoder, self.average):  # both with the same token context around the crops
            y = dec(codes, masks)[..., m:-m, m:-m]
            y = ((y.float().clamp(-1, 1) + 1) * 127.5).round() / 255
            out += [-10 * math.log10(F.mse_loss(y, x).item()), ms_ssim(y, x).mean().item()]
        return tuple(out)  # type: ignore[return-value]

    def save(self) -> None:
        state = {
            "decoder": self.decoder.state_dict(),
            "average": self.average.state_dict(),
            "opt": self.opt.state_dict(),
            "step": self.step,
        }
        torch.save(state, self.ckpt.with_suffix(".tmp"))
        self.ckpt.with_suffix(".tmp").replace(self.ckpt)

    def export(self, path: Path, meta: dict) -> None:
        state = {k: v.half() if v.is_floating_point() else v for k, v in self.average.state_dict().items()}
        config = self.vae.cfg.to_dict() | {"border_regions": BORDER_REGIONS}
        torch.save({"config": config, "decoder_state_dict": state, "meta": meta}, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("../shared/data/train"))
    ap.add_argument("--val", type=Path, default=Path("../shared/data/train/bsds500/test"))
    ap.add_argument("--out", type=Path, default=Path("runs/finetune"))
    ap.add_argument("--models", default="dq,vqgan")
    ap.add_argument("--hours", type=float, default=8.0, help="stop after this much time in this run")
    ap.add_argument("--max-steps", type=int, default=100_000, help="stop when every model has taken this many")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--crop", type=int, default=224, help="px of picture per crop (plus its token margin)")
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--ema", type=float, default=0.998)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--limit", type=int, default=0, help="use only this many training images (smoke tests)")
    ap.add_argument("--synthetic", type=int, default=240, help="synthetic pictures of flat colours and shapes")
    ap.add_argument("--synthetic-share", type=float, default=0.1)
    ap.add_argument("--small-share", type=float, default=0.1, help="steps on crops of 16-64 px")
    ap.add_argument("--val-images", type=int, default=12)
    ap.add_argument("--log-every", type=int, default=50)
    ap.add_argument("--export-dir", type=Path, help="write decoder_<model>.pt (fp16) here and stop")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    models = args.models.split(",")
    autocast = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    runs = [Run(m, args.out, args.lr, args.ema, autocast) for m in models]
    if args.export_dir:
        args.export_dir.mkdir(parents=True, exist_ok=True)
        for run in runs:
            meta = {"finetuned_steps": run.step, "batch": args.batch, "crop": args.crop, "lr": args.lr, "ema": args.ema}
            run.export(args.export_dir / f"decoder_{run.name}.pt", meta)
            print(f"exported {args.export_dir / f'decoder_{run.name}.pt'} (step {run.step})")
        return

    paths = list_images(args.data)
    val_paths = sorted(args.val.glob("*.jpg"))[: args.val_images]
    if args.limit:
        paths = paths[: args.limit]
    data = {m: build_cache(m, paths, args.out / f"tokens_{m}.pt", args.seed) for m in models}
    synthetic = {m: build_synthetic(m, args.synthetic, args.out / f"synthetic_{m}.pt", args.seed) for m in models}
    held_out = {m: build_cache(m, val_paths, args.out / f"val_{m}.pt", args.seed) for m in models}
    val_batch = {m: crop_batch(held_out[m], 2 * len(held_out[m]), args.crop, random.Random(1)) for m in models}

    rng = random.Random(args.seed + runs[0].step)
    torch.manual_seed(args.seed + runs[0].step)
    log = (args.out / "log.txt").open("a")
    t0, last_ckpt = time.time(), time.time()
    sums = {m: [0.0, 0.0, 0.0, 0] for m in models}
    while time.time() - t0 < args.hours * 3600 and min(r.step for r in runs) < args.max_steps:
        for run in runs:
            if run.step > min(r.step for r in runs):
                continue  # a resumed run catches the others up first
            t = time.time()
            crop, batch = args.crop, args.batch
            if rng.random() < args.small_share:  # as many pixels, in crops of 16 to 64 px
                crop = rng.choice((16, 32, 64))  # and their margins: batches of about the same work
                batch = args.batch * ((args.crop + 32 * BORDER_REGIONS) // (crop + 32 * BORDER_REGIONS)) ** 2 // 2
            crops = crop_batch(data[run.name], batch, crop, rng, synthetic[run.name], args.synthetic_share)
            loss, psnr, msssim = run.train_step(*crops, args.warmup)
            s = sums[run.name]
            s[0], s[1], s[2], s[3] = s[0] + loss, s[1] + psnr, s[2] + msssim, s[3] + 1
            if run.step % args.log_every == 0 or run.step == 1:
                ship_psnr, ship_ms, avg_psnr, avg_ms = run.evaluate(val_batch[run.name])
                n = s[3]
                line = (
                    f"{time.strftime('%Y-%m-%d %H:%M:%S')} {run.name} step {run.step} "
                    f"train loss {s[0] / n:.3f} psnr {s[1] / n:.2f} msssim {s[2] / n:.4f} | "
                    f"held-out psnr {avg_psnr:.3f} (shipped {ship_psnr:.3f}) msssim {avg_ms:.4f} "
                    f"(shipped {ship_ms:.4f}) | {time.time() - t:.1f} s/step"
                )
                print(line, flush=True)
                log.write(line + "\n")
                log.flush()
                sums[run.name] = [0.0, 0.0, 0.0, 0]
        if time.time() - last_ckpt > 300:
            for run in runs:
                run.save()
            last_ckpt = time.time()
    for run in runs:
        run.save()


if __name__ == "__main__":
    main()
