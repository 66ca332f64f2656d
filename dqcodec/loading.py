"""The shipped models in memory: the DQ-VAE transform (torch) and the integer prior."""

from __future__ import annotations

import io
from dataclasses import dataclass
from functools import cache

import torch

from dqcodec.distortion import DistortionEstimator, estimator_from_bytes
from dqcodec.models import DQVAE, dqvae_from_checkpoint
from dqcodec.models.intprior import IntPrior
from dqcodec.shipped import DEFAULT_MODEL, estimator_bytes, model_id, weight_bytes


@dataclass(frozen=True)
class LoadedModel:
    name: str
    vae: DQVAE
    prior: IntPrior
    model_id: bytes
    fixed_grid: bool
    distortion: DistortionEstimator | None  # the encoder's estimate of region distortions (none: it decodes)


@cache
def load_model(name: str = DEFAULT_MODEL) -> LoadedModel:
    """Load shipped weights: the transform (fp16 on disk, fp32 in memory; torch.load with
    weights_only=True), the integer prior (.npz of integer arrays, no pickle) and the encoder's
    distortion estimator."""
    vae_raw, prior_raw = weight_bytes(name)
    vae_ck = torch.load(io.BytesIO(vae_raw), map_location="cpu", weights_only=True)
    fixed = bool(vae_ck.get("meta", {}).get("fixed_grid", False))
    est_raw = estimator_bytes(name)
    distortion = estimator_from_bytes(est_raw) if est_raw is not None else None
    return LoadedModel(
        name, dqvae_from_checkpoint(vae_ck), IntPrior.from_bytes(prior_raw), model_id(name), fixed, distortion
    )
