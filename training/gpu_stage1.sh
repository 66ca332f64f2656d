#!/usr/bin/env bash
# Stage 1 on a lent GPU: the DQ-VAE and the fixed-grid baseline side by side, $MINUTES each.
set -u
MINUTES=${MINUTES:-8}
OUT=${OUT:-runs/out}
mkdir -p runs "$OUT"
nvidia-smi --query-gpu=name,memory.used --format=csv
export PYTHONUNBUFFERED=1
python3 -m training.train_vae --data .gpu/data --out runs/dqvae --minutes "$MINUTES" --batch 24 \
  --export runs/dqvae.pt > "$OUT/dqvae_log.txt" 2>&1 &
python3 -m training.train_vae --data .gpu/data --out runs/vqgan --minutes "$MINUTES" --batch 24 --fixed-grid \
  --export runs/vqgan.pt > "$OUT/vqgan_log.txt" 2>&1 &
wait
cp runs/dqvae.pt runs/vqgan.pt "$OUT/" 2>/dev/null
tail -n 4 "$OUT"/*_log.txt
