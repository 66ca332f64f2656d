"""The networks: the DQ-VAE transform, the float DQ-Transformer prior (for training), their
building blocks, the transform on whole pictures, and the shipped weights that become them."""

from dqcodec.models.checkpoint import dqvae_from_checkpoint, float_state_dict, prior_from_checkpoint, replace_decoder
from dqcodec.models.dqvae import DQVAE, DQVAEConfig
from dqcodec.models.prior import DQTransformer, PriorConfig

__all__ = [
    "DQVAE",
    "DQVAEConfig",
    "DQTransformer",
    "PriorConfig",
    "dqvae_from_checkpoint",
    "float_state_dict",
    "prior_from_checkpoint",
    "replace_decoder",
]
