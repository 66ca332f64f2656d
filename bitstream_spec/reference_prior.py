"""A second implementation of the integer prior of FORMAT.md section 8, in numpy int64 alone.

It shares no code with dqcodec (no torch either): it reads the prior's .npz weights, builds the
tables from their exact formulas, orders a tile's tokens as section 4 says, and computes every
group's frequency table with int64 arithmetic. With constriction (the range coder of section 4)
it also decodes a file's tiles to tokens, its colour correction's offsets (section 10) and its
flat blocks (section 12).

    python bitstream_spec/reference_prior.py dqcodec/weights/prior_dq.npz FILE.dqc

prints each tile's symbol count and CRC and the file's symbol and token digests (section 9).
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
import sys
import zlib
from pathlib import Path

import numpy as np

# ----- constants of section 8 ---------------------------------------------------------------
RESID_MAX = (1 << 21) - 1
ACT_MAX = 127
KEY_MAX = 63
LOG2_FRAC = 10
EXP2_POLY = (32768, -22662, 7581, -1303)
ATTN_SUM_BITS = 17
ATTN_EXP_MAX = 16
FREQ_EXP_MAX = 24
FREQ_SHIFT = 36
GELU_HALF = 1024
PRECISION = 20

RSQRT = np.array([(math.isqrt((1 << 42) // m) + 1) // 2 for m in range(1024, 4096)], dtype=np.int64)
RECIP = np.array([(1 << 24) // (m + 1) for m in range(2048, 4096)], dtype=np.int64)

# ----- token order of a tile (section 4) -----------------------------------------------------
KIND_SCALE = (1, 1, 2, 4)  # MAP, C0, C1, C2: token grid in units of the region grid
GRID = tuple(16 * s for s in KIND_SCALE)
POS_OFFSET = tuple(sum(g * g for g in GRID[:k]) for k in range(4))


def group_order(period: int) -> list[tuple[int, int]]:
    if period == 1:
        return [(0, 0)]
    half = group_order(period // 2)
    out = [(2 * a, 2 * b) for a, b in half]
    for oy, ox in ((1, 1), (0, 1), (1, 0)):
        out += [(2 * a + oy, 2 * b + ox) for a, b in half]
    return out


def stream_tokens(kind: int, levels: np.ndarray, idx: list[np.ndarray], period: int) -> list[list[tuple]]:
    """Groups of one stream, in coding order: lists of (kind, position index, value)."""
    s = KIND_SCALE[kind]
    rh, rw = levels.shape
    order = {ab: g for g, ab in enumerate(group_order(period))}
    groups: list[list[tuple]] = [[] for _ in range(period * period)]
    for y in range(rh * s):
        for x in range(rw * s):
            level = int(levels[y // s, x // s])
            if kind == 0:
                value = level
            elif level == kind - 1:
                value = int(idx[kind - 1][y, x])
            else:
                continue
            groups[order[(y % period, x % period)]].append((kind, POS_OFFSET[kind] + y * GRID[kind] + x, value))
    return [g for g in groups if g]


# ----- integer operations ----------------------------------------------------------------------
def bits(v: np.ndarray) -> np.ndarray:
    """Bit length of positive int64 values."""
    out = np.zeros(v.shape, dtype=np.int64)
    w = v.copy()
    while (w > 0).any():
        out += w > 0
        w >>= 1
    return out


def exp2(r: np.ndarray) -> np.ndarray:
    a0, a1, a2, a3 = EXP2_POLY
    h = (a3 * r) >> LOG2_FRAC
    h = ((h + a2) * r) >> LOG2_FRAC
    h = ((h + a1) * r) >> LOG2_FRAC
    return h + a0


def reciprocal(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    e = bits(t) - 1
    return RECIP[(t >> (e - 11)) - 2048], e


class ReferencePrior:
    def __init__(self, path: str | Path) -> None:
        with np.load(path, allow_pickle=False) as z:
            self.cfg = json.loads(z["config"].tobytes().decode())
            self.w = {k: z[k].astype(np.int64) for k in z.files if k not in ("config", "meta")}
        self.d, self.heads = self.cfg["dim"], self.cfg["heads"]
        self.eps = self.cfg["ln_eps"]
        self.shift = self.cfg["embed_shift"]
        self.bos_kv = self._content_kv([], [self.w["bos"] << self.shift])

    def norm(self, x: np.ndarray, name: str) -> np.ndarray:
        d = x.shape[1]
        lg = d.bit_length() - 1
        mu = (x.sum(1, keepdims=True) + d // 2) >> lg
        xc = x - mu
        v = ((xc * xc).sum(1, keepdims=True) >> lg) + self.eps
        t = (bits(v) - 1) >> 1
        m = (v << 10) >> (2 * t)
        n = (xc * RSQRT[m - 1024]) >> (t + 3)
        return np.clip((n * self.w[name + ".gain"] + self.w[name + ".bias"]) >> 24, -ACT_MAX, ACT_MAX)

    def linear(self, a: np.ndarray, name: str) -> np.ndarray:
        acc = a @ self.w[name + ".weight"].T
        return (acc * self.w[name + ".mul"] + self.w[name + ".add"]) >> int(self.w[name + ".shift"])

    def attend(self, q: np.ndarray, k: np.ndarray, v: np.ndarray, blk: str) -> np.ndarray:
        """One head: q (n, dh), keys k and values v (L, dh) the rows may all attend to."""
        w = self.w
        s = q @ k.T
        d = s.max(1, keepdims=True) - s
        e = (d * int(w[blk + "attn.exp_mul"])) >> int(w[blk + "attn.exp_shift"])
        z = e >> LOG2_FRAC
        p = np.where(z >= ATTN_EXP_MAX, 0, exp2(e & 1023) >> np.minimum(z, 62))
        p >>= np.maximum(bits(p.sum(1, keepdims=True)) - ATTN_SUM_BITS, 0)
        total = p.sum(1, keepdims=True)
        r, et = reciprocal(total)
        sh = int(w[blk + "attn.out_shift"]) + et + 13
        out = (p @ v) * r * int(w[blk + "attn.out_mul"])
        return np.clip((out + (1 << (sh - 1))) >> sh, -ACT_MAX, ACT_MAX)

    def block_rows(self, i: int, h: np.ndarray, keys: list[np.ndarray], vals: list[np.ndarray], q: np.ndarray):
        """Attention, projection and MLP of block i for rows h with queries q, over (keys, vals) per head."""
        blk = f"blocks.{i}."
        dh = self.d // self.heads
        o = np.concatenate(
            [self.attend(q[:, j * dh : (j + 1) * dh], keys[j], vals[j], blk) for j in range(self.heads)], 1
        )
        h = np.clip(h + self.linear(o, blk + "proj"), -RESID_MAX, RESID_MAX)
        u = np.clip(self.linear(self.norm(h, blk + "ln2"), blk + "fc1"), -GELU_HALF, GELU_HALF - 1)
        g = self.w[blk + "gelu"][u + GELU_HALF]
        return np.clip(h + self.linear(g, blk + "fc2"), -RESID_MAX, RESID_MAX)

    def embed(self, tokens: list[tuple], query: bool) -> np.ndarray:
        w = self.w
        rows = []
        for kind, pos, value in tokens:
            val = w["query_embed"] if query else (w["level_embed"][value] if kind == 0 else w["content_embed"][value])
            rows.append((w["pos_embed"][pos] + w["kind_embed"][kind] + val) << self.shift)
        return np.array(rows, dtype=np.int64).reshape(len(rows), self.d)

    def _content_kv(self, cache: list, rows: list[np.ndarray]) -> list:
        """Add content rows to a tile's cache (a list per block of (keys, values) per head):
        they attend to the cache and to each other."""
        h = np.array(rows, dtype=np.int64).reshape(len(rows), self.d)
        dh, d = self.d // self.heads, self.d
        new = []
        for i in range(self.cfg["layers"]):
            qkv = np.clip(self.linear(self.norm(h, f"blocks.{i}.ln1"), f"blocks.{i}.qkv"), -ACT_MAX, ACT_MAX)
            qkv[:, d : 2 * d] = np.clip(qkv[:, d : 2 * d], -KEY_MAX, KEY_MAX)
            ks = [qkv[:, d + j * dh : d + (j + 1) * dh] for j in range(self.heads)]
            vs = [qkv[:, 2 * d + j * dh : 2 * d + (j + 1) * dh] for j in range(self.heads)]
            if cache:
                ks = [np.concatenate([ck, k]) for ck, k in zip(cache[i][0], ks)]
                vs = [np.concatenate([cv, v]) for cv, v in zip(cache[i][1], vs)]
            new.append((ks, vs))
            if i + 1 < self.cfg["layers"]:
                h = self.block_rows(i, h, ks, vs, qkv[:, :d])
        return new

    def _query_freqs(self, cache: list, tokens: list[tuple]) -> np.ndarray:
        h = self.embed(tokens, query=True)
        d = self.d
        for i in range(self.cfg["layers"]):
            q = np.clip(self.linear(self.norm(h, f"blocks.{i}.ln1"), f"blocks.{i}.qkv")[:, :d], -ACT_MAX, ACT_MAX)
            h = self.block_rows(i, h, cache[i][0], cache[i][1], q)
        head = "map_head" if tokens[0][0] == 0 else "code_head"
        logits = self.linear(self.norm(h, "ln_out"), head)
        return frequencies(logits)

    def tile_frequencies(self, levels: np.ndarray, idx: list[np.ndarray], periods: tuple[int, ...], coder=None):
        """Every group's frequency table for a tile's tokens, in coding order. With `coder`
        (freq, values or None) -> values, the values come from it (decoding) instead."""
        cache = self.bos_kv
        out = []
        map_groups = stream_tokens(0, levels, idx, periods[0])
        pending: list[tuple] = []

        def run(groups: list[list[tuple]]) -> list[list[tuple]]:
            nonlocal cache, pending
            coded = []
            for g in groups:
                if pending:
                    cache = self._content_kv(cache, list(self.embed(pending, query=False)))
                f = self._query_freqs(cache, g)
                out.append(f)
                values = [t[2] for t in g] if coder is None else list(coder(f, None))
                pending = [(k, p, int(v)) for (k, p, _), v in zip(g, values)]
                coded.append(pending)
            return coded

        decoded_map = run(map_groups)
        if coder is not None:  # the content streams follow the decoded map
            levels = np.zeros_like(levels)
            for g in decoded_map:
                for _, pos, value in g:
                    levels[pos // 16, pos % 16] = value
        content = [g for kind in (1, 2, 3) for g in stream_tokens(kind, levels, idx, periods[kind])]
        decoded = run(content)
        return out, levels, decoded_map + decoded


def frequencies(logits: np.ndarray) -> np.ndarray:
    n, k = logits.shape
    d = logits.max(1, keepdims=True) - logits
    z = d >> LOG2_FRAC
    p = np.where(z >= FREQ_EXP_MAX, 0, (exp2(d & 1023) << 8) >> np.minimum(z, 62))
    r, e = reciprocal(p.sum(1, keepdims=True))
    w = (((1 << PRECISION) - k) * r) >> (e - 23)
    f = ((p * w) >> FREQ_SHIFT) + 1
    rest = (1 << PRECISION) - f.sum(1)
    f[np.arange(n), f.argmax(1)] += rest
    return f


# ----- decoding a file (sections 1-4, 9) -----------------------------------------------------
def read_tiles(data: bytes) -> tuple[tuple[int, int], tuple[int, ...], list[tuple[int, int, bytes]]]:
    """(coded width, height), periods, and (num_symbols, crc, words) of each tile."""
    pos, size, periods, tiles = 9, None, None, []
    while pos < len(data):
        length, kind = struct.unpack_from(">I4s", data, pos)
        payload = data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"HEAD":
            w, h, *_, p0, p1, p2, p3, _prec = struct.unpack(">IIBH16sHH4BB", payload)
            size, periods = size or (w, h), (p0, p1, p2, p3)
        elif kind == b"RSMP":
            size = struct.unpack(">II", payload)
        elif kind == b"TILE":
            _, n, crc = struct.unpack_from(">III", payload)
            tiles.append((n, crc, payload[12:]))
    assert size is not None and periods is not None
    return size, periods, tiles


def decode_file(prior: ReferencePrior, data: bytes) -> tuple[list[list[int]], np.ndarray, list[np.ndarray]]:
    """Each tile's symbols, and the picture's granularity map and index maps."""
    import constriction

    model = constriction.stream.model.Categorical(perfect=False)
    (cw, ch), periods, tiles = read_tiles(data)
    rh, rw = -(-ch // 16), -(-cw // 16)
    levels = np.zeros((rh, rw), dtype=np.int64)
    idx = [np.zeros((rh * s, rw * s), dtype=np.int64) for s in (1, 2, 4)]
    symbols = []
    t = 0
    for y0 in range(0, rh, 16):
        for x0 in range(0, rw, 16):
            th, tw = min(16, rh - y0), min(16, rw - x0)
            dec = constriction.stream.queue.RangeDecoder(np.frombuffer(tiles[t][2], dtype="<u4").astype(np.uint32))
            got: list[int] = []

            def coder(f: np.ndarray, _v: None, dec=dec, got=got) -> np.ndarray:
                v = np.asarray(dec.decode(model, f.astype(np.float64) / 2**PRECISION), dtype=np.int64)
                got.extend(v.tolist())
                return v

            zeros = [np.zeros((th * s, tw * s), dtype=np.int64) for s in (1, 2, 4)]
            _, t_levels, groups = prior.tile_frequencies(np.zeros((th, tw), dtype=np.int64), zeros, periods, coder)
            levels[y0 : y0 + th, x0 : x0 + tw] = t_levels
            for g in groups:
                for kind, pos, value in g:
                    if kind:
                        p, s = pos - POS_OFFSET[kind], KIND_SCALE[kind]
                        idx[kind - 1][y0 * s + p // GRID[kind], x0 * s + p % GRID[kind]] = value
            symbols.append(got)
            t += 1
    return symbols, levels, idx


# ----- the colour correction (section 10) -----------------------------------------------------
def read_chunk(data: bytes, kind: bytes) -> tuple[tuple[int, int], bytes | None]:
    """(width, height) of HEAD and the payload of the file's `kind` chunk, None where it has none."""
    pos, size, payload = 9, None, None
    while pos < len(data):
        length, found = struct.unpack_from(">I4s", data, pos)
        if found == b"HEAD":
            size = struct.unpack_from(">II", data, pos + 8)
        elif found == kind:
            payload = data[pos + 8 : pos + 8 + length]
        pos += 12 + length
    assert size is not None
    return size, payload


def colour_offsets(data: bytes) -> np.ndarray | None:
    """The offsets (channels, gh, gw) of a file's CCOR chunk (section 10.1-10.2), None without one."""
    import constriction

    (width, height), payload = read_chunk(data, b"CCOR")
    if payload is None:
        return None
    block_log2, _step, channels, decay = struct.unpack_from(">BBBH", payload)
    block = 2**block_log2
    gh, gw = -(-height // block), -(-width // block)
    h = [2**16]
    for _ in range(254):
        h.append(max(1, (h[-1] * decay) >> 16))
    raw = np.array(h[:0:-1] + h, dtype=np.int64)
    scale = ((2**20 - 509) << 32) // int(raw.sum())
    f = 1 + ((raw * scale) >> 32)
    f[254] += 2**20 - int(f.sum())
    model = constriction.stream.model.Categorical(f.astype(np.float64) / 2**20, perfect=False)
    dec = constriction.stream.queue.RangeDecoder(np.frombuffer(payload[5:], dtype="<u4").astype(np.uint32))
    residuals = np.asarray(dec.decode(model, gh * gw * channels), dtype=np.int64).reshape(gh, gw, channels) - 254
    q = np.zeros((channels, gh, gw), dtype=np.int64)
    for c in range(channels):
        for y in range(gh):
            for x in range(gw):
                a = q[c, y, x - 1] if x else 0
                b = q[c, y - 1, x] if y else 0
                ul = q[c, y - 1, x - 1] if x and y else 0
                pred = min(a, b) if ul >= max(a, b) else max(a, b) if ul <= min(a, b) else a + b - ul
                q[c, y, x] = residuals[y, x, c] + pred
    return q


def colour_digest(offsets: np.ndarray) -> str:
    """SHA-256 of the offsets as little-endian int16, channel by channel, rows in raster order."""
    return hashlib.sha256(offsets.astype("<i2").tobytes()).hexdigest()


# ----- the flat blocks (section 12) -------------------------------------------------------------
def flat_blocks(data: bytes) -> tuple[np.ndarray, np.ndarray] | None:
    """The flags (gh, gw) and the colours (n, channels) of a file's FLAT chunk (section 12.1-12.2),
    None without one."""
    import constriction

    (width, height), payload = read_chunk(data, b"FLAT")
    if payload is None:
        return None
    block_log2, channels, share, decay = struct.unpack_from(">BBHH", payload)
    block = 2**block_log2
    gh, gw = -(-height // block), -(-width // block)
    flags_f = np.array([2**20 - 16 * share, 16 * share], dtype=np.float64) / 2**20
    h = [2**16]
    for _ in range(128):
        h.append(max(1, (h[-1] * decay) >> 16))
    raw = np.array([h[min(r, 256 - r)] for r in range(256)], dtype=np.int64)
    scale = ((2**20 - 256) << 32) // int(raw.sum())
    f = 1 + ((raw * scale) >> 32)
    f[0] += 2**20 - int(f.sum())
    dec = constriction.stream.queue.RangeDecoder(np.frombuffer(payload[6:], dtype="<u4").astype(np.uint32))
    flags = np.asarray(dec.decode(constriction.stream.model.Categorical(flags_f, perfect=False), gh * gw))
    model = constriction.stream.model.Categorical(f.astype(np.float64) / 2**20, perfect=False)
    symbols = np.asarray(dec.decode(model, int(flags.sum()) * channels), dtype=np.int64).reshape(-1, channels)
    colours, previous = [], [128] * channels
    for row in symbols:
        previous = [(p + int(r)) % 256 for p, r in zip(previous, row)]
        colours.append(previous)
    return flags.reshape(gh, gw).astype(np.uint8), np.array(colours, dtype=np.uint8).reshape(-1, channels)


def flat_digest(flags: np.ndarray, colours: np.ndarray) -> str:
    """SHA-256 of the flags (a byte per block, raster order) followed by the colours (coding order)."""
    return hashlib.sha256(flags.astype(np.uint8).tobytes() + colours.astype(np.uint8).tobytes()).hexdigest()


def token_digest(levels: np.ndarray, idx: list[np.ndarray]) -> str:
    """SHA-256 of the map (a byte per region) and each level's codes in its regions (uint16 LE)."""
    h = hashlib.sha256(levels.astype(np.uint8).tobytes())
    for level, s in enumerate((1, 2, 4)):
        mask = np.kron(levels == level, np.ones((s, s), dtype=bool))
        h.update(idx[level][mask].astype("<u2").tobytes())
    return h.hexdigest()


def main() -> None:
    prior = ReferencePrior(sys.argv[1])
    data = Path(sys.argv[2]).read_bytes()
    symbols, levels, idx = decode_file(prior, data)
    for i, s in enumerate(symbols):
        print(f"tile {i}: {len(s)} symbols, crc {zlib.crc32(np.asarray(s, dtype='<i4').tobytes())}")
    print("symbols_sha256", hashlib.sha256(b"".join(np.asarray(s, dtype="<i4").tobytes() for s in symbols)).hexdigest())
    print("tokens_sha256", token_digest(levels, idx))
    offsets = colour_offsets(data)
    if offsets is not None:
        print("colour_sha256", colour_digest(offsets))
    found = flat_blocks(data)
    if found is not None:
        print("flat_sha256", flat_digest(*found))


if __name__ == "__main__":
    main()
