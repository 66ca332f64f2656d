"""The integer DQ-Transformer prior: the model that coding uses (normative: FORMAT.md, section 8).

It is the float `DQTransformer` after quantisation-aware training, run in exact integer arithmetic
(`dqcodec.format.intmath`): int16 embeddings, 7-bit weights and attention keys, 8-bit activations,
per-channel requantisation by an integer multiplier and shift, an integer LayerNorm, a GELU table
and an integer softmax. Tokens map to frequencies the same way on every machine, at any thread
count.

Weights are a numpy `.npz` of integer arrays (loaded with allow_pickle=False); the arithmetic
bounds of FORMAT.md section 8.6 are checked when they load.

Coding runs several tiles side by side: each pass adds the content slots of the group just coded
to each tile's key/value cache and predicts the next group's tokens (query slots). Exact
arithmetic makes a slot's result independent of which tiles, rows and passes it is computed with.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType

import numpy as np
import torch

from dqcodec.errors import DQCError
from dqcodec.format.intmath import (
    ACT_MAX,
    ATTN_EXP_MAX,
    ATTN_SUM_BITS,
    GELU_HALF,
    KEY_MAX,
    LOG2_FRAC,
    RESID_MAX,
    WEIGHT_MAX,
    PackedWeights,
    attention,
    frequencies,
    int8_product,
    layer_norm,
    native_kernels,
    pack_weights,
    requantize,
)
from dqcodec.format.tokens import KIND_MAP

FORMAT_TAG = "dqc-int-prior-1"
FP32_EXACT = 1 << 24  # float32 holds every integer below this exactly
FP64_EXACT = 1 << 53
NO_GROUP = 1 << 30  # group number of padding keys: no row attends to them
MAX_KEYS = 1 << 15  # keys per tile (a tile has at most 1 + 256 + 4096)
ALL_GROUPS_CHUNK = 2048  # rows per matrix product in the all-groups pass (bounds its int32 buffers)


class WeightsError(DQCError):
    """The integer prior's weight file is malformed or breaks an arithmetic bound."""


@dataclass(frozen=True)
class IntLinear:
    """acc = a . W (int8 a, 7-bit W), out = (acc * M + B) >> S per output channel."""

    weight: torch.Tensor  # (in, out) int8, contiguous
    mul: torch.Tensor  # (out,) M * 2^-S, float64 (exact)
    add: torch.Tensor  # (out,) B * 2^-S, float64 (exact), rounding offset included
    integers: tuple[np.ndarray, np.ndarray, int]  # M and B (int64, (out,)) and S, for the C kernels
    packed: PackedWeights | None  # W for the C product, where it runs

    def product(self, a: torch.Tensor) -> torch.Tensor:
        """acc = a . W for int8 activations a (n, in): int32 (n, out), exact."""
        return int8_product(a, self.weight, self.packed)

    @property
    def fused(self) -> tuple | None:
        """The layer as the fused C steps take it (packed W, its offset, M, B, S); None where the C
        product does not run."""
        if self.packed is None:
            return None
        return (self.packed.blocks, self.packed.offset, *self.integers)

    def __call__(self, a: torch.Tensor) -> torch.Tensor:
        """int8 activations (n, in) -> (n, out) integers in float64, before any clamp."""
        return requantize(self.product(a), self.mul, self.add)

    def rows(self, lo: int, hi: int) -> IntLinear:
        """The layer restricted to output channels lo..hi-1."""
        m, b, shift = self.integers
        integers = (np.ascontiguousarray(m[lo:hi]), np.ascontiguousarray(b[lo:hi]), shift)
        weight = self.weight[:, lo:hi].contiguous()
        return IntLinear(weight, self.mul[lo:hi], self.add[lo:hi], integers, pack_weights(weight))


@dataclass(frozen=True)
class IntNorm:
    gain: torch.Tensor  # (d,) G * 2^-24, float64 (exact)
    bias: torch.Tensor  # (d,) B * 2^-24, float64 (exact)
    eps: int
    integers: tuple[np.ndarray, np.ndarray]  # G and B, int64 (d,), for the C kernels

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return layer_norm(x, self.gain, self.bias, self.eps).to(torch.int8)

    @property
    def fused(self) -> tuple[np.ndarray, np.ndarray, int]:
        return (*self.integers, self.eps)


@dataclass(frozen=True)
class IntBlock:
    ln1: IntNorm
    qkv: IntLinear
    qkv_max: torch.Tensor  # (3d,) float64: queries and values clamp at 127, keys at 63
    q_only: IntLinear
    kv_only: IntLinear
    exp_mul: int
    exp_shift: int
    exp_clamp: int
    out_mul: int
    out_shift: int
    proj: IntLinear
    ln2: IntNorm
    fc1: IntLinear  # with GELU_HALF added to its output: the GELU table's index before the clamp
    gelu: torch.Tensor  # (2 * GELU_HALF,) int8
    fc2: IntLinear

    @property
    def attention_consts(self) -> tuple[int, int, int, int, int]:
        """exp_mul, exp_shift, exp_clamp, out_mul, out_shift: the attention's integer constants."""
        return self.exp_mul, self.exp_shift, self.exp_clamp, self.out_mul, self.out_shift


class KVCache:
    """Keys and values of the content slots of a batch of tiles, per block, as the attention
    kernel takes them. For `intmath.attention`: keys kt (B, H, dh, cap) int8, transposed (the
    second operand of the query-key product), and values v (B, H, cap, dh + 1), int8 values in
    float32 with a ones column (the weights' row totals). For the C kernels (`native`): keys
    (B, H, dh / 4, cap, 4) int8 in quads of channels, values (B, H, cap / 2, dh, 2) int16 in pairs
    of keys, and cap a multiple of 16. Slots past a tile's length stay 0."""

    def __init__(self, prior: IntPrior, tiles: int, capacity: int = 512, native: bool | None = None) -> None:
        cfg = prior.config
        self.heads, self.dh = cfg["heads"], cfg["dim"] // cfg["heads"]
        self.native = native_kernels() is not None if native is None else native
        capacity = self._round(capacity)
        self.kt = [self._keys(tiles, capacity) for _ in prior.blocks]
        self.v = [self._values(tiles, capacity) for _ in prior.blocks]
        self.lengths = torch.zeros(tiles, dtype=torch.int64)

    def _round(self, capacity: int) -> int:
        return -(-capacity // 16) * 16 if self.native else capacity

    def _keys(self, tiles: int, capacity: int) -> torch.Tensor:
        if self.native:
            return torch.zeros(tiles, self.heads, self.dh // 4, capacity, 4, dtype=torch.int8)
        return torch.zeros(tiles, self.heads, self.dh, capacity, dtype=torch.int8)

    def _values(self, tiles: int, capacity: int) -> torch.Tensor:
        if self.native:
            return torch.zeros(tiles, self.heads, capacity // 2, self.dh, 2, dtype=torch.int16)
        return torch.ones(tiles, self.heads, capacity, self.dh + 1)

    @property
    def tiles(self) -> int:
        return len(self.lengths)

    @property
    def capacity(self) -> int:
        return self.kt[0].shape[3]

    def put(self, block: int, tile: torch.Tensor | slice, key: torch.Tensor | int, k: torch.Tensor, v: torch.Tensor):
        """Keys k and values v (n, H, dh) of slots `key` of tiles `tile` into block `block`."""
        n = k.shape[0]
        if self.native:
            self.kt[block][tile, :, :, key] = k.reshape(n, self.heads, self.dh // 4, 4).to(torch.int8)
            self.v[block][tile, :, key // 2, :, key % 2] = v.to(torch.int16)
        else:
            self.kt[block][tile, :, :, key] = k.to(torch.int8)
            self.v[block][tile, :, key, : self.dh] = v.to(self.v[block].dtype)

    def keys_values(self, block: int, tile: int, key: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values (H, dh) of one slot."""
        kt = self.kt[block][tile, :, :, key]
        if self.native:
            v = self.v[block][tile, :, key // 2, :, key % 2]
        else:
            v = self.v[block][tile, :, key, : self.dh]
        return kt.reshape(self.heads, self.dh), v.float()

    def reserve(self, length: int) -> None:
        cap = self.capacity
        if length <= cap:
            return
        if length > MAX_KEYS:
            raise DQCError(f"a tile cannot hold {length} tokens")
        old, cap = cap, self._round(max(length, 2 * cap))
        for i in range(len(self.kt)):
            kt, v = self._keys(self.tiles, cap), self._values(self.tiles, cap)
            kt[:, :, :, :old] = self.kt[i]
            v[:, :, : old // 2 if self.native else old] = self.v[i]
            self.kt[i], self.v[i] = kt, v


def _json(arrays: dict[str, np.ndarray], key: str) -> dict:
    return json.loads(arrays[key].tobytes().decode())


class IntPrior:
    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        try:
            self.config = _json(arrays, "config")
            self.meta = _json(arrays, "meta") if "meta" in arrays else {}
            if self.config.get("format") != FORMAT_TAG:
                raise WeightsError(f"integer prior weights of format {self.config.get('format')!r}, not {FORMAT_TAG}")
            self._load(arrays)
        except (KeyError, ValueError, TypeError) as e:
            raise WeightsError(f"malformed integer prior weights ({type(e).__name__}: {e})") from None
        self._bos = self._bos_keys()

    @classmethod
    def from_bytes(cls, raw: bytes) -> IntPrior:
        with np.load(io.BytesIO(raw), allow_pickle=False) as z:
            return cls({k: z[k] for k in z.files})

    # ----- loading and bounds --------------------------------------------------------------
    def _load(self, a: dict[str, np.ndarray]) -> None:
        cfg = self.config
        d, heads, k = cfg["dim"], cfg["heads"], cfg["num_codes"]
        self.num_codes = k
        self.embed_shift = int(cfg["embed_shift"])
        if not 0 <= self.embed_shift <= 4:  # three int16 embeddings << 4 stay below the residual's 2^21
            raise WeightsError(f"embed_shift {self.embed_shift} is outside 0..4")
        eps = int(cfg["ln_eps"])
        if not 1 <= eps < 1 << 40:
            raise WeightsError(f"ln_eps {eps} is outside 1..2^40 - 1")
        if d % heads or d & (d - 1):
            raise WeightsError("dim must be a power of two divisible by the head count")
        # int32 tables: a row's sum of three, << embed_shift, stays below 2^21
        emb = {n: self._int(a, n, (16,)).int() for n in ("content_embed", "level_embed", "pos_embed", "kind_embed")}
        self.content_embed, self.level_embed = emb["content_embed"], emb["level_embed"]
        self.pos_embed, self.kind_embed = emb["pos_embed"], emb["kind_embed"]
        self.query_embed = self._int(a, "query_embed", (16,)).int()
        if len(self.content_embed) != k:
            raise WeightsError(f"content_embed has {len(self.content_embed)} rows, not num_codes = {k}")
        self._value_embed = torch.cat([self.content_embed, self.level_embed])
        self.bos = self._int(a, "bos", (16,))
        for t in (*emb.values(), self.query_embed[None], self.bos[None]):
            if t.shape[-1] != d:
                raise WeightsError("embedding width differs from dim")
        self.blocks = []
        for i in range(cfg["layers"]):
            p = f"blocks.{i}."
            qkv = self._linear(a, p + "qkv", d, 3 * d)
            blk = IntBlock(
                ln1=self._norm(a, p + "ln1", d, eps),
                qkv=qkv,
                qkv_max=torch.tensor([ACT_MAX] * d + [KEY_MAX] * d + [ACT_MAX] * d, dtype=torch.float64),
                q_only=qkv.rows(0, d),
                kv_only=qkv.rows(d, 3 * d),
                exp_mul=self._scalar(a, p + "attn.exp_mul", 1, 1 << 20),
                exp_shift=self._scalar(a, p + "attn.exp_shift", 0, 30),
                exp_clamp=self._scalar(a, p + "attn.exp_clamp", 1, 1 << 21),
                out_mul=self._scalar(a, p + "attn.out_mul", 1, (1 << 15) - 1),
                out_shift=self._scalar(a, p + "attn.out_shift", 0, 40),
                proj=self._linear(a, p + "proj", d, d),
                ln2=self._norm(a, p + "ln2", d, eps),
                fc1=self._linear(a, p + "fc1", d, cfg["mlp_ratio"] * d, offset=GELU_HALF),
                gelu=self._int(a, p + "gelu", (8,), ACT_MAX).to(torch.int8),
                fc2=self._linear(a, p + "fc2", cfg["mlp_ratio"] * d, d),
            )
            if blk.gelu.shape != (2 * GELU_HALF,):
                raise WeightsError(f"{p}gelu must have {2 * GELU_HALF} entries")
            # D * exp_mul must fit int32, and at the clamp the weight must already be 0
            if blk.exp_clamp * blk.exp_mul >= 1 << 31:
                raise WeightsError(f"{p}attn: exp_clamp * exp_mul reaches 2^31")
            if (blk.exp_clamp * blk.exp_mul >> blk.exp_shift) >> LOG2_FRAC < ATTN_EXP_MAX:
                raise WeightsError(f"{p}attn: exp_clamp is below where attention weights reach 0")
            self.blocks.append(blk)
        self.ln_out = self._norm(a, "ln_out", d, eps)
        self.map_head = self._linear(a, "map_head", d, cfg["num_levels"])
        self.code_head = self._linear(a, "code_head", d, k)
        # the products of int8 queries and keys, and of attention weights (row total < 2^17) and
        # int8 values, are exact in float32 whatever the weights
        assert (d // heads) * ACT_MAX * ACT_MAX < FP32_EXACT and ACT_MAX << ATTN_SUM_BITS < FP32_EXACT

    @staticmethod
    def _int(a: dict[str, np.ndarray], name: str, bits: tuple[int, ...], limit: int | None = None) -> torch.Tensor:
        x = a[name]
        if x.dtype.kind not in "iu" or x.dtype.itemsize * 8 not in bits:
            raise WeightsError(f"{name} must be int{'/'.join(map(str, bits))}, got {x.dtype}")
        if limit is not None and x.size and np.abs(x.astype(np.int64)).max() > limit:
            raise WeightsError(f"{name} has values outside -{limit}..{limit}")
        return torch.from_numpy(x.astype(np.int64))

    @staticmethod
    def _scalar(a: dict[str, np.ndarray], name: str, lo: int, hi: int) -> int:
        v = int(a[name])
        if not lo <= v <= hi:
            raise WeightsError(f"{name} = {v} is outside {lo}..{hi}")
        return v

    def _norm(self, a: dict[str, np.ndarray], name: str, d: int, eps: int) -> IntNorm:
        gain, bias = self._int(a, name + ".gain", (32,)), self._int(a, name + ".bias", (64,))
        if gain.shape != (d,) or bias.shape != (d,) or not (_below(gain, 1 << 20) and _below(bias, 1 << 40)):
            raise WeightsError(f"{name}: gain must be (d,) below 2^20 and bias (d,) below 2^40")
        integers = (gain.numpy().astype(np.int64), bias.numpy().astype(np.int64))
        return IntNorm(gain.double() * 2.0**-24, bias.double() * 2.0**-24, eps, integers)

    def _linear(self, a: dict[str, np.ndarray], name: str, n_in: int, n_out: int, offset: int = 0) -> IntLinear:
        w = self._int(a, name + ".weight", (8,), WEIGHT_MAX)
        mul, add = self._int(a, name + ".mul", (64,)), self._int(a, name + ".add", (64,))
        shift = self._scalar(a, name + ".shift", 1, 62)
        if w.shape != (n_out, n_in) or mul.shape != (n_out,) or add.shape != (n_out,):
            raise WeightsError(f"{name}: expected a ({n_out}, {n_in}) weight with (n_out,) mul and add")
        # every partial sum of a row of int8 activations times a column of weights is at most
        # 127 * sum |w|: below 2^24, float32 holds them all exactly
        acc_bound = ACT_MAX * w.abs().sum(1)
        if int(acc_bound.max()) >= FP32_EXACT or not _below(mul, 1 << 24) or not _below(add, FP64_EXACT):
            raise WeightsError(f"{name}: 127 * sum |weight| and |mul| must stay below 2^24, |add| below 2^53")
        # acc * M + B (+ offset << S) must stay an integer below 2^53 for the float64 requantisation
        if int((acc_bound * mul.abs() + add.abs()).max()) + (offset << shift) >= FP64_EXACT:
            raise WeightsError(f"{name}: 127 * sum |weight| * |mul| + |add| reaches 2^53")
        add = add + (offset << shift)
        scale = 2.0**-shift
        integers = (mul.numpy().astype(np.int64), add.numpy().astype(np.int64), shift)
        weight = w.t().contiguous().to(torch.int8)
        return IntLinear(weight, mul.double() * scale, add.double() * scale, integers, pack_weights(weight))

    # ----- embeddings ------------------------------------------------------------------------
    def embed_query(self, kind: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Residual rows (n, d) int32 of query slots: (pos + kind + query embeddings) << embed_shift."""
        rows = self.pos_embed.index_select(0, pos).add_(self.kind_embed.index_select(0, kind)).add_(self.query_embed)
        return rows.bitwise_left_shift_(self.embed_shift)

    def embed_content(self, kind: torch.Tensor, pos: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        """Residual rows (n, d) int32 of content slots: (pos + kind + value embeddings) << embed_shift,
        the value's embedding from the level table for MAP tokens, the code table otherwise."""
        # one table: the codes' embeddings, then the levels'
        row = torch.where(kind == KIND_MAP, self.num_codes + value.clamp(0, len(self.level_embed) - 1), value)
        rows = self.pos_embed.index_select(0, pos).add_(self.kind_embed.index_select(0, kind))
        return rows.add_(self._value_embed.index_select(0, row)).bitwise_left_shift_(self.embed_shift)

    # ----- coding passes ---------------------------------------------------------------------
    def new_cache(self, tiles: int, capacity: int = 512) -> KVCache:
        """Caches of `tiles` tiles, each holding the BOS slot."""
        cache = KVCache(self, tiles, capacity)
        for i, (k, v) in enumerate(self._bos):
            cache.put(i, slice(None), 0, k.expand(tiles, *k.shape), v.expand(tiles, *v.shape))
        cache.lengths += 1
        return cache

    def _bos_keys(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        cache = KVCache(self, 1, 1, native=False)
        h = (self.bos << self.embed_shift)[None].double()
        self._forward(cache, h, torch.zeros(1, dtype=torch.int64), h[:0], torch.zeros(0, dtype=torch.int64))
        return [cache.keys_values(i, 0, 0) for i in range(len(self.blocks))]

    def step(
        self,
        cache: KVCache,
        content: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None],
        query: list[tuple[torch.Tensor, torch.Tensor] | None],
        precision: int,
    ) -> list[np.ndarray | None]:
        """One pass over the cache's tiles: add each tile's `content` slots (kind, pos, value) to
        its cache and give the frequency tables (n, k) of its `query` tokens (kind, pos), all of
        one kind (the streams of all tiles move together); None for a tile without queries."""
        c_parts = [(b, c) for b, c in enumerate(content) if c is not None and len(c[0])]
        q_parts = [(b, q) for b, q in enumerate(query) if q is not None and len(q[0])]
        h_c = self.embed_content(*(torch.cat(t) for t in zip(*(c for _, c in c_parts)))) if c_parts else None
        h_q = self.embed_query(*(torch.cat(t) for t in zip(*(q for _, q in q_parts)))) if q_parts else None
        empty = torch.zeros(0, self.bos.shape[0], dtype=torch.int32)
        h_c, h_q = h_c if h_c is not None else empty, h_q if h_q is not None else empty
        counts_c, counts_q = np.zeros(cache.tiles, dtype=np.int64), np.zeros(cache.tiles, dtype=np.int64)
        for counts, parts in ((counts_c, c_parts), (counts_q, q_parts)):
            for b, t in parts:
                counts[b] = len(t[0])
        result: list[np.ndarray | None] = [None] * cache.tiles
        if not cache.native:
            tile_c, tile_q = (torch.from_numpy(np.repeat(np.arange(cache.tiles), c)) for c in (counts_c, counts_q))
        if not q_parts:
            if cache.native:
                self._forward_native(cache, h_c, counts_c, h_q, counts_q)
            else:
                self._forward(cache, h_c, tile_c, h_q, tile_q)
            return result
        kinds = {int(q[0][0]) == KIND_MAP for _, q in q_parts}
        if len(kinds) > 1:
            raise ValueError("the query tokens of one pass must all be map tokens or all codes")
        head = self.map_head if kinds.pop() else self.code_head
        if cache.native:
            rows = self._forward_native(cache, h_c, counts_c, h_q, counts_q)
            acc = head.product(rows)
            freq = np.empty(acc.shape, dtype=np.int64)
            native_kernels().frequencies(acc.numpy(), *head.integers, freq, acc.shape, precision)  # type: ignore[union-attr]
        else:
            freq = frequencies(head(self.ln_out(self._forward(cache, h_c, tile_c, h_q, tile_q))), precision).numpy()
        start = 0
        for b, q in q_parts:
            result[b] = freq[start : start + len(q[0])]
            start += len(q[0])
        return result

    def _forward(
        self, cache: KVCache, h_c: torch.Tensor, tile_c: torch.Tensor, h_q: torch.Tensor, tile_q: torch.Tensor
    ) -> torch.Tensor:
        """Content rows h_c of tiles tile_c join the cache; query rows h_q of tiles tile_q attend
        to it. Returns the query rows' residuals after the last block. (The torch path; with the C
        kernels, `_forward_native`.)"""
        d, heads = h_c.shape[1], cache.heads
        n_c, h_c, h_q = len(h_c), h_c.double(), h_q.double()
        counts_c, counts_q, slot_c, slot_q, key_c, new_len = _pass_slots(cache, tile_c, tile_q)
        n_keys = int(new_len.max())
        # keys beyond a tile's length are padding (tiles of other lengths share the pass)
        padded = bool((new_len < n_keys).any())
        key_group = torch.where(torch.arange(n_keys) < new_len[:, None], 0, NO_GROUP) if padded else None
        row_limit = torch.zeros(cache.tiles, 1, dtype=torch.int64)
        h = torch.cat([h_c, h_q])
        tile, slot = torch.cat([tile_c, tile_q]), torch.cat([slot_c, slot_q])
        last = len(self.blocks) - 1
        for i, blk in enumerate(self.blocks):
            a = blk.ln1(h)
            if n_c:
                q_c, k, v = _qkv(blk, a[:n_c])
                cache.put(i, tile_c, key_c, k.view(n_c, heads, -1), v.view(n_c, heads, -1))
            if i == last:  # content rows need only their keys and values in the last block
                h, a, tile, slot = h[n_c:], a[n_c:], tile[n_c:], slot[n_c:]
                q = _query(blk, a)
            else:
                q = torch.cat([q_c, _query(blk, a[n_c:])]) if n_c else _query(blk, a)
            if not len(h):
                break
            rows = int((counts_c + counts_q).max()) if i < last else int(counts_q.max())
            slot_i = slot if i < last else slot - counts_c[tile]
            qp = torch.zeros(cache.tiles, rows, d, dtype=torch.int8)
            qp[tile, slot_i] = q
            kt, v1 = cache.kt[i][..., :n_keys], cache.v[i][:, :, :n_keys]
            o = self._attend(blk, _heads(qp, heads), kt, v1, key_group, row_limit)
            h = self._finish(blk, h, o.transpose(1, 2).reshape(cache.tiles, rows, d)[tile, slot_i])
        cache.lengths = new_len
        return h

    @staticmethod
    def _attend(
        blk: IntBlock,
        q: torch.Tensor,
        kt: torch.Tensor,
        v1: torch.Tensor,
        key_group: torch.Tensor | None,
        row_limit: torch.Tensor | None,
    ) -> torch.Tensor:
        return attention(q, kt, v1, key_group, row_limit, *blk.attention_consts)

    def _forward_native(
        self,
        cache: KVCache,
        h_c: torch.Tensor,
        counts_c: np.ndarray,
        h_q: torch.Tensor,
        counts_q: np.ndarray,
    ) -> torch.Tensor:
        """`_forward` by the C kernels, for content rows h_c and query rows h_q, each tile's
        together (counts_c[b] and counts_q[b] rows of tile b). Returns the query rows after the
        last block and ln_out (int8)."""
        kernels = native_kernels()
        assert kernels is not None
        d, heads, n_tiles = h_c.shape[1], cache.heads, cache.tiles
        n_c, n_q = len(h_c), len(h_q)
        tiles = np.arange(n_tiles, dtype=np.int32)
        tile_c, tile_q = np.repeat(tiles, counts_c), np.repeat(tiles, counts_q)
        slot_c = (np.arange(n_c) - np.repeat(np.cumsum(counts_c) - counts_c, counts_c)).astype(np.int32)
        slot_q_last = (np.arange(n_q) - np.repeat(np.cumsum(counts_q) - counts_q, counts_q)).astype(np.int32)
        slot_q = slot_q_last + np.repeat(counts_c, counts_q).astype(np.int32)  # after the tile's content rows
        lengths = cache.lengths.numpy()
        key_c = (np.repeat(lengths, counts_c) + slot_c).astype(np.int32)
        new_len = lengths + counts_c
        cache.reserve(int(new_len.max()))
        shape = (n_tiles, heads, int((counts_c + counts_q).max()), d // heads)
        tile = np.concatenate([tile_c, tile_q])
        # where each tile's row r of the attention output goes: rows in order, content then query
        row_index = np.zeros(shape[0] * shape[2], dtype=np.int32)
        row_index[tile * shape[2] + np.concatenate([slot_c, slot_q])] = np.arange(n_c + n_q)
        row_index_last = np.zeros_like(row_index)
        row_index_last[tile_q * shape[2] + slot_q_last] = np.arange(n_q)
        keys = new_len.astype(np.int32)
        rows_all, rows_q = (counts_c + counts_q).astype(np.int32), counts_q.astype(np.int32)
        ix = {"slot_c": slot_c, "key_c": key_c, "slot_q": slot_q, "slot_q_last": slot_q_last}
        cap = cache.capacity
        h = torch.cat([h_c, h_q]).to(torch.int32)
        a = torch.empty(len(h), d, dtype=torch.int8)
        o = torch.empty(len(h), d, dtype=torch.int8)
        q = np.empty(shape, dtype=np.int8)
        ln1 = self.blocks[0].ln1
        kernels.norm(h.numpy(), None, None, None, 0, *ln1.integers, ln1.eps, a.numpy(), a.shape)
        last = len(self.blocks) - 1
        dims = (d, heads, n_tiles, shape[2], cap)
        for i, blk in enumerate(self.blocks):
            kt, v = cache.kt[i].numpy(), cache.v[i].numpy()
            if n_c:
                if i < last:
                    lin, parts, slots, q_out = blk.qkv, 3, ix["slot_c"], q
                else:  # the content rows' queries are not needed
                    lin, parts, slots, q_out = blk.kv_only, 2, None, None
                acc = lin.product(a[:n_c]).numpy()
                kernels.project(acc, *lin.integers, parts, tile_c, slots, ix["key_c"], q_out, kt, v, (n_c, *dims))
            if n_q:
                acc = blk.q_only.product(a[n_c:]).numpy()
                slots = ix["slot_q"] if i < last else ix["slot_q_last"]
                kernels.project(acc, *blk.q_only.integers, 1, tile_q, slots, None, q, None, None, (n_q, *dims))
            if i == last:  # content rows need only their keys and values in the last block
                h, a, o = h[n_c:], a[n_c:], o[n_c:]
                if not n_q:
                    break
            rows, index = (rows_all, row_index) if i < last else (rows_q, row_index_last)
            kernels.attention(
                q, kt, v, rows, keys, None, index, o.numpy(), (*shape, cap, len(o)), *blk.attention_consts
            )
            _block_tail(kernels, blk, self.blocks[i + 1].ln1 if i < last else self.ln_out, h, o, a)
        cache.lengths = torch.from_numpy(new_len)
        return a

    @staticmethod
    def _finish(blk: IntBlock, h: torch.Tensor, o: torch.Tensor) -> torch.Tensor:
        """The block after attention: projection, residual, MLP through the GELU table, residual."""
        h = (h + blk.proj(o.to(torch.int8))).clamp_(-RESID_MAX, RESID_MAX)
        # the GELU table's index, clamp(fc1, -1024, 1023) + 1024 (the offset is in fc1): the
        # requantisation's floor is the truncation of a value >= 0
        acc = blk.fc1.product(blk.ln2(h))
        u = torch.addcmul(blk.fc1.add, acc, blk.fc1.mul).clamp_(0, 2 * GELU_HALF - 1).to(torch.int32)
        g = blk.gelu.index_select(0, u.view(-1)).view(u.shape)
        return (h + blk.fc2(g)).clamp_(-RESID_MAX, RESID_MAX)

    # ----- all groups at once (the encoder knows every token) ------------------------------------
    def frequencies_all(
        self, tiles: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]], precision: int
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The frequency tables of every token of each tile, given as (kind, pos, value, group) in
        coding order: (MAP tokens' (n_map, 3), codes' (n_codes, K)). Identical to coding group by
        group (exact arithmetic), computed in one pass with each slot's attention limited to the
        groups the spec lets it see: by the C kernels where built (`tables_all`), else in torch."""
        if native_kernels() is None:
            return self._frequencies_all_torch(tiles, precision)
        n_maps = [int((t[0] == KIND_MAP).sum()) for t in tiles]
        parts: list[tuple[list[np.ndarray], list[np.ndarray]]] = [([], []) for _ in tiles]
        for b, first, freq in self.tables_all(tiles, precision):
            parts[b][first >= n_maps[b]].append(freq)
        widths = (self.map_head.weight.shape[1], self.code_head.weight.shape[1])
        return [
            tuple(
                torch.from_numpy(np.concatenate(c)) if c else torch.zeros(0, k, dtype=torch.int64)
                for c, k in zip(p, widths)
            )
            for p in parts
        ]  # type: ignore[misc]

    def tables_all(
        self,
        tiles: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]],
        precision: int,
    ) -> Iterator[tuple[int, int, np.ndarray]]:
        """`frequencies_all` by the C kernels, as the encoder uses it: (tile, first token, tables
        (n, k) int64) for runs of at most `chunk` tokens of one kind class (MAP or codes), each
        tile's in coding order, so that memory stays bounded."""
        a, counts = self._forward_all_native(tiles)
        start = 0
        for b, (t_kind, *_) in enumerate(tiles):
            n, n_map = counts[b], int((t_kind == KIND_MAP).sum())
            for lo, hi, head in ((0, n_map, self.map_head), (n_map, n, self.code_head)):
                for c0 in range(lo, hi, ALL_GROUPS_CHUNK):
                    c1 = min(hi, c0 + ALL_GROUPS_CHUNK)
                    acc = head.product(a[start + c0 : start + c1])
                    freq = np.empty(acc.shape, dtype=np.int64)
                    native_kernels().frequencies(acc.numpy(), *head.integers, freq, acc.shape, precision)  # type: ignore[union-attr]
                    yield b, c0, freq
            start += n

    def _forward_all_native(
        self, tiles: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]
    ) -> tuple[torch.Tensor, list[int]]:
        """Every slot of every group at once, by the C kernels: each tile's content rows (its
        tokens) join its cache after BOS, each sees the keys of the groups up to its own, and its
        query rows the groups before their own; both are prefixes of the cache, the tokens being in
        group order. Returns the query rows after the last block and ln_out (int8), tile after
        tile, and the tiles' token counts."""
        kernels = native_kernels()
        assert kernels is not None
        d, n_tiles, cfg = self.bos.shape[0], len(tiles), self.config
        heads = cfg["heads"]
        counts = [len(t[0]) for t in tiles]
        kind, pos, value, group = (torch.cat(x) for x in zip(*tiles))
        n = len(kind)
        per_tile = torch.tensor(counts)
        tile = torch.repeat_interleave(torch.arange(n_tiles), per_tile)
        cache = self.new_cache(n_tiles, capacity=1 + max(counts))
        cap, width = cache.capacity, 2 * max(counts)
        slot = _rank_within(tile)
        slot_q = per_tile[tile] + slot  # each tile's rows: its content rows, then its query rows
        # the keys a slot sees, BOS included: content rows through their group, query rows before it
        order = tile * (2 * NO_GROUP) + group
        first = (per_tile.cumsum(0) - per_tile)[tile]
        sees_c = 1 + torch.searchsorted(order, order, right=True) - first
        sees_q = 1 + torch.searchsorted(order, order) - first
        row_keys = torch.ones(n_tiles, width, dtype=torch.int32)
        row_keys[tile, slot], row_keys[tile, slot_q] = sees_c.int(), sees_q.int()
        row_keys_last = torch.ones(n_tiles, width, dtype=torch.int32)
        row_keys_last[tile, slot] = sees_q.int()
        row_index = torch.zeros(n_tiles, width, dtype=torch.int32)
        rows_in_order = torch.arange(n, dtype=torch.int32)
        row_index[tile, slot], row_index[tile, slot_q] = rows_in_order, n + rows_in_order
        row_index_last = torch.zeros(n_tiles, width, dtype=torch.int32)
        row_index_last[tile, slot] = rows_in_order
        ix = {
            k: v.to(torch.int32).numpy()
            for k, v in {"tile": tile, "slot": slot, "slot_q": slot_q, "key": 1 + slot}.items()
        }
        keys, rows_all, rows_q = ((x * per_tile + c).to(torch.int32).numpy() for x, c in ((1, 1), (2, 0), (1, 0)))
        h = torch.cat([self.embed_content(kind, pos, value), self.embed_query(kind, pos)]).to(torch.int32)
        a = torch.empty(2 * n, d, dtype=torch.int8)
        o = torch.empty(2 * n, d, dtype=torch.int8)
        q = np.zeros((n_tiles, heads, width, d // heads), dtype=np.int8)
        ln1 = self.blocks[0].ln1
        kernels.norm(h.numpy(), None, None, None, 0, *ln1.integers, ln1.eps, a.numpy(), a.shape)
        last = len(self.blocks) - 1
        dims = (d, heads, n_tiles, width, cap)
        for i, blk in enumerate(self.blocks):
            kt, v = cache.kt[i].numpy(), cache.v[i].numpy()
            lin, parts = (blk.qkv, 3) if i < last else (blk.kv_only, 2)  # content rows' last queries are not needed
            for lo, hi in _chunks(n):
                acc = lin.product(a[lo:hi]).numpy()
                slots, q_out = (ix["slot"][lo:hi], q) if i < last else (None, None)
                kernels.project(
                    acc,
                    *lin.integers,
                    parts,
                    ix["tile"][lo:hi],
                    slots,
                    ix["key"][lo:hi],
                    q_out,
                    kt,
                    v,
                    (hi - lo, *dims),
                )
            for lo, hi in _chunks(n):
                acc = blk.q_only.product(a[n + lo : n + hi]).numpy()
                slots = ix["slot_q"][lo:hi] if i < last else ix["slot"][lo:hi]
                kernels.project(
                    acc, *blk.q_only.integers, 1, ix["tile"][lo:hi], slots, None, q, None, None, (hi - lo, *dims)
                )
            if i == last:
                h, a, o = h[n:], a[n:], o[n:]
                rows, sees, index = rows_q, row_keys_last, row_index_last
            else:
                rows, sees, index = rows_all, row_keys, row_index
            shape = (n_tiles, heads, width, d // heads, cap, len(o))
            kernels.attention(
                q, kt, v, rows, keys, sees.numpy(), index.numpy(), o.numpy(), shape, *blk.attention_consts
            )
            norm = self.blocks[i + 1].ln1 if i < last else self.ln_out
            for lo, hi in _chunks(len(h)):
                _block_tail(kernels, blk, norm, h[lo:hi], o[lo:hi], a[lo:hi])
        return a, counts

    def _frequencies_all_torch(
        self, tiles: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]], precision: int
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        n_tiles, d, heads = len(tiles), self.bos.shape[0], self.config["heads"]
        n = max(len(t[0]) for t in tiles)
        valid = torch.zeros(n_tiles, n, dtype=torch.bool)
        kind = torch.zeros(n_tiles, n, dtype=torch.int64)
        pos, value = torch.zeros_like(kind), torch.zeros_like(kind)
        group = torch.full((n_tiles, n), NO_GROUP, dtype=torch.int64)
        for b, (t_kind, t_pos, t_value, t_group) in enumerate(tiles):
            m = len(t_kind)
            valid[b, :m], kind[b, :m], pos[b, :m], value[b, :m], group[b, :m] = True, t_kind, t_pos, t_value, t_group
        # keys: BOS (group -1), then the content slots; rows: BOS and content slots (they see groups
        # up to their own), then the query slots (groups before their own; padding sees only BOS)
        key_group = torch.cat([torch.full((n_tiles, 1), -1), group], 1)
        limit_q = torch.where(valid, group - 1, -1)
        h_c = torch.cat(
            [(self.bos << self.embed_shift).double().expand(n_tiles, 1, d), self._embed_rows(kind, pos, value, valid)],
            1,
        )
        h_q = self.embed_query(kind.view(-1), pos.view(-1)).double().view(n_tiles, n, d)
        last = len(self.blocks) - 1
        for i, blk in enumerate(self.blocks):
            q_c, k, v = (t.view(n_tiles, n + 1, d) for t in _qkv(blk, blk.ln1(h_c.reshape(-1, d))))
            q_q = _query(blk, blk.ln1(h_q.reshape(-1, d))).view(n_tiles, n, d)
            kt = _heads(k, heads).transpose(2, 3).contiguous()
            v1 = torch.ones(n_tiles, heads, n + 1, d // heads + 1)
            v1[..., :-1] = _heads(v, heads)
            if i < last:
                q, limit = torch.cat([q_c, q_q], 1), torch.cat([key_group, limit_q], 1)
            else:  # content slots need only their keys and values in the last block
                q, limit = q_q, limit_q
            o = self._attend(blk, _heads(q, heads), kt, v1, key_group, limit).transpose(1, 2).reshape(-1, d)
            if i < last:
                h = self._finish(blk, torch.cat([h_c, h_q], 1).view(-1, d), o).view(n_tiles, -1, d)
                h_c, h_q = h[:, : n + 1], h[:, n + 1 :]
            else:
                h_q = self._finish(blk, h_q.reshape(-1, d), o).view(n_tiles, n, d)
        a = self.ln_out(h_q.reshape(-1, d)).view(n_tiles, n, d)
        out = []
        for b, t in enumerate(tiles):
            n_map = int((t[0] == KIND_MAP).sum())  # coding order: the MAP stream first
            rows = a[b, : len(t[0])]
            out.append(
                (
                    frequencies(self.map_head(rows[:n_map]), precision),
                    frequencies(self.code_head(rows[n_map:]), precision),
                )
            )
        return out

    def _embed_rows(
        self, kind: torch.Tensor, pos: torch.Tensor, value: torch.Tensor, valid: torch.Tensor
    ) -> torch.Tensor:
        b, n = kind.shape
        rows = self.embed_content(kind.view(-1), pos.view(-1), torch.where(valid, value, 0).view(-1))
        return rows.double().view(b, n, -1)


def _block_tail(
    kernels: ModuleType, blk: IntBlock, norm: IntNorm, h: torch.Tensor, o: torch.Tensor, a: torch.Tensor
) -> None:
    """A block after its attention, by the C kernels, in place: h += proj(o), then the MLP on
    Norm(h; ln2), h += its output, and a = Norm(h; norm) (the next block's ln1, or ln_out). Fused
    into one C call where the C product runs (the same integers, without the intermediate arrays)."""
    hn, an, d = h.numpy(), a.numpy(), h.shape[1]
    if blk.fc1.packed is not None and blk.proj.packed is not None and blk.fc2.packed is not None:
        kernels.block_tail(
            hn,
            o.numpy(),
            blk.proj.fused,
            blk.ln2.fused,
            blk.fc1.fused,
            blk.gelu.numpy(),
            blk.fc2.fused,
            norm.fused,
            an,
            (len(h), d, blk.fc1.weight.shape[1]),
        )
        return
    kernels.norm(hn, blk.proj.product(o).numpy(), *blk.proj.integers, *blk.ln2.fused, an, an.shape)
    g = torch.empty(len(a), blk.fc1.weight.shape[1], dtype=torch.int8)
    acc = blk.fc1.product(a)
    kernels.gelu(acc.numpy(), *blk.fc1.integers, blk.gelu.numpy(), g.numpy(), acc.shape)
    kernels.norm(hn, blk.fc2.product(g).numpy(), *blk.fc2.integers, *norm.fused, an, an.shape)


def _qkv(blk: IntBlock, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Queries (int8), keys (int8, -63..63) and values (int8 values in float32) of rows a."""
    d = len(blk.qkv_max) // 3
    y = blk.qkv(a)
    y = torch.max(torch.min(y, blk.qkv_max, out=y), -blk.qkv_max, out=y)
    return y[:, :d].to(torch.int8), y[:, d : 2 * d].to(torch.int8), y[:, 2 * d :].to(torch.float32)


def _query(blk: IntBlock, a: torch.Tensor) -> torch.Tensor:
    """Queries (int8) of rows a that need no key or value (query slots, or any slot's last block)."""
    return blk.q_only(a).clamp_(-ACT_MAX, ACT_MAX).to(torch.int8)


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, R, d) -> (B, heads, R, d / heads)."""
    b, r, d = x.shape
    return x.reshape(b, r, heads, d // heads).transpose(1, 2)


def _below(t: torch.Tensor, limit: int) -> bool:
    """Every |value| < limit (int64; safe for the most negative int64, whose abs() overflows)."""
    return bool(((t > -limit) & (t < limit)).all())


def _pass_slots(
    cache: KVCache, tile_c: torch.Tensor, tile_q: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Where a pass's rows go. Each tile's rows sit in a padded block, its content rows first,
    then its query rows: rows per tile (content, query), each row's slot in its block (content,
    query), each content row's key in the cache, and the tiles' cache lengths after the pass
    (the cache is grown to hold them)."""
    counts_c = torch.bincount(tile_c, minlength=cache.tiles)
    counts_q = torch.bincount(tile_q, minlength=cache.tiles)
    slot_c = _rank_within(tile_c)
    slot_q = counts_c[tile_q] + _rank_within(tile_q)
    key_c = cache.lengths[tile_c] + slot_c
    new_len = cache.lengths + counts_c
    cache.reserve(int(new_len.max()))
    return counts_c, counts_q, slot_c, slot_q, key_c, new_len


def _chunks(n: int) -> Iterator[tuple[int, int]]:
    """(lo, hi) of the runs of ALL_GROUPS_CHUNK rows that cover n rows."""
    return ((lo, min(n, lo + ALL_GROUPS_CHUNK)) for lo in range(0, n, ALL_GROUPS_CHUNK))


def _rank_within(groups: torch.Tensor) -> torch.Tensor:
    """For a non-decreasing sequence of group numbers, each element's index within its group."""
    if not len(groups):
        return groups
    idx = torch.arange(len(groups))
    starts = torch.ones_like(groups, dtype=torch.bool)
    starts[1:] = groups[1:] != groups[:-1]
    first = torch.cummax(torch.where(starts, idx, 0), 0).values
    return idx - first
