"""Stage 1: train the DQ-VAE (or, with --fixed-grid, the fixed-grid VQGAN-style baseline).

    python -m training.train_vae --data ../shared/data/train --out runs/dqvae --minutes 60

Runs on the time budget given (the learning rate follows a cosine over it), checkpoints every
few minutes into --out/ckpt.pt and resumes from there. --export writes the compact fp16 weights.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from dqcodec.metrics import ms_ssim
from dqcodec.models import DQVAE, DQVAEConfig, float_state_dict
from training.checkpoint import export_weights, load_state, save_state
from training.data import CropSampler, list_images, sample_shares
from training.discriminator import PatchDiscriminator, hinge_d_loss


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("../shared/data/train"))
    ap.add_argument("--out", type=Path, default=Path("runs/dqvae"))
    ap.add_argument("--minutes", type=float, default=60.0, help="training time budget")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--crop", type=int, default=256)
    ap.add_argument("--lr", type=float, default=4e-4)
    ap.add_argument("--fixed-grid", action="store_true", help="train the fixed-grid baseline (no DGC)")
    ap.add_argument("--adversarial", type=float, default=0.0, help="weight of the PatchGAN loss (0 = off)")
    ap.add_argument("--msssim-weight", type=float, default=0.02)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--export", type=Path, help="write fp16 weights here at the end")
    ap.add_argument("--init", type=Path, help="start from these exported weights")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tiny", action="store_true", help="a very small model (smoke tests)")
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    dev = torch.device(args.device)
    args.out.mkdir(parents=True, exist_ok=True)
    ckpt_path = args.out / "ckpt.pt"
    cfg = DQVAEConfig(channels=(16, 16, 32), enc_blocks=(1, 1, 1), dec_blocks=(1, 1, 1)) if args.tiny else DQVAEConfig()
    model = DQVAE(cfg).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.99), weight_decay=0.0)
    disc = PatchDiscriminator().to(dev) if args.adversarial > 0 else None
    opt_d = torch.optim.AdamW(disc.parameters(), lr=args.lr, betas=(0.5, 0.9)) if disc else None
    step, elapsed = load_state(ckpt_path, model, opt, dev)
    if step == 0 and args.init:
        ck = torch.load(args.init, map_location=dev, weights_only=True)
        model.load_state_dict(float_state_dict(ck))
        print(f"initialised from {args.init}")

    sampler = CropSampler(list_images(args.data), args.crop, dev, seed=args.seed + step)
    gen = torch.Generator().manual_seed(args.seed + 1 + step)
    budget_s = args.minutes * 60
    use_amp = dev.type == "cuda"
    model.train()
    t0 = time.time() - elapsed
    last_ckpt = time.time()
    log = []
    while True:
        elapsed = time.time() - t0
        if elapsed >= budget_s:
            break
        frac = elapsed / budget_s
        lr = args.lr * min(1.0, step / 200) * (0.5 * (1 + math.cos(math.pi * frac)) * 0.95 + 0.05)
        for g in opt.param_groups:
            g["lr"] = lr
        x = sampler.batch(args.batch)
        share_fine, share_medium = sample_shares(args.batch, dev, gen)
        fixed = torch.randint(0, 3, (args.batch,), generator=gen).to(dev) if args.fixed_grid else None
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_amp):
            out = model(x * 2 - 1, share_fine, share_medium, fixed)
        x_hat = (out["x_hat"].float() + 1) / 2
        mse = F.mse_loss(x_hat, x)
        msssim = ms_ssim(x_hat.clamp(0, 1), x).mean()
        loss = 1000 * mse + 1000 * args.msssim_weight * (1 - msssim) + out["commit"] + 10 * out["budget"]
        if disc is not None:
            loss = loss + args.adversarial * -disc(x_hat * 2 - 1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if disc is not None and opt_d is not None:
            d_loss = hinge_d_loss(disc(x * 2 - 1), disc(x_hat.detach() * 2 - 1))
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
        step += 1
        if step % 100 == 0 or step == 1:
            used = (model.quantizer.ema_count > 0.03).float().mean().item()
            psnr = -10 * math.log10(mse.item())
            line = (
                f"step {step} t {elapsed / 60:.1f}m lr {lr:.2e} psnr {psnr:.2f} msssim {msssim.item():.4f} "
                f"commit {float(out['commit'].detach()):.4f} budget {float(out['budget'].detach()):.4f} "
                f"codes_used {used:.2f}"
            )
            print(line, flush=True)
            log.append(line)
        if time.time() - last_ckpt > 120:
            save_state(ckpt_path, model, opt, step, elapsed)
            last_ckpt = time.time()
    save_state(ckpt_path, model, opt, step, elapsed)
    meta = {
        "steps": step,
        "minutes": elapsed / 60,
        "batch": args.batch,
        "crop": args.crop,
        "fixed_grid": bool(args.fixed_grid),
        "device": torch.cuda.get_device_name() if use_amp else "cpu",
    }
    if args.export:
        export_weights(model, model.cfg.to_dict(), meta, args.export)
        print(f"exported {args.export}")
    (args.out / "train_log.txt").open("a").write("\n".join(log) + "\n")


if __name__ == "__main__":
    main()
