"""Build models from weight files ({"config", "state_dict", "meta"}; fp16 on disk, fp32 in memory)."""

from __future__ import annotations

import torch

from dqcodec.models.dqvae import DQVAE, DQVAEConfig
from dqcodec.models.prior import DQTransformer, PriorConfig


def float_state_dict(ck: dict) -> dict[str, torch.Tensor]:
    return {k: v.float() if v.is_floating_point() else v for k, v in ck["state_dict"].items()}


def dqvae_from_checkpoint(ck: dict) -> DQVAE:
    """The transform for coding: in eval mode, its parameters without gradients (training turns them on)."""
    model = DQVAE(DQVAEConfig.from_dict(ck["config"]))
    model.load_state_dict(float_state_dict(ck))
    return model.eval().requires_grad_(False)


def prior_from_checkpoint(ck: dict) -> DQTransformer:
    model = DQTransformer(PriorConfig.from_dict(ck["config"]))
    model.load_state_dict(float_state_dict(ck))
    return model.eval()


def replace_decoder(vae: DQVAE, ck: dict) -> None:
    """Put a decoder file's weights ({"config", "decoder_state_dict", "meta"}, fp16) into `vae`, with
    its border (DQVAEConfig.border_regions); the rest of its config must be the transform's."""
    config = DQVAEConfig.from_dict(ck["config"])
    if {**config.to_dict(), "border_regions": 0} != {**vae.cfg.to_dict(), "border_regions": 0}:
        raise ValueError("the decoder file was made for another transform")
    state = {k: v.float() if v.is_floating_point() else v for k, v in ck["decoder_state_dict"].items()}
    vae.decoder.load_state_dict(state)
    vae.decoder.requires_grad_(False)
    vae.cfg.border_regions = config.border_regions
