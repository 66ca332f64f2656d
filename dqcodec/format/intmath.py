"""The exact integer arithmetic of the prior (normative: bitstream_spec/FORMAT.md, section 8).

Every function here maps integers to integers, the same way on every machine. There is no exp,
sqrt or division: exponentials come from a cubic polynomial, reciprocals and reciprocal square
roots from tables built by exact integer formulas, and `a >> s` is floor(a / 2^s) (an arithmetic
shift, for negative a too).

How values travel (the spec says nothing of it; any carrier that holds them exactly will do):
int32 or int64 tensors, or float32 / float64 tensors where every value, product and partial sum
is an integer below 2^24 / 2^53, which those types hold exactly, so that no operation rounds.
There, multiplying by 2^-s (an exact power of two) and taking the floor is the shift a >> s.
`bitstream_spec/reference_prior.py` computes the same integers in numpy int64 alone.
"""

from __future__ import annotations

import math
import os
import threading
from dataclasses import dataclass
from functools import cache
from types import ModuleType

import numpy as np
import torch

RESID_FRAC = 14  # the residual stream counts in units of 2^-14
RESID_MAX = (1 << 21) - 1  # residual values saturate at +-(2^21 - 1)
ACT_MAX = 127  # int8 activations are symmetric: -127..127
WEIGHT_MAX = 63  # weights are 7-bit, -63..63: int8 kernels are exact on them (int8_matmul_is_exact)
KEY_MAX = 63  # attention keys too (the second operand of the query-key product)
LOG2_FRAC = 10  # logits and attention exponents count in units of 2^-10 of a bit (log2)
EXP2_POLY = (32768, -22662, 7581, -1303)  # 2^15 * 2^(-r/1024) ~ A0 + A1 t + A2 t^2 + A3 t^3, t = r/1024
ATTN_SUM_BITS = 17  # attention weights are shifted until their row total is below 2^17
ATTN_EXP_MAX = 16  # attention weights 2^-16 below the row's largest are 0
FREQ_EXP_MAX = 24  # symbol weights 2^-24 below the most probable one are 0
FREQ_SHIFT = 36  # fixed-point bits of the frequency scale W
GELU_HALF = 1024  # the GELU table covers inputs -1024..1023
RSQRT_LO, RSQRT_HI = 1 << 10, 1 << 12  # RSQRT covers mantissas 1024..4095
RECIP_LO = 1 << 11  # RECIP covers mantissas 2048..4095
_POW2_RANGE = 70
NATIVE_PRODUCT_MAX_K = 1 << 16  # (a + 128) . w stays below 2^31: 255 * 127 * 2^16 < 2^31


@cache
def rsqrt_table() -> tuple[int, ...]:
    """RSQRT[j] = round(2^20 / sqrt(1024 + j)), j = 0..3071, computed exactly:
    round(y) = (floor(2y) + 1) // 2 and floor(2y) = isqrt(floor(2^42 / m))."""
    return tuple((math.isqrt((1 << 42) // m) + 1) // 2 for m in range(RSQRT_LO, RSQRT_HI))


@cache
def recip_table() -> tuple[int, ...]:
    """RECIP[j] = floor(2^24 / (2049 + j)), j = 0..2047: with m = 2048 + j, RECIP[j] / 2^24 is a
    lower bound of 1 / x for every x in [m, m + 1)."""
    return tuple((1 << 24) // (m + 1) for m in range(RECIP_LO, 2 * RECIP_LO))


@cache
def _tables(device: torch.device) -> dict[str, torch.Tensor]:
    return {
        "rsqrt": torch.tensor(rsqrt_table(), dtype=torch.float64, device=device),
        "recip": torch.tensor(recip_table(), dtype=torch.int64, device=device),
        "recip64": torch.tensor(recip_table(), dtype=torch.float64, device=device),
        "pow2_int": torch.tensor([1 << i for i in range(63)], dtype=torch.int64, device=device),
        "pow2_f64": torch.tensor([math.ldexp(1.0, i) for i in range(63)], dtype=torch.float64, device=device),
        # 2^k for k = -70..70, exact
        "ldexp": torch.tensor([math.ldexp(1.0, k) for k in range(-_POW2_RANGE, _POW2_RANGE + 1)], dtype=torch.float64),
    }


def _t(name: str, like: torch.Tensor) -> torch.Tensor:
    return _tables(like.device)[name]


def pow2(k: torch.Tensor) -> torch.Tensor:
    """2^k, exactly, as float64, for integers |k| <= 70 (int64 tensor)."""
    return _t("ldexp", k).to(k.device)[k + _POW2_RANGE]


def bit_length(v: torch.Tensor) -> torch.Tensor:
    """Bits of each integer v >= 1 (int64, or float64 below 2^53): the e with 2^(e-1) <= v < 2^e."""
    table = _t("pow2_int", v) if v.dtype == torch.int64 else _t("pow2_f64", v)
    return torch.searchsorted(table, v.contiguous(), right=True)


def exp2_poly(r: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """EXP2(r) ~ 2^15 * 2^(-r/1024) for integers 0 <= r < 1024 (16394..32768), by Horner's rule
    with floor shifts: h = (A3 r) >> 10; h = ((h + A2) r) >> 10; h = ((h + A1) r) >> 10; h + A0.
    Every product stays below 2^25 (int32 holds it)."""
    a0, a1, a2, a3 = EXP2_POLY
    h = torch.mul(r, a3, out=out).__irshift__(LOG2_FRAC).add_(a2)
    h.mul_(r).__irshift__(LOG2_FRAC).add_(a1)
    return h.mul_(r).__irshift__(LOG2_FRAC).add_(a0)


def layer_norm(x: torch.Tensor, gain: torch.Tensor, bias: torch.Tensor, eps: int) -> torch.Tensor:
    """Integer LayerNorm of residual rows x (n, d), d a power of two, to int8 values.

    mu = (sum x + d/2) >> log2 d, xc = x - mu, v = (sum xc^2 >> log2 d) + eps; with
    2^e <= v < 2^(e+1), t = e >> 1 and m = (v << 10) >> 2t in [1024, 4096),
    n = (xc * RSQRT[m - 1024]) >> (t + 3) is xc / sqrt(v) in units of 2^-12, and the output is
    clamp((n * G + B) >> 24, -127, 127), given gain = G 2^-24 and bias = B 2^-24 (exact).

    x is float64 (|x| < 2^21): sum xc^2 < d 2^44 <= 2^52 and every other value stays below 2^53.
    """
    d = x.shape[-1]
    inv_d = 1.0 / d
    mu = (x.sum(-1, keepdim=True) + (d >> 1)).mul_(inv_d).floor_()
    xc = x - mu
    v = (xc[:, None, :] @ xc[:, :, None])[:, 0].mul_(inv_d).floor_().add_(eps)  # exact dot products
    t = (bit_length(v) - 1) >> 1
    m = (v * pow2(10 - 2 * t)).to(torch.int64)  # exact: a power-of-two multiple of an integer
    n = xc.mul_(_t("rsqrt", x)[m - RSQRT_LO] * pow2(-(t + 3))).floor_()
    return torch.addcmul(bias, n, gain).floor_().clamp_(-ACT_MAX, ACT_MAX)


def requantize(acc: torch.Tensor, mul: torch.Tensor, add: torch.Tensor) -> torch.Tensor:
    """floor((acc * M + B) / 2^S) per output channel, given mul = M 2^-S and add = B 2^-S as
    float64 (exact: powers of two) and |acc M| + |B| < 2^53 (checked when the weights load)."""
    return torch.addcmul(add, acc, mul).floor_()


def reciprocal(total: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For integer totals >= 2048 (int64): (R, e) with R * 2^-(e + 13) a lower bound of 1 / total,
    where 2^e <= total < 2^(e+1), m = total >> (e - 11) and R = RECIP[m - 2048] = floor(2^24 / (m + 1))."""
    e = bit_length(total) - 1
    m = total >> (e - 11)
    return _t("recip", total)[m - RECIP_LO], e


ATTN_CHUNK = 1 << 19  # score-matrix elements per step: keeps the integer softmax near the cache
SMALL_ATTENTION = 1 << 16  # below this many scores per (tile, head), pairs go together in float32
MASKED_SCORE = -(1 << 22)  # the score of a key a row may not attend to: its weight is 0


@cache
def int8_matmul_is_exact() -> bool:
    """Whether torch's int8 x int8 -> int32 product (`torch._int_mm`, oneDNN on x86) is exact here
    for a second operand of 7 bits (the prior's weights and attention keys).

    Kernels without VNNI multiply u8 (the first operand + 128) by s8 and add pairs of products in
    saturating int16: with 8 bits that saturates (and differs between CPU kinds), with 7 bits
    (2 * 255 * 63 < 2^15) it cannot. This checks, once, the worst cases (first operand at +127 or
    -127 against same-sign second operands at +-63) and random operands, at the prior's shapes,
    against exact int64 products; on any difference or error the prior keeps to float32 products,
    which are exact too (only slower). DQC_INT8_MATMUL=0 turns the int8 kernels off."""
    if os.environ.get("DQC_INT8_MATMUL", "1") == "0":
        return False
    gen = torch.Generator().manual_seed(0)
    try:
        for rows in (1, 2, 5, 16, 17, 64, 333):
            for k, m in ((256, 3), (256, 768), (256, 1024), (1024, 256), (64, 1), (64, 777)):
                a = torch.randint(-ACT_MAX, ACT_MAX + 1, (rows, k), generator=gen, dtype=torch.int8)
                w = torch.randint(-WEIGHT_MAX, WEIGHT_MAX + 1, (k, m), generator=gen, dtype=torch.int8)
                a[0], w[:, 0] = ACT_MAX, WEIGHT_MAX
                a[-1], w[:, -1] = -ACT_MAX, -WEIGHT_MAX
                if not torch.equal(torch._int_mm(a, w).to(torch.int64), a.to(torch.int64) @ w.to(torch.int64)):
                    return False
    except (RuntimeError, AttributeError):
        return False
    return True


@cache
def native_kernels() -> ModuleType | None:
    """The C kernels of `dqcodec._native` (the same integers as this module, faster), where the
    package was built with them, the CPU has one of their fast paths (AVX2 or AVX512-VNNI; the
    portable C path is slower than torch, and runs only when DQC_NATIVE_ISA=generic asks for it)
    and DQC_NATIVE=0 does not turn them off; else None."""
    if os.environ.get("DQC_NATIVE", "1") == "0":
        return None
    try:
        from dqcodec import _native
    except ImportError:
        return None
    if _native.isa == "generic" and os.environ.get("DQC_NATIVE_ISA") != "generic":
        return None
    return _native


@dataclass(frozen=True)
class PackedWeights:
    """int8 weights (k, m) as the C product takes them: (m / 64, k / 4, 64, 4), the 64 columns of a
    block four rows at a time, and 128 * each column's sum, int32 (m,) (the kernel multiplies
    a + 128, unsigned)."""

    blocks: np.ndarray
    offset: np.ndarray


def pack_weights(b: torch.Tensor) -> PackedWeights | None:
    """b (k, m) int8 packed for the C product where it runs (AVX512-VNNI, m a multiple of 64, k
    of 4); else None (torch's product)."""
    k, m = b.shape
    kernels = native_kernels()
    if kernels is None or kernels.isa != "avx512-vnni" or m % 64 or k % 4 or k > NATIVE_PRODUCT_MAX_K:
        return None
    blocks = b.reshape(k // 4, 4, m // 64, 64).permute(2, 0, 3, 1).contiguous().numpy()
    return PackedWeights(blocks, (128 * b.to(torch.int32).sum(0)).to(torch.int32).numpy())


def int8_product(a: torch.Tensor, b: torch.Tensor, packed: PackedWeights | None = None) -> torch.Tensor:
    """a (n, k) int8 times b (k, m) int8 with |b| <= 63, exactly, as int32 (n, m): by the C
    kernel for `packed` weights, by torch's int8 kernel where it is exact, else in float32 (every
    partial sum is an integer below 2^24)."""
    if packed is not None and len(a):
        out = torch.empty(len(a), b.shape[1], dtype=torch.int32)
        native_kernels().gemm(a.numpy(), packed.blocks, packed.offset, out.numpy(), (*a.shape, b.shape[1]))  # type: ignore[union-attr]
        return out
    if int8_matmul_is_exact() and len(a):
        return torch._int_mm(a, b)
    return (a.to(torch.float32) @ b.to(torch.float32)).to(torch.int32)


def attention(
    q: torch.Tensor,
    kt: torch.Tensor,
    v1: torch.Tensor,
    key_group: torch.Tensor | None,
    row_limit: torch.Tensor | None,
    exp_mul: int,
    exp_shift: int,
    exp_clamp: int,
    out_mul: int,
    out_shift: int,
) -> torch.Tensor:
    """Integer softmax attention. q (B, H, R, dh) int8, kt (B, H, dh, L) int8 keys (transposed,
    -63..63), v1 (B, H, L, dh + 1) int8 values in float32 whose last column is ones. Row i of tile
    b attends to key j where key_group[b, j] <= row_limit[b, i] (row_limit (B, R) or (B, 1));
    key_group None: to every key. Returns the int8 outputs (B, H, R, dh), float64.

    s = q.k (|s| < 2^20), D = max_j s - s, e = (D * exp_mul) >> exp_shift (units of 2^-10 bit);
    P = EXP2(e & 1023) >> (e >> 10), 0 from e >> 10 >= 16 on (so D may be clamped at exp_clamp,
    where that already holds, and a key a row may not attend to may get the score -2^22);
    the row's weights are shifted right by k = max(0, bits(sum P) - 17) so that their total T is
    below 2^17 and every partial sum of P.v stays below 2^24; the output is
    clamp((P.v * R * out_mul + 2^(s-1)) >> s, -127, 127) with (R, e) = reciprocal(T) and
    s = out_shift + e + 13: P.v / T, rounded, in the output's units.
    """
    b, h, rows, keys = q.shape[0], q.shape[1], q.shape[2], kt.shape[3]
    acc = torch.empty(b * h, rows, v1.shape[-1], dtype=torch.float32, device=q.device)
    qf, ktf, vf = q.reshape(b * h, rows, -1), kt.reshape(b * h, -1, keys), v1.reshape(b * h, keys, -1)

    def masked(s: torch.Tensor, pairs: slice, band: slice) -> torch.Tensor:
        if key_group is None:
            return s
        tiles = torch.arange(pairs.start, pairs.stop, device=q.device) // h
        limit = row_limit[tiles, band] if row_limit.shape[1] > 1 else row_limit[tiles]
        return s.masked_fill_(key_group[tiles][:, None, :] > limit[:, :, None], MASKED_SCORE)

    if rows * keys <= SMALL_ATTENTION:  # several (tile, head) pairs per step, float32 products
        step = max(1, ATTN_CHUNK // (rows * keys))
        for i in range(0, b * h, step):
            pairs = slice(i, min(b * h, i + step))
            s = torch.bmm(qf[pairs].to(torch.float32), ktf[pairs].to(torch.float32))
            s = _buffer("s", s.shape, torch.int32, s.device).copy_(s)
            _weights_times_values(masked(s, pairs, slice(None)), vf[pairs], exp_mul, exp_shift, exp_clamp, acc[pairs])
    else:  # one pair at a time, in bands of rows: int8 products
        step = max(1, ATTN_CHUNK // keys)
        for i in range(b * h):
            for r in range(0, rows, step):
                band = slice(r, min(rows, r + step))
                s = masked(int8_product(qf[i, band], ktf[i])[None], slice(i, i + 1), band)[0]
                _weights_times_values(s, vf[i], exp_mul, exp_shift, exp_clamp, acc[i, band])
    acc = acc.view(b, h, rows, -1)
    r, e_t = reciprocal(acc[..., -1:].to(torch.int64))  # T: 2^15 - L < T < 2^17
    shift = out_shift + e_t + 13
    # |P.v| < 2^24, R < 2^13, out_mul < 2^15: the float64 products are exact
    scale = (r * out_mul).to(torch.float64) * pow2(-shift)
    return (acc[..., :-1] * scale).add_(0.5).floor_().clamp_(-ACT_MAX, ACT_MAX)


_buffers = threading.local()


def _buffer(name: str, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A scratch tensor, reused across calls (per thread): fresh large tensors cost page faults
    that the integer softmax's cheap passes would otherwise wait on."""
    pool = _buffers.__dict__.setdefault("pool", {})
    n = math.prod(shape)
    buf = pool.get((name, dtype, device))
    if buf is None or buf.numel() < n:
        with torch.inference_mode(False):  # a normal tensor: usable inside and outside inference mode
            buf = pool[name, dtype, device] = torch.empty(max(n, 1 << 16), dtype=dtype, device=device)
    return buf[:n].view(shape)


def _weights_times_values(
    s: torch.Tensor, v1: torch.Tensor, exp_mul: int, exp_shift: int, exp_clamp: int, out: torch.Tensor
) -> None:
    """The integer attention weights P' of int32 scores s (..., R, L) (overwritten), times v1:
    out = P'.v1."""
    m = s.amax(-1, keepdim=True)
    e = torch.sub(m, s, out=s).clamp_(max=exp_clamp)
    e.mul_(exp_mul).__irshift__(exp_shift)
    z = torch.bitwise_right_shift(e, LOG2_FRAC, out=_buffer("z", s.shape, torch.int32, s.device))
    z.clamp_(max=ATTN_EXP_MAX)
    p = exp2_poly(e.bitwise_and_((1 << LOG2_FRAC) - 1), out=_buffer("p", s.shape, torch.int32, s.device))
    p >>= z
    total = p.sum(-1, keepdim=True, dtype=torch.int32).to(torch.int64)
    p >>= (bit_length(total) - ATTN_SUM_BITS).clamp_(min=0).to(torch.int32)
    torch.matmul(_buffer("pf", s.shape, torch.float32, s.device).copy_(p), v1, out=out)


def frequencies(logits: torch.Tensor, precision: int) -> torch.Tensor:
    """Integer frequencies (n, k) int64 for integer logits (n, k) in units of 2^-10 bit: each
    >= 1, each row summing to 2^precision.

    d = max - logit, p = (EXP2(d & 1023) << 8) >> (d >> 10) (0 from d >> 10 >= 24 on), S = sum p;
    with (R, e) = reciprocal(S), W = ((2^precision - k) * R) >> (e - 23) and f = 1 + ((p * W) >> 36);
    sum f <= 2^precision, and the rest goes to the largest f (the first of equal ones)."""
    n, k = logits.shape
    logits = logits.to(torch.int64)
    d = (logits.amax(-1, keepdim=True) - logits).clamp_(max=FREQ_EXP_MAX << LOG2_FRAC)
    p = (exp2_poly(d & ((1 << LOG2_FRAC) - 1)) << 8) >> (d >> LOG2_FRAC)
    r, e = reciprocal(p.sum(-1, keepdim=True))
    w = (((1 << precision) - k) * r) >> (e - 23)
    f = ((p * w) >> FREQ_SHIFT) + 1
    rest = (1 << precision) - f.sum(-1)
    f[torch.arange(n, device=f.device), f.argmax(-1)] += rest
    return f
