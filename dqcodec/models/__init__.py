from dqcodec.models.dqvae import DQVAE, DQVAEConfig
from dqcodec.models.prior import DQTransformer, PriorConfig

__all__ = ["DQVAE", "DQVAEConfig", "DQTransformer", "PriorConfig"]
