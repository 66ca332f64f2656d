"""Build models from weight files ({"config", "state_dict", "meta"}; fp16 on disk, fp32 in memory)."""

from __future__ import annotations

import torch

from dqcodec.models.dqvae import DQVAE, DQVAEConfig
from dqcodec.models.prior import DQTransformer, PriorConfig


def float_state_dict(ck: dict) -> dict[str, torch.Tensor]:
    return {k: v.float() if v.is_floating_point() else v for k, v in ck["state_dict"].items()}


def dqvae_from_checkpoint(ck: dict) -> DQVAE:
    model = DQVAE(DQVAEConfig.from_dict(ck["config"]))
    model.load_state_dict(float_state_dict(ck))
    return model.eval()


def prior_from_checkpoint(ck: dict) -> DQTransformer:
    model = DQTransformer(PriorConfig.from_dict(ck["config"]))
    model.load_state_dict(float_state_dict(ck))
    return model.eval()
