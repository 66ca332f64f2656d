"""Stage 2: train the DQ-Transformer prior on tokens of a frozen stage-1 model.

    python -m training.train_prior --vae dqcodec/weights/dqvae.pt --out runs/prior --minutes 60

Tokens are made on the fly from random 256x256 crops at random granularity shares, so the prior
sees the same distribution the codec produces. Group schedules are drawn at random per stream
(half the time the codec's default), so one model serves every schedule, the fully sequential
one included. The loss is the rate itself: bits per pixel of the tile.

Quantisation-aware fine-tuning of a trained prior into the integer prior that coding uses:

    python -m training.train_prior --vae dqcodec/weights/dqvae.pt --init training/weights/prior_dq_float.pt \
        --qat --out runs/qat_dq --minutes 120 --lr 3e-5 --export-int dqcodec/weights/prior_dq.npz

--val scores a fixed set of BSDS500 test tiles (never Kodak) with the exact integer model at the
start and the end; if the end is no better, the start's weights are exported instead.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch

from dqcodec.format.tokens import KIND_GRID, MAX_REGIONS, NUM_KINDS, Schedule, batch_tile_tokens
from dqcodec.models import DQVAE, DQTransformer, PriorConfig, dqvae_from_checkpoint, float_state_dict
from dqcodec.models.dqvae import rank_levels
from training.checkpoint import export_weights, load_state, save_state
from training.data import CropSampler, list_images, sample_shares
from training.qat import QATPrior, export_integer, validation_bits

TILE = 16 * MAX_REGIONS


def load_vae(path: Path, dev: torch.device) -> DQVAE:
    return dqvae_from_checkpoint(torch.load(path, map_location="cpu", weights_only=True)).to(dev)


def sample_periods(n: int, gen: torch.Generator, default: Schedule) -> torch.Tensor:
    """Group periods (n, 4): the default schedule half the time, else log-uniform per stream."""
    max_log = torch.tensor([int(math.log2(g)) for g in KIND_GRID])
    logs = (torch.rand(n, NUM_KINDS, generator=gen) * (max_log + 1)).floor().long()
    periods = 2**logs
    use_default = torch.rand(n, generator=gen) < 0.5
    periods[use_default] = torch.tensor(default.periods)
    return periods


@torch.no_grad()
def make_tokens(vae: DQVAE, x: torch.Tensor, gen: torch.Generator, fixed_grid: bool):
    b = x.shape[0]
    latents, score = vae.encoder(x * 2 - 1)
    if fixed_grid:
        lv = torch.randint(0, 3, (b,), generator=gen).to(x.device)
        levels = lv[:, None, None].expand(-1, *score.shape[1:]).contiguous()
    else:
        share_fine, share_medium = sample_shares(b, x.device, gen)
        levels = rank_levels(score.float(), share_fine, share_medium)
    idx = tuple(vae.quantizer.indices(z) for z in latents)
    return levels, idx


def val_tokens(vae: DQVAE, root: Path, n: int, fixed_grid: bool, dev: torch.device) -> list:
    """A fixed set of n validation tiles (levels, index maps) at spread granularity shares."""
    sampler = CropSampler(list_images(root, exclude=("kodak",)), TILE, dev, seed=1234)
    gen = torch.Generator().manual_seed(1234)
    out = []
    for _ in range(-(-n // 8)):
        levels, idx = make_tokens(vae, sampler.batch(8), gen, fixed_grid)
        out += [(levels[i].cpu(), tuple(t[i].cpu() for t in idx)) for i in range(len(levels))]
    return out[:n]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vae", type=Path, required=True)
    ap.add_argument("--data", type=Path, default=Path("../shared/data/train"))
    ap.add_argument("--out", type=Path, default=Path("runs/prior"))
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--fixed-grid", action="store_true", help="tokens of the fixed-grid baseline")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--export", type=Path)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--init", type=Path, help="start from these exported float weights")
    ap.add_argument("--qat", action="store_true", help="quantisation-aware training of the integer prior")
    ap.add_argument("--export-int", type=Path, help="write the integer prior (.npz) here at the end (with --qat)")
    ap.add_argument("--val", type=Path, default=Path("../shared/data/train/bsds500/test"))
    ap.add_argument("--val-tiles", type=int, default=48, help="BSDS500 test tiles scored by the integer model")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--log-every", type=int, default=100, help="steps between log lines")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(args.seed)
    dev = torch.device(args.device)
    args.out.mkdir(parents=True, exist_ok=True)
    ckpt_path = args.out / "ckpt.pt"
    vae = load_vae(args.vae, dev)
    cfg = PriorConfig(num_codes=vae.cfg.num_codes)
    if args.tiny:
        cfg = PriorConfig(num_codes=vae.cfg.num_codes, dim=32, layers=1, heads=2)
    float_prior = DQTransformer(cfg).to(dev)
    if args.init:
        ck = torch.load(args.init, map_location="cpu", weights_only=True)
        float_prior = DQTransformer(PriorConfig.from_dict(ck["config"])).to(dev)
        float_prior.load_state_dict(float_state_dict(ck))
        cfg = float_prior.cfg
    prior: DQTransformer | QATPrior = QATPrior(float_prior) if args.qat else float_prior
    opt = torch.optim.AdamW(prior.parameters(), lr=args.lr, betas=(0.9, 0.98), weight_decay=0.01)
    step, elapsed = load_state(ckpt_path, prior, opt, dev)
    sampler = CropSampler(list_images(args.data), TILE, dev, seed=args.seed + step)
    gen = torch.Generator().manual_seed(args.seed + 7 + step)
    default = Schedule()
    log: list[str] = []

    def note(line: str) -> None:
        print(line, flush=True)
        log.append(line)

    val = None
    if isinstance(prior, QATPrior):
        if step == 0:
            calib = []
            for _ in range(4):
                levels, idx = make_tokens(vae, sampler.batch(args.batch), gen, args.fixed_grid)
                tok, valid = batch_tile_tokens(levels, idx, sample_periods(args.batch, gen, default).to(dev))
                calib.append((tok.kind, tok.pos, tok.value, tok.group, valid.float()))
            prior.calibrate(calib)
        if args.val_tiles:
            val = val_tokens(vae, args.val, args.val_tiles, args.fixed_grid, dev)
            start_meta = {"steps": step, "qat_from": str(args.init) if args.init else None, "fine_tuned": step > 0}
            start_raw = export_integer(prior, start_meta)
            start_bits = validation_bits(start_raw, val)
            note(f"validation at step {step}: integer prior {start_bits / len(val) / TILE**2:.5f} bpp")
    budget_s = args.minutes * 60
    use_amp = dev.type == "cuda"
    t0 = time.time() - elapsed
    last_ckpt = time.time()
    while (elapsed := time.time() - t0) < budget_s:
        frac = elapsed / budget_s
        warmup = 20 if args.init else 300
        lr = args.lr * min(1.0, (step + 1) / warmup) * (0.5 * (1 + math.cos(math.pi * frac)) * 0.95 + 0.05)
        for g in opt.param_groups:
            g["lr"] = lr
        x = sampler.batch(args.batch)
        levels, idx = make_tokens(vae, x, gen, args.fixed_grid)
        periods = sample_periods(args.batch, gen, default).to(dev)
        tok, valid = batch_tile_tokens(levels, idx, periods)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_amp):
            bits = prior.loss_bits(tok.kind, tok.pos, tok.value, tok.group, valid.float())
        bpp = bits.sum() / (args.batch * TILE * TILE)
        opt.zero_grad(set_to_none=True)
        bpp.backward()
        torch.nn.utils.clip_grad_norm_(prior.parameters(), 1.0)
        opt.step()
        step += 1
        if step % args.log_every == 0 or step == 1:
            with torch.no_grad():
                per_kind = []
                for k in range(NUM_KINDS):
                    sel = (tok.kind == k) & valid
                    per_kind.append(f"{bits[sel].mean().item():.2f}" if sel.any() else "-")
            line = f"step {step} t {elapsed / 60:.1f}m lr {lr:.2e} bpp {bpp.item():.4f}"
            note(line + f" bits/token map,c0,c1,c2 {' '.join(per_kind)}")
        if time.time() - last_ckpt > 120:
            save_state(ckpt_path, prior, opt, step, elapsed)
            last_ckpt = time.time()
    save_state(ckpt_path, prior, opt, step, elapsed)
    meta = {"steps": step, "minutes": elapsed / 60, "batch": args.batch, "fixed_grid": bool(args.fixed_grid)}
    if args.export:
        export_weights(float_prior, cfg.to_dict(), meta, args.export)
        print(f"exported {args.export}")
    if isinstance(prior, QATPrior) and args.export_int:
        raw = export_integer(prior, {**meta, "qat_from": str(args.init) if args.init else None, "fine_tuned": True})
        if val is not None:
            end_bits = validation_bits(raw, val)
            note(f"validation at step {step}: integer prior {end_bits / len(val) / TILE**2:.5f} bpp")
            if end_bits >= start_bits:
                note("the validation rate did not improve: exporting the start's weights")
                raw = start_raw
        args.export_int.write_bytes(raw)
        note(f"exported {args.export_int}")
    (args.out / "train_log.txt").open("a").write("\n".join(log) + "\n")


if __name__ == "__main__":
    main()
