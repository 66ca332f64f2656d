"""DQ-Transformer: the coarse-to-fine entropy model of a tile's tokens.

Two streams share one stack of transformer blocks (as in XLNet's two-stream attention):

- content slots carry what has been coded: shared content embedding (one table for the codes of
  every granularity, one small table for map levels) + per-granularity position embedding;
  a content slot of group g attends to content slots of groups <= g.
- query slots carry only *where* the next symbols sit (position + stream embedding); a query of
  group g attends to content slots of groups < g, and its output predicts the symbol there.

A learned BOS content slot (group -1) is visible to everything. Coding a tile runs one query pass
and one content pass per group, with the content keys/values of earlier groups cached.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from dqcodec.format.tokens import KIND_MAP, NUM_KINDS, NUM_POSITIONS
from dqcodec.models.dqvae import NUM_LEVELS


@dataclass
class PriorConfig:
    num_codes: int = 1024
    dim: int = 256
    layers: int = 4
    heads: int = 4
    mlp_ratio: int = 4

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> PriorConfig:
        return cls(**d)


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.ln2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim))

    def _split(self, t: torch.Tensor) -> torch.Tensor:
        b, n, d = t.shape
        return t.view(b, n, self.heads, d // self.heads).transpose(1, 2)

    def _merge(self, t: torch.Tensor) -> torch.Tensor:
        b, h, n, e = t.shape
        return t.transpose(1, 2).reshape(b, n, h * e)

    def qkv_of(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        q, k, v = self.qkv(self.ln1(h)).chunk(3, dim=-1)
        return self._split(q), self._split(k), self._split(v)

    def finish(
        self, h: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
    ) -> torch.Tensor:
        att = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        h = h + self.proj(self._merge(att))
        return h + self.mlp(self.ln2(h))


class DQTransformer(nn.Module):
    def __init__(self, cfg: PriorConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or PriorConfig()
        d = cfg.dim
        self.content_embed = nn.Embedding(cfg.num_codes, d)  # shared by every granularity
        self.level_embed = nn.Embedding(NUM_LEVELS, d)  # values of MAP tokens
        self.pos_embed = nn.Embedding(NUM_POSITIONS, d)  # one table per granularity, concatenated
        self.kind_embed = nn.Embedding(NUM_KINDS, d)
        self.query_embed = nn.Parameter(torch.zeros(d))
        self.bos = nn.Parameter(torch.zeros(d))
        self.blocks = nn.ModuleList(Block(d, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.layers))
        self.ln_out = nn.LayerNorm(d)
        self.map_head = nn.Linear(d, NUM_LEVELS)
        self.code_head = nn.Linear(d, cfg.num_codes)
        for emb in (self.content_embed, self.level_embed, self.pos_embed, self.kind_embed):
            nn.init.normal_(emb.weight, std=0.02)

    # ----- embeddings --------------------------------------------------------------------
    def embed_query(self, kind: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        return self.pos_embed(pos) + self.kind_embed(kind) + self.query_embed

    def embed_content(self, kind: torch.Tensor, pos: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        is_map = kind == KIND_MAP
        code = self.content_embed(torch.where(is_map, 0, value))
        lvl = self.level_embed(torch.where(is_map, value, 0).clamp(max=NUM_LEVELS - 1))
        val = torch.where(is_map[..., None], lvl, code)
        return self.pos_embed(pos) + self.kind_embed(kind) + val

    def logits(self, h: torch.Tensor, kind: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Map-level logits and code logits for query outputs h (either may go unused)."""
        h = self.ln_out(h)
        return self.map_head(h), self.code_head(h)

    # ----- training: all groups at once -----------------------------------------------------
    def forward(self, kind: torch.Tensor, pos: torch.Tensor, value: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
        """Query outputs (B, N, d) for padded token batches (B, N) with group numbers."""
        b = kind.shape[0]
        hc = torch.cat([self.bos.expand(b, 1, -1), self.embed_content(kind, pos, value)], 1)
        hq = self.embed_query(kind, pos)
        g_c = torch.cat([torch.full_like(group[:, :1], -1), group], 1)
        mask_cc = (g_c[:, None, :] <= g_c[:, :, None])[:, None]
        mask_qc = (g_c[:, None, :] < group[:, :, None])[:, None]
        for blk in self.blocks:
            qc, kc, vc = blk.qkv_of(hc)
            qq, _, _ = blk.qkv_of(hq)
            hq = blk.finish(hq, qq, kc, vc, mask_qc)
            hc = blk.finish(hc, qc, kc, vc, mask_cc)
        return hq

    def loss_bits(
        self, kind: torch.Tensor, pos: torch.Tensor, value: torch.Tensor, group: torch.Tensor, valid: torch.Tensor
    ) -> torch.Tensor:
        """Bits of every token (B, N) under teacher forcing; padding costs 0."""
        h = self.forward(kind, pos, value, group)
        map_logits, code_logits = self.logits(h, kind)
        is_map = kind == KIND_MAP
        nll_map = F.cross_entropy(map_logits.float().transpose(1, 2), value.clamp(max=NUM_LEVELS - 1), reduction="none")
        nll_code = F.cross_entropy(code_logits.float().transpose(1, 2), value, reduction="none")
        nll = torch.where(is_map, nll_map, nll_code)
        return nll * valid / torch.log(torch.tensor(2.0))

    # ----- coding: one group at a time ---------------------------------------------------------
    def new_cache(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Key/value cache per block, starting with the BOS slot."""
        cache = []
        h = self.bos[None, None, :]
        for blk in self.blocks:
            q, k, v = blk.qkv_of(h)
            cache.append((k, v))
            h = blk.finish(h, q, k, v, None)
        return cache

    def step(
        self,
        cache: list[tuple[torch.Tensor, torch.Tensor]],
        coded: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None,
        query: tuple[torch.Tensor, torch.Tensor],
    ) -> torch.Tensor:
        """One coding pass: add the group just coded (kind, pos, value) to the cache and predict
        the next group's tokens at (kind, pos); returns their query outputs (1, n, d).

        Both run in one forward: content slots and query slots attend to the cache and to the new
        content slots alone (query slots are never keys), which is what the training masks allow.
        """
        hq = self.embed_query(*query)[None]
        if coded is None:
            h, nc = hq, 0
        else:
            hc = self.embed_content(*coded)[None]
            h, nc = torch.cat([hc, hq], 1), hc.shape[1]
        for i, blk in enumerate(self.blocks):
            q, k, v = blk.qkv_of(h)
            if nc:
                cache[i] = (torch.cat([cache[i][0], k[:, :, :nc]], 2), torch.cat([cache[i][1], v[:, :, :nc]], 2))
            h = blk.finish(h, q, cache[i][0], cache[i][1], None)
        return h[:, nc:]
