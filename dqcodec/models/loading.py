"""The shipped models in memory: the DQ-VAE transform (torch) and the integer prior."""

from __future__ import annotations

import io
from dataclasses import dataclass
from functools import cache

import torch

from dqcodec.format.intprior import IntPrior
from dqcodec.models import DQVAE, dqvae_from_checkpoint, replace_decoder
from dqcodec.models.shipped import DEFAULT_MODEL, model_id, weight_bytes


@dataclass(frozen=True)
class LoadedModel:
    name: str
    vae: DQVAE
    prior: IntPrior
    model_id: bytes
    fixed_grid: bool


@cache
def load_model(name: str = DEFAULT_MODEL) -> LoadedModel:
    """Load shipped weights: the transform (fp16 on disk, fp32 in memory; torch.load with
    weights_only=True), its decoder replaced where the model has a decoder file, and the integer
    prior (.npz of integer arrays, no pickle)."""
    vae_raw, prior_raw, decoder_raw = weight_bytes(name)
    vae_ck = torch.load(io.BytesIO(vae_raw), map_location="cpu", weights_only=True)
    fixed = bool(vae_ck.get("meta", {}).get("fixed_grid", False))
    vae = dqvae_from_checkpoint(vae_ck)
    if decoder_raw is not None:  # a decoder trained further over the same tokens
        replace_decoder(vae, torch.load(io.BytesIO(decoder_raw), map_location="cpu", weights_only=True))
    return LoadedModel(name, vae, IntPrior.from_bytes(prior_raw), model_id(name), fixed)
