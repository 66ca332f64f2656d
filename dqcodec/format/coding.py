"""Tokens <-> range-coded tiles, through the integer prior (FORMAT.md, sections 4 and 8).

A picture's token maps are cut into tiles of up to 16x16 regions; each tile is one range-coded
stream of its MAP, C0, C1 and C2 tokens in the schedule's group order. Tiles are independent, so
they run through the prior side by side, a batch at a time: one pass per group for all of them.
Encoder, decoder and the rate estimate all run `_code_batch`, so they see the same frequencies.
"""

from __future__ import annotations

import hashlib
import os
import threading
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np
import torch

from dqcodec import progress
from dqcodec.errors import DQCError, IntegrityError
from dqcodec.format import bitstream
from dqcodec.format.entropy import PRECISION, SymbolDecoder, SymbolEncoder
from dqcodec.format.intmath import native_kernels
from dqcodec.format.intprior import IntPrior
from dqcodec.format.tokens import (
    KIND_MAP,
    KIND_SCALE,
    MAX_REGIONS,
    POS_OFFSET,
    Schedule,
    TileTokens,
    tile_tokens,
    token_regions,
)
from dqcodec.models.dqvae import Tokens

TILE_SIZE = 16 * MAX_REGIONS  # pixels per tile side
TILE_BATCH = 8  # tiles that go through the prior together, per thread (memory grows with it)

# A coder gets the frequencies (n, k) of a group's n tokens and their values (encoder) or None
# (decoder), and returns the values.
SymbolCoder = Callable[[np.ndarray, np.ndarray | None], np.ndarray]
Grid = list[tuple[int, int, int, int]]


def tile_grid(rh: int, rw: int) -> Grid:
    """(y0, x0, h, w) of each tile on the region grid, raster order."""
    return [
        (y0, x0, min(MAX_REGIONS, rh - y0), min(MAX_REGIONS, rw - x0))
        for y0 in range(0, rh, MAX_REGIONS)
        for x0 in range(0, rw, MAX_REGIONS)
    ]


def tile_of(levels: torch.Tensor, idx: tuple[torch.Tensor, ...], y0: int, x0: int, th: int, tw: int) -> Tokens:
    """The tokens of one tile of a picture's maps."""
    t_idx = tuple(t[y0 * s : (y0 + th) * s, x0 * s : (x0 + tw) * s] for t, s in zip(idx, KIND_SCALE[1:]))
    return Tokens(levels[y0 : y0 + th, x0 : x0 + tw], t_idx)  # type: ignore[arg-type]


def symbols_crc(symbols: list[int]) -> int:
    return zlib.crc32(np.asarray(symbols, dtype="<i4").tobytes())


@contextmanager
def threads(n: int | None) -> Iterator[None]:
    """torch's CPU threads (intra-op) for the duration; None: as they are."""
    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _run_batches(fn: Callable[[list[int]], None], n: int, workers: int | None, stage: str | None = None) -> None:
    """fn(batch) over batches of tile numbers 0..n-1. With several workers and at least as many
    tiles, tiles go round-robin to one thread per worker, each running its batches on one torch
    thread; with fewer tiles, one batch at a time on `workers` torch threads. `stage`: report the
    tiles done (`progress`)."""
    workers = max(1, workers or os.cpu_count() or 1)
    listener, lock, done = progress.current() if stage else None, threading.Lock(), [0]

    def run(batch: list[int]) -> None:
        fn(batch)
        if listener is not None and stage is not None:
            with lock:
                done[0] += len(batch)
                listener(stage, done[0], n)

    if listener is not None and stage is not None:
        listener(stage, 0, n)
    if workers == 1 or n < workers:
        with threads(workers):
            for start in range(0, n, TILE_BATCH):
                run(list(range(start, min(n, start + TILE_BATCH))))
        return

    def worker(w: int) -> None:
        mine = list(range(w, n, workers))
        with torch.inference_mode():
            for start in range(0, len(mine), TILE_BATCH):
                run(mine[start : start + TILE_BATCH])

    with threads(1), ThreadPoolExecutor(workers) as pool:
        list(pool.map(worker, range(workers)))


def _subset(t: TileTokens, keep: torch.Tensor) -> TileTokens:
    return TileTokens(t.kind[keep], t.pos[keep], t.value[keep], t.group[keep])


@torch.inference_mode()
def _code_batch(
    prior: IntPrior,
    shapes: list[tuple[int, int]],
    schedule: Schedule,
    coders: list[SymbolCoder],
    known: list[Tokens] | None,
) -> list[tuple[torch.Tensor, list[torch.Tensor], list[int]]]:
    """Run the prior over tiles of `shapes` (regions), group by group, all tiles in each pass;
    `coders[i]` codes tile i's symbols. Returns each tile's levels, index maps and symbols."""
    n = len(shapes)
    cache = prior.new_cache(n, capacity=1 + max(h * w for h, w in shapes))
    symbols: list[list[int]] = [[] for _ in range(n)]
    pending: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None] = [None] * n

    def run(streams: list[TileTokens]) -> list[torch.Tensor]:
        values = [torch.empty_like(t.value) for t in streams]
        groups = [t.group.tolist() for t in streams]
        starts = [0] * n
        for g in sorted(set().union(*groups)):
            query: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * n
            spans: list[slice | None] = [None] * n
            for i, t in enumerate(streams):
                end = starts[i]
                while end < len(groups[i]) and groups[i][end] == g:
                    end += 1
                if end > starts[i]:
                    spans[i] = slice(starts[i], end)
                    query[i] = (t.kind[spans[i]], t.pos[spans[i]])
                    starts[i] = end
            freqs = prior.step(cache, pending, query, PRECISION)
            for i, sl in enumerate(spans):
                pending[i] = None
                if sl is None:
                    continue
                t = streams[i]
                given = t.value[sl].numpy() if known is not None else None
                got = torch.from_numpy(np.asarray(coders[i](freqs[i], given), dtype=np.int64))  # type: ignore[arg-type]
                values[i][sl] = got
                symbols[i].extend(got.tolist())
                pending[i] = (t.kind[sl], t.pos[sl], got)
        return values

    zero_levels = [torch.zeros(h, w, dtype=torch.long) for h, w in shapes]
    zero_idx = [tuple(torch.zeros(h * s, w * s, dtype=torch.long) for s in KIND_SCALE[1:]) for h, w in shapes]
    if known is not None:
        firsts = [tile_tokens(k.levels, k.idx, schedule) for k in known]
    else:
        firsts = [tile_tokens(lv, ix, schedule) for lv, ix in zip(zero_levels, zero_idx)]  # type: ignore[arg-type]
    maps = [_subset(t, t.kind == KIND_MAP) for t in firsts]
    map_values = run(maps)
    levels = [_map_from_pos(m.pos, v, *hw) for m, v, hw in zip(maps, map_values, shapes)]
    idx_in = [k.idx for k in known] if known is not None else zero_idx
    fulls = [tile_tokens(lv, ix, schedule) for lv, ix in zip(levels, idx_in)]  # type: ignore[arg-type]
    contents = [_subset(t, t.kind != KIND_MAP) for t in fulls]
    cache.reserve(int(cache.lengths.max()) + max(len(c.kind) for c in contents) + 1)
    content_values = run(contents)
    out = []
    for i, (h, w) in enumerate(shapes):
        idx = [torch.zeros(h * s, w * s, dtype=torch.long) for s in KIND_SCALE[1:]]
        c = contents[i]
        for level in range(3):
            sel = c.kind == level + 1
            grid = MAX_REGIONS * KIND_SCALE[level + 1]
            p = c.pos[sel] - POS_OFFSET[level + 1]
            idx[level][p // grid, p % grid] = content_values[i][sel]
        out.append((levels[i], idx, symbols[i]))
    return out


@torch.inference_mode()
def _code_known(prior: IntPrior, known: list[Tokens], schedule: Schedule, coders: list[SymbolCoder]) -> list[list[int]]:
    """The encoder's pass: `coders[i]` codes tile i's tokens, all known, in coding order. By the C
    kernels, one pass over every group at once (`IntPrior.tables_all`: the same tables as group by
    group, without a pass per group); else group by group. Returns each tile's symbols."""
    if native_kernels() is None:
        shapes = [(int(k.levels.shape[0]), int(k.levels.shape[1])) for k in known]
        return [symbols for _, _, symbols in _code_batch(prior, shapes, schedule, coders, known)]
    tokens = [tile_tokens(k.levels, k.idx, schedule) for k in known]
    for t, code in zip(tokens, coders):  # a tile at a time: a pass over all its groups is big enough
        for _, first, freq in prior.tables_all([(t.kind, t.pos, t.value, t.group)], PRECISION):
            code(freq, t.value[first : first + len(freq)].numpy())
    return [t.value.tolist() for t in tokens]


def _map_from_pos(pos: torch.Tensor, values: torch.Tensor, rh: int, rw: int) -> torch.Tensor:
    levels = torch.zeros(rh, rw, dtype=torch.long)
    levels[pos // MAX_REGIONS, pos % MAX_REGIONS] = values
    return levels


def encode_tiles(
    prior: IntPrior,
    levels: torch.Tensor,
    idx: tuple[torch.Tensor, ...],
    schedule: Schedule,
    workers: int | None = None,
    region_bits: torch.Tensor | None = None,
) -> list[bitstream.Tile]:
    """Range-code a picture's granularity map (rh, rw) and index maps, tile by tile. If given,
    `region_bits` (rh, rw) float64 receives each region's code length under the prior: its map
    symbol and its codes, in bits (rate control's measurement; the range coder's words add the
    tile's flush)."""
    grid = tile_grid(*levels.shape)
    tiles: list[bitstream.Tile | None] = [None] * len(grid)

    def coder(enc: SymbolEncoder, lengths: list[np.ndarray]) -> SymbolCoder:
        def code(freq: np.ndarray, values: np.ndarray | None) -> np.ndarray:
            assert values is not None
            enc.encode(values, freq)
            if region_bits is not None:
                lengths.append(-np.log2(freq[np.arange(len(values)), values] / 2.0**PRECISION))
            return values

        return code

    def run(batch: list[int]) -> None:
        encoders = [SymbolEncoder() for _ in batch]
        lengths: list[list[np.ndarray]] = [[] for _ in batch]
        known = [tile_of(levels, idx, *grid[i]) for i in batch]
        results = _code_known(prior, known, schedule, [coder(e, b) for e, b in zip(encoders, lengths)])
        for i, enc, symbols in zip(batch, encoders, results):
            tiles[i] = bitstream.Tile(i, len(symbols), symbols_crc(symbols), enc.finish())
        if region_bits is not None:
            for i, k, tile_lengths in zip(batch, known, lengths):
                ry, rx = token_regions(tile_tokens(k.levels, k.idx, schedule))  # the coding order
                y0, x0, th, tw = grid[i]
                per_region = torch.zeros(th * MAX_REGIONS, dtype=torch.float64)
                per_region.index_add_(0, ry * MAX_REGIONS + rx, torch.from_numpy(np.concatenate(tile_lengths)))
                region_bits[y0 : y0 + th, x0 : x0 + tw] = per_region.view(th, MAX_REGIONS)[:, :tw]

    _run_batches(run, len(grid), workers, "coding tiles")
    return tiles  # type: ignore[return-value]


def decode_tiles(
    prior: IntPrior, tiles: list[bitstream.Tile], rh: int, rw: int, schedule: Schedule, workers: int | None = None
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Entropy-decode and verify the tiles of a (rh, rw) region grid: (levels, index maps)."""
    levels = torch.zeros(rh, rw, dtype=torch.long)
    idx = [torch.zeros(rh * s, rw * s, dtype=torch.long) for s in KIND_SCALE[1:]]
    grid = tile_grid(rh, rw)

    def coder(dec: SymbolDecoder, tile: bitstream.Tile) -> SymbolCoder:
        def code(freq: np.ndarray, _values: np.ndarray | None) -> np.ndarray:
            try:
                return dec.decode(freq)
            except Exception:  # the range decoder ran off corrupt data
                raise IntegrityError(f"tile {tile.index} does not decode (the file is corrupt)") from None

        return code

    def run(batch: list[int]) -> None:
        shapes = [grid[i][2:] for i in batch]
        coders = [coder(SymbolDecoder(tiles[i].data), tiles[i]) for i in batch]
        try:
            results = _code_batch(prior, shapes, schedule, coders, None)
        except DQCError:
            raise
        except Exception:  # a corrupt stream decoded to symbols that make no valid tile
            raise IntegrityError(f"tile {tiles[batch[0]].index} does not decode (the file is corrupt)") from None
        for i, (t_levels, t_idx, symbols) in zip(batch, results):
            tile = tiles[i]
            if len(symbols) != tile.num_symbols or symbols_crc(symbols) != tile.symbol_crc:
                raise IntegrityError(f"tile {tile.index} decoded to different symbols than were encoded (corrupt file)")
            y0, x0, th, tw = grid[i]
            levels[y0 : y0 + th, x0 : x0 + tw] = t_levels
            for t, ti, s in zip(idx, t_idx, KIND_SCALE[1:]):
                t[y0 * s : (y0 + th) * s, x0 * s : (x0 + tw) * s] = ti

    _run_batches(run, len(grid), workers, "decoding tiles")
    return levels, idx


def tile_bits(prior: IntPrior, tiles: list[Tokens], schedule: Schedule, workers: int | None = None) -> list[float]:
    """Bits the range coder spends on each tile's tokens (exact code lengths under the prior)."""
    bits = [0.0] * len(tiles)

    def counter(i: int) -> SymbolCoder:
        def code(freq: np.ndarray, values: np.ndarray | None) -> np.ndarray:
            assert values is not None
            bits[i] -= float(np.log2(freq[np.arange(len(values)), values] / 2.0**PRECISION).sum())
            return values

        return code

    def run(batch: list[int]) -> None:
        _code_known(prior, [tiles[i] for i in batch], schedule, [counter(i) for i in batch])

    _run_batches(run, len(tiles), workers)
    return bits


def token_bits(
    prior: IntPrior, levels: torch.Tensor, idx: tuple[torch.Tensor, ...], schedule: Schedule, workers: int | None = None
) -> float:
    """Bits the range coder spends on a picture's tokens (exact code lengths under the prior)."""
    tiles = [tile_of(levels, idx, *g) for g in tile_grid(*levels.shape)]
    return sum(tile_bits(prior, tiles, schedule, workers))


def frequency_tables(prior: IntPrior, tiles: list[Tokens], schedule: Schedule) -> list[list[tuple[int, np.ndarray]]]:
    """Every group's frequency table of each tile (group number, (n, k) table): what the range
    coder sees, for comparison with another implementation of the prior."""
    tables: list[list[tuple[int, np.ndarray]]] = [[] for _ in tiles]

    def recorder(i: int) -> SymbolCoder:
        def code(freq: np.ndarray, values: np.ndarray | None) -> np.ndarray:
            assert values is not None
            tables[i].append((len(tables[i]), freq.copy()))
            return values

        return code

    shapes = [(int(t.levels.shape[0]), int(t.levels.shape[1])) for t in tiles]
    _code_batch(prior, shapes, schedule, [recorder(i) for i in range(len(tiles))], tiles)
    return tables


def digests(levels: torch.Tensor, idx: tuple[torch.Tensor, ...], schedule: Schedule) -> tuple[str, str]:
    """(symbols, tokens) SHA-256 digests of a picture's tokens (FORMAT.md, section 9): the symbols
    of every tile in coding order as little-endian int32, tile after tile; and the granularity map
    (a byte per region, raster order) followed by each level's codes in the regions of that level
    (raster order of the level's grid) as little-endian uint16."""
    symbols = hashlib.sha256()
    for g in tile_grid(*levels.shape):
        t = tile_of(levels, idx, *g)
        symbols.update(tile_tokens(t.levels, t.idx, schedule).value.numpy().astype("<i4").tobytes())
    tokens = hashlib.sha256(levels.numpy().astype(np.uint8).tobytes())
    for level, s in enumerate(KIND_SCALE[1:]):
        mask = (levels == level).repeat_interleave(s, 0).repeat_interleave(s, 1)
        tokens.update(idx[level][mask].numpy().astype("<u2").tobytes())
    return symbols.hexdigest(), tokens.hexdigest()
