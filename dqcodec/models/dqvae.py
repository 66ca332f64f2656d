"""DQ-VAE: the codec's analysis/synthesis transform with dynamic granularity.

Every 16x16 region of the image is coded at one of three granularities:

    level 0  coarse  one code  (stride 16)
    level 1  medium  2x2 codes (stride 8)
    level 2  fine    4x4 codes (stride 4)

All levels draw from one shared codebook. The Dynamic Grained Coding (DGC) gate scores every
region; the caller chooses the share of regions coded medium and fine, and regions are ranked by
score (highest score = finest level). In training the hard, rank-based decision is relaxed with a
binary Gumbel-Softmax (straight-through) around the rank thresholds, and a budget loss keeps the
relaxed shares at the targets.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from dqcodec.models.layers import Downsample, Upsample, conv3x3, res_stack
from dqcodec.models.quantize import VectorQuantizer

NUM_LEVELS = 3
REGION = 16  # pixels per region side
LEVEL_STRIDES = (16, 8, 4)


@dataclass
class DQVAEConfig:
    channels: tuple[int, int, int] = (96, 128, 192)  # feature channels at strides 4, 8, 16
    enc_blocks: tuple[int, int, int] = (2, 2, 2)
    dec_blocks: tuple[int, int, int] = (2, 2, 3)
    code_dim: int = 16
    num_codes: int = 1024
    dec_in: int = 32  # channels of the dense code map the decoder reads
    gumbel_tau: float = 0.5
    # regions of token context the decoder adds around a picture, its edge tokens repeated (0: none,
    # the convolutions' zero padding; a decoder trained with context draws the picture's edges better)
    border_regions: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> DQVAEConfig:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


@dataclass
class Tokens:
    """Discrete representation of an image: granularity map and code indices per level.

    levels: (B, h, w) region levels; idx[l]: (B, h*s, w*s) code indices with s = 1, 2, 4 for
    levels 0, 1, 2 (entries outside regions of level l are meaningless and never coded).
    """

    levels: torch.Tensor
    idx: tuple[torch.Tensor, torch.Tensor, torch.Tensor]


class Encoder(nn.Module):
    def __init__(self, cfg: DQVAEConfig) -> None:
        super().__init__()
        c4, c8, c16 = cfg.channels
        b4, b8, b16 = cfg.enc_blocks
        self.stem = nn.Sequential(nn.PixelUnshuffle(4), conv3x3(48, c4))
        self.blocks4 = res_stack(c4, b4)
        self.down8 = Downsample(c4, c8)
        self.blocks8 = res_stack(c8, b8)
        self.down16 = Downsample(c8, c16)
        self.blocks16 = res_stack(c16, b16)
        self.to_code = nn.ModuleList([nn.Conv2d(c, cfg.code_dim, 1) for c in (c16, c8, c4)])
        self.gate = nn.Sequential(conv3x3(c16, 64), nn.SiLU(), nn.Conv2d(64, 1, 1))

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """x in [-1, 1] -> (latents per level [stride 16, 8, 4], gate score (B, h, w))."""
        h4 = self.blocks4(self.stem(x))
        h8 = self.blocks8(self.down8(h4))
        h16 = self.blocks16(self.down16(h8))
        latents = [proj(h) for proj, h in zip(self.to_code, (h16, h8, h4))]
        return latents, self.gate(h16)[:, 0]


class Decoder(nn.Module):
    def __init__(self, cfg: DQVAEConfig) -> None:
        super().__init__()
        c4, c8, c16 = cfg.channels
        b4, b8, b16 = cfg.dec_blocks
        d = cfg.dec_in
        self.from_code = nn.ModuleList([nn.Conv2d(cfg.code_dim, d, 1) for _ in range(NUM_LEVELS)])
        self.level_embed = nn.Parameter(torch.randn(NUM_LEVELS, d) * 0.1)
        self.in16 = nn.Conv2d(16 * d, c16, 1)
        self.blocks16 = res_stack(c16, b16)
        self.up8 = Upsample(c16, c8)
        self.in8 = nn.Conv2d(4 * d, c8, 1)
        self.blocks8 = res_stack(c8, b8)
        self.up4 = Upsample(c8, c4)
        self.in4 = nn.Conv2d(d, c4, 1)
        self.blocks4 = res_stack(c4, b4)
        self.to_rgb = nn.Sequential(nn.SiLU(), conv3x3(c4, 48), nn.PixelShuffle(4))
        # of the feature maps: channels-last in the bfloat16 copy (transform.bfloat16_decoder)
        self.memory_format = torch.contiguous_format

    def code_map(self, codes: list[torch.Tensor], masks: torch.Tensor) -> torch.Tensor:
        """Dense stride-4 map: each position carries its own level's code and level embedding."""
        out = 0
        for level, (proj, q) in enumerate(zip(self.from_code, codes)):
            m = masks[:, level : level + 1]
            feat = proj(q) + self.level_embed[level][None, :, None, None]
            feat = F.interpolate(feat, scale_factor=LEVEL_STRIDES[level] // 4, mode="nearest")
            out = out + feat * F.interpolate(m, scale_factor=4, mode="nearest")
        return out

    def forward(self, codes: list[torch.Tensor], masks: torch.Tensor) -> torch.Tensor:
        d4 = self.code_map(codes, masks).contiguous(memory_format=self.memory_format)
        h = self.blocks16(self.in16(F.pixel_unshuffle(d4, 4)))
        h = self.blocks8(self.up8(h) + self.in8(F.pixel_unshuffle(d4, 2)))
        h = self.blocks4(self.up4(h) + self.in4(d4))
        return self.to_rgb(h)


def rank_levels(score: torch.Tensor, share_fine: torch.Tensor, share_medium: torch.Tensor) -> torch.Tensor:
    """Hard granularity map: the top `share_fine` regions by score are fine, the next
    `share_medium` medium, the rest coarse. score (B, h, w); shares (B,) in [0, 1]."""
    b, h, w = score.shape
    n = h * w
    order = torch.argsort(score.reshape(b, n), dim=1, descending=True, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(n, device=score.device).expand(b, n))
    n_fine = torch.round(share_fine * n).long().clamp(0, n)[:, None]
    n_up = torch.round((share_fine + share_medium).clamp(max=1) * n).long().clamp(0, n)[:, None]
    levels = (rank < n_up).long() + (rank < n_fine).long()
    return levels.view(b, h, w)


def _rank_threshold(s: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """Score half-way between the count-th and (count+1)-th largest of each row of s (B, n)."""
    srt = torch.sort(s, dim=1, descending=True).values
    n = s.shape[1]
    pad_hi = srt[:, :1] + 1.0
    pad_lo = srt[:, -1:] - 1.0
    ext = torch.cat([pad_hi, srt, pad_lo], 1)  # ext[k] is the k-th largest, 1-based
    c = count.clamp(0, n)[:, None]
    return 0.5 * (ext.gather(1, c) + ext.gather(1, c + 1))[:, 0]


class DQVAE(nn.Module):
    def __init__(self, cfg: DQVAEConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or DQVAEConfig()
        self.encoder = Encoder(self.cfg)
        self.decoder = Decoder(self.cfg)
        self.quantizer = VectorQuantizer(self.cfg.num_codes, self.cfg.code_dim)

    # ----- training -----------------------------------------------------------------------
    def relaxed_masks(
        self, score: torch.Tensor, share_fine: torch.Tensor, share_medium: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Straight-through level masks (B, 3, h, w) and the budget loss.

        Forward values are the hard rank-based masks of noisy scores; gradients are those of a
        binary Gumbel-Softmax (logistic noise, temperature tau) around the rank thresholds.
        """
        b, h, w = score.shape
        n = h * w
        s = score.reshape(b, n)
        s = (s - s.mean(1, keepdim=True)) / (s.std(1, keepdim=True) + 1e-4)
        u = torch.rand_like(s).clamp(1e-6, 1 - 1e-6)
        s = s + torch.log(u) - torch.log1p(-u)
        n_fine = torch.round(share_fine * n).long()
        n_up = torch.round((share_fine + share_medium).clamp(max=1) * n).long()
        levels = rank_levels(s.view(b, h, w).detach(), share_fine, share_medium).reshape(b, n)
        tau = self.cfg.gumbel_tau
        relaxed, budget = [], s.new_zeros(())
        for count, hard in ((n_up, levels >= 1), (n_fine, levels == 2)):
            soft = torch.sigmoid((s - _rank_threshold(s.detach(), count)[:, None]) / tau)
            relaxed.append(hard.float() + soft - soft.detach())
            budget = budget + (soft.mean(1) - count / n).pow(2).mean()
        up, fine = relaxed
        masks = torch.stack([1 - up, up - fine, fine], 1).view(b, NUM_LEVELS, h, w)
        return masks, budget

    def forward(
        self,
        x: torch.Tensor,
        share_fine: torch.Tensor,
        share_medium: torch.Tensor,
        fixed_levels: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Training pass. x in [-1, 1]. With `fixed_levels` (B,) every region of image i is
        coded at level fixed_levels[i] and the gate is unused (the fixed-grid baseline)."""
        latents, score = self.encoder(x)
        if fixed_levels is None:
            masks, budget = self.relaxed_masks(score, share_fine, share_medium)
        else:
            masks = F.one_hot(fixed_levels, NUM_LEVELS).float()[:, :, None, None].expand(-1, -1, *score.shape[1:])
            budget = score.sum() * 0.0
        codes, commit = [], 0.0
        for level, z in enumerate(latents):
            weight = masks[:, level].detach()
            scale = LEVEL_STRIDES[0] // LEVEL_STRIDES[level]
            weight = F.interpolate(weight[:, None], scale_factor=scale, mode="nearest")[:, 0]
            q, _, c = self.quantizer(z, weight)
            codes.append(q)
            commit = commit + c
        x_hat = self.decoder(codes, masks)
        return {"x_hat": x_hat, "commit": commit, "budget": budget, "masks": masks}

    # ----- codec --------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, x: torch.Tensor, share_fine: float, share_medium: float) -> Tokens:
        """x (B, 3, H, W) in [-1, 1], H and W multiples of 16 -> tokens."""
        latents, score = self.encoder(x)
        b = x.shape[0]
        levels = rank_levels(
            score.float(),
            torch.full((b,), float(share_fine), device=x.device),
            torch.full((b,), float(share_medium), device=x.device),
        )
        idx = tuple(self.quantizer.indices(z) for z in latents)
        return Tokens(levels, idx)  # type: ignore[arg-type]

    def masks_from_levels(self, levels: torch.Tensor) -> torch.Tensor:
        return F.one_hot(levels, NUM_LEVELS).permute(0, 3, 1, 2).float()

    @torch.no_grad()
    def decode(self, tokens: Tokens, decoder: Decoder | None = None) -> torch.Tensor:
        """Tokens -> image in [-1, 1] (unclamped), by `decoder` if given (a copy of self.decoder
        in another precision), else self.decoder."""
        codes = [self.quantizer.lookup(i) for i in tokens.idx]
        return (decoder or self.decoder)(codes, self.masks_from_levels(tokens.levels))
