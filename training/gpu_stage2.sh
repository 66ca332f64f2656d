#!/usr/bin/env bash
# Stage 2 on a lent GPU: priors for the DQ-VAE and the fixed-grid baseline side by side.
set -u
MINUTES=${MINUTES:-8}
OUT=${OUT:-runs/out}
W=${W:-.gpu/weights}
mkdir -p runs "$OUT"
export PYTHONUNBUFFERED=1
python3 -m training.train_prior --vae "$W/dqvae.pt" --data .gpu/data --out runs/prior_dq --minutes "$MINUTES" \
  --batch 16 --export runs/prior_dq.pt > "$OUT/prior_dq_log.txt" 2>&1 &
python3 -m training.train_prior --vae "$W/vqgan.pt" --data .gpu/data --out runs/prior_vq --minutes "$MINUTES" \
  --batch 16 --fixed-grid --export runs/prior_vq.pt > "$OUT/prior_vq_log.txt" 2>&1 &
wait
cp runs/prior_dq.pt runs/prior_vq.pt "$OUT/" 2>/dev/null
tail -n 5 "$OUT"/*_log.txt
