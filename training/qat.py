"""Quantisation-aware training of the DQ-Transformer prior, and its export to integer weights.

`QATPrior` wraps a float `DQTransformer` and simulates, in float, the roundings of the integer
prior (`dqcodec.format.intprior`): 7-bit weights per output channel, 8-bit activations at every
matrix product's input (LayerNorm outputs, queries, values, attention outputs, GELU outputs) and
7-bit keys, with learned scales (LSQ, Esser et al. 2020), and the GELU table's input grid.
`export_integer` turns it into the integer arrays that `IntPrior` loads; what it does not
simulate (the integer LayerNorm's reciprocal square root table, the exponent polynomial and
reciprocal table of the softmax, the 2^-14 residual grid) moves the rate by hundredths of a
percent, which `benchmarks/prior_bits.py` measures on the integer model itself.
"""

from __future__ import annotations

import io
import json
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dqcodec.format.coding import tile_bits
from dqcodec.format.intmath import ACT_MAX, ATTN_EXP_MAX, GELU_HALF, KEY_MAX, LOG2_FRAC, RESID_FRAC, WEIGHT_MAX
from dqcodec.format.intprior import FORMAT_TAG, IntPrior
from dqcodec.format.tokens import KIND_MAP, Schedule
from dqcodec.models.dqvae import NUM_LEVELS, Tokens
from dqcodec.models.prior import Block, DQTransformer

LN_EPS_INT = round(1e-5 * 2 ** (2 * RESID_FRAC))  # torch's LayerNorm eps in residual units squared
ACT_POINTS = ("a1", "q", "k", "v", "o", "a2", "g")  # quantised activations of a block


def _round_ste(x: torch.Tensor) -> torch.Tensor:
    return x + (x.round() - x).detach()


def _grad_scale(x: torch.Tensor, g: float) -> torch.Tensor:
    return (x - x * g).detach() + x * g


class ActQuant(nn.Module):
    """Symmetric fake quantisation to -q..q steps of a learned scale (LSQ)."""

    def __init__(self, levels: int = ACT_MAX) -> None:
        super().__init__()
        self.levels = levels
        self.scale = nn.Parameter(torch.tensor(1.0))
        self.enabled = True

    def step(self) -> torch.Tensor:
        return self.scale.abs() + 1e-8

    def forward(self, x: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
        if not self.enabled:
            return x
        s = self.step() if scale is None else scale
        s = _grad_scale(s, 1.0 / math.sqrt(x.numel() * self.levels))
        return _round_ste((x / s).clamp(-self.levels, self.levels)) * s


def quant_weight(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """7-bit fake quantisation per output channel (rows): (fake-quantised w, scales)."""
    s = (w.detach().abs().amax(1, keepdim=True) / WEIGHT_MAX).clamp_min(1e-12)
    return _round_ste(w / s).clamp(-WEIGHT_MAX, WEIGHT_MAX) * s, s[:, 0]


class QATPrior(nn.Module):
    def __init__(self, prior: DQTransformer) -> None:
        super().__init__()
        self.prior = prior
        self.acts = nn.ModuleList(
            nn.ModuleDict({n: ActQuant(KEY_MAX if n == "k" else ACT_MAX) for n in ACT_POINTS}) for _ in prior.blocks
        )
        self.act_out = ActQuant()
        self.quant_weights = True

    def set_quant(self, on: bool) -> None:
        self.quant_weights = on
        for m in self.modules():
            if isinstance(m, ActQuant):
                m.enabled = on

    def _linear(self, x: torch.Tensor, layer: nn.Linear) -> torch.Tensor:
        w = quant_weight(layer.weight)[0] if self.quant_weights else layer.weight
        return F.linear(x, w, layer.bias)

    def _qkv(self, blk: Block, qz: nn.ModuleDict, h: torch.Tensor) -> tuple[torch.Tensor, ...]:
        q, k, v = self._linear(qz["a1"](blk.ln1(h)), blk.qkv).chunk(3, dim=-1)
        return blk._split(qz["q"](q)), blk._split(qz["k"](k)), blk._split(qz["v"](v))

    def _finish(
        self, blk: Block, qz: nn.ModuleDict, h: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask
    ) -> torch.Tensor:
        att = qz["o"](blk._merge(F.scaled_dot_product_attention(q, k, v, attn_mask=mask)))
        h = h + self._linear(att, blk.proj)
        u = self._linear(qz["a2"](blk.ln2(h)), blk.mlp[0])
        if qz["g"].enabled:  # the GELU table's input grid: half the output step, 2048 entries
            step = qz["g"].step() / 2
            u = _round_ste((u / step).clamp(-GELU_HALF, GELU_HALF - 1)) * step
        return h + self._linear(qz["g"](F.gelu(u)), blk.mlp[2])

    def forward(self, kind: torch.Tensor, pos: torch.Tensor, value: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
        p = self.prior
        b = kind.shape[0]
        hc = torch.cat([p.bos.expand(b, 1, -1), p.embed_content(kind, pos, value)], 1)
        hq = p.embed_query(kind, pos)
        g_c = torch.cat([torch.full_like(group[:, :1], -1), group], 1)
        mask_cc = (g_c[:, None, :] <= g_c[:, :, None])[:, None]
        mask_qc = (g_c[:, None, :] < group[:, :, None])[:, None]
        for blk, qz in zip(p.blocks, self.acts):
            qc, kc, vc = self._qkv(blk, qz, hc)
            qq = self._qkv(blk, qz, hq)[0]
            hq = self._finish(blk, qz, hq, qq, kc, vc, mask_qc)
            hc = self._finish(blk, qz, hc, qc, kc, vc, mask_cc)
        return hq

    def loss_bits(
        self, kind: torch.Tensor, pos: torch.Tensor, value: torch.Tensor, group: torch.Tensor, valid: torch.Tensor
    ) -> torch.Tensor:
        """Bits of every token (B, N) under teacher forcing; padding costs 0."""
        p = self.prior
        h = self.act_out(p.ln_out(self.forward(kind, pos, value, group)))
        map_logits, code_logits = self._linear(h, p.map_head), self._linear(h, p.code_head)
        is_map = kind == KIND_MAP
        nll_map = F.cross_entropy(map_logits.float().transpose(1, 2), value.clamp(max=NUM_LEVELS - 1), reduction="none")
        nll_code = F.cross_entropy(code_logits.float().transpose(1, 2), value, reduction="none")
        return torch.where(is_map, nll_map, nll_code) * valid / math.log(2.0)

    @torch.no_grad()
    def calibrate(self, batches: list[tuple[torch.Tensor, ...]], quantile: float = 0.9999) -> None:
        """Initial activation scales: the `quantile` of |x| over the batches, at 127 steps."""
        stats: dict[ActQuant, list[torch.Tensor]] = {}

        def observe(m: ActQuant, x: torch.Tensor) -> torch.Tensor:
            flat = x.detach().abs().flatten().float()
            stats.setdefault(m, []).append(flat[torch.randperm(len(flat))[:200_000]])
            return x

        quants = [m for m in self.modules() if isinstance(m, ActQuant)]
        originals = {m: m.forward for m in quants}
        self.set_quant(False)
        for m in quants:
            m.forward = lambda x, scale=None, m=m: observe(m, x)  # type: ignore[method-assign]
            m.enabled = True
        try:
            for kind, pos, value, group, valid in batches:
                self.loss_bits(kind, pos, value, group, valid)
        finally:
            for m in quants:
                m.forward = originals[m]  # type: ignore[method-assign]
            self.set_quant(True)
        for m, xs in stats.items():
            m.scale.fill_(float(torch.quantile(torch.cat(xs), quantile)) / m.levels)


# ----- export to the integer prior ----------------------------------------------------------
def _fixed(real: np.ndarray, limit_bits: int, max_shift: int = 62) -> tuple[np.ndarray, int]:
    """Integers m and a shift S with m / 2^S ~ real, |m| < 2^limit_bits, S as large as that allows."""
    top = float(np.abs(real).max())
    shift = max_shift if top == 0 else min(max_shift, limit_bits - 1 - math.floor(math.log2(top)))
    m = np.round(real * 2.0**shift).astype(np.int64)
    while np.abs(m).max() >= 1 << limit_bits:
        shift -= 1
        m = np.round(real * 2.0**shift).astype(np.int64)
    return m, shift


def _linear_arrays(layer: nn.Linear, in_scale: float, out_scale: np.ndarray) -> dict[str, np.ndarray]:
    """7-bit weights and the requantisation (acc * mul + add) >> shift to `out_scale` units."""
    _, w_scale = quant_weight(layer.weight.detach().double())
    w = layer.weight.detach().double()
    w_int = torch.round(w / w_scale[:, None]).clamp(-WEIGHT_MAX, WEIGHT_MAX).numpy().astype(np.int8)
    real = in_scale * w_scale.numpy() / out_scale
    mul, shift = _fixed(real, 23, max_shift=40)
    bias = layer.bias.detach().double().numpy() / out_scale
    add = np.round(bias * 2.0**shift).astype(np.int64) + (1 << (shift - 1))
    return {"weight": w_int, "mul": mul, "add": add, "shift": np.array(shift)}


def _norm_arrays(ln: nn.LayerNorm, out_scale: float) -> dict[str, np.ndarray]:
    g = ln.weight.detach().double().numpy() / out_scale
    b = ln.bias.detach().double().numpy() / out_scale
    return {"gain": np.round(g * 2**12).astype(np.int32), "bias": np.round(b * 2**24).astype(np.int64) + (1 << 23)}


def _embedding(w: torch.Tensor, shift: int) -> np.ndarray:
    return np.round(w.detach().double().numpy() * 2.0 ** (RESID_FRAC - shift)).astype(np.int16)


@torch.no_grad()
def export_integer(qat: QATPrior, meta: dict) -> bytes:
    """The integer prior's .npz bytes."""
    p = qat.prior
    cfg = p.cfg
    d = cfg.dim
    emb_params = (p.content_embed.weight, p.level_embed.weight, p.pos_embed.weight, p.kind_embed.weight)
    top = max(float(t.abs().max()) for t in (*emb_params, p.query_embed, p.bos))
    embed_shift = max(0, math.ceil(math.log2((top * 2**RESID_FRAC + 1) / (2**15 - 1))))
    config = {
        "format": FORMAT_TAG,
        "num_codes": cfg.num_codes,
        "num_levels": NUM_LEVELS,
        "dim": d,
        "layers": cfg.layers,
        "heads": cfg.heads,
        "mlp_ratio": cfg.mlp_ratio,
        "embed_shift": embed_shift,
        "ln_eps": LN_EPS_INT,
    }
    out: dict[str, np.ndarray] = {
        "config": np.frombuffer(json.dumps(config).encode(), dtype=np.uint8),
        "meta": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
        "content_embed": _embedding(p.content_embed.weight, embed_shift),
        "level_embed": _embedding(p.level_embed.weight, embed_shift),
        "pos_embed": _embedding(p.pos_embed.weight, embed_shift),
        "kind_embed": _embedding(p.kind_embed.weight, embed_shift),
        "query_embed": _embedding(p.query_embed, embed_shift),
        "bos": _embedding(p.bos, embed_shift),
    }
    resid = 2.0**-RESID_FRAC
    log2e_units = math.log2(math.e) * 2**LOG2_FRAC  # logit units per nat
    for i, (blk, qz) in enumerate(zip(p.blocks, qat.acts)):
        s = {n: float(qz[n].step()) for n in ACT_POINTS}
        s_u = s["g"] / 2
        pre = f"blocks.{i}."
        qkv_out = np.concatenate([np.full(d, s["q"]), np.full(d, s["k"]), np.full(d, s["v"])])
        parts = {
            "ln1": _norm_arrays(blk.ln1, s["a1"]),
            "qkv": _linear_arrays(blk.qkv, s["a1"], qkv_out),
            "proj": _linear_arrays(blk.proj, s["o"], np.full(d, resid)),
            "ln2": _norm_arrays(blk.ln2, s["a2"]),
            "fc1": _linear_arrays(blk.mlp[0], s["a2"], np.full(blk.mlp[0].out_features, s_u)),
            "fc2": _linear_arrays(blk.mlp[2], s["g"], np.full(d, resid)),
        }
        for name, arrays in parts.items():
            for k, v in arrays.items():
                out[f"{pre}{name}.{k}"] = v
        # attention: exponent units per score unit, and the clamp beyond which weights are 0
        per_score = s["q"] * s["k"] / math.sqrt(d // cfg.heads) * math.log2(math.e) * 2**LOG2_FRAC
        for exp_shift in range(24, -1, -1):
            exp_mul = round(per_score * 2**exp_shift)
            if exp_mul < 1:
                continue
            exp_clamp = -(-(ATTN_EXP_MAX << LOG2_FRAC << exp_shift) // exp_mul) + 1
            if exp_clamp * exp_mul < 1 << 31 and exp_mul < 1 << 20:
                break
        if exp_clamp > 1 << 21:
            raise ValueError(f"block {i}: query and key scales too small for the integer softmax")
        out_mul, out_shift = _fixed(np.array([s["v"] / s["o"]]), 15, max_shift=40)
        out[pre + "attn.exp_mul"] = np.array(exp_mul)
        out[pre + "attn.exp_shift"] = np.array(exp_shift)
        out[pre + "attn.exp_clamp"] = np.array(exp_clamp)
        out[pre + "attn.out_mul"] = np.array(int(out_mul[0]))
        out[pre + "attn.out_shift"] = np.array(out_shift)
        grid = torch.arange(-GELU_HALF, GELU_HALF, dtype=torch.float64) * s_u
        out[pre + "gelu"] = torch.round(F.gelu(grid) / s["g"]).clamp(-ACT_MAX, ACT_MAX).numpy().astype(np.int8)
    s_f = float(qat.act_out.step())
    for k, v in _norm_arrays(p.ln_out, s_f).items():
        out[f"ln_out.{k}"] = v
    for name, head in (("map_head", p.map_head), ("code_head", p.code_head)):
        for k, v in _linear_arrays(head, s_f, np.full(head.out_features, 1 / log2e_units)).items():
            out[f"{name}.{k}"] = v
    buf = io.BytesIO()
    np.savez_compressed(buf, **out)
    return buf.getvalue()


def validation_bits(raw: bytes, tiles: list[tuple[torch.Tensor, tuple[torch.Tensor, ...]]]) -> float:
    """Bits of the integer prior `raw` (.npz bytes) on (levels, index maps) tiles, default schedule."""
    prior = IntPrior.from_bytes(raw)
    return sum(tile_bits(prior, [Tokens(lv, idx) for lv, idx in tiles], Schedule()))  # type: ignore[arg-type]
