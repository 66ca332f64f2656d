"""The coarse-to-fine token order of one tile, shared by prior training and the codec.

A tile of at most 16x16 regions (256x256 px) is coded as four streams, in this order:

    kind 0  MAP  the level of every region               (grid = region grid)
    kind 1  C0   codes of coarse regions                 (grid = region grid)
    kind 2  C1   codes of medium regions, 2x2 per region (grid = 2x region grid)
    kind 3  C2   codes of fine regions, 4x4 per region   (grid = 4x region grid)

Each stream is split into groups by a period P (a power of two): a token at grid position (y, x)
belongs to group `group_order_table(P)[y % P, x % P]`. Groups are coded one after another; all
tokens of a group are predicted in one pass from everything coded before. P = 1 codes a stream in
one pass; P equal to the grid size codes it token by token (a fully sequential order).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import torch

NUM_KINDS = 4
KIND_MAP, KIND_C0, KIND_C1, KIND_C2 = range(NUM_KINDS)
KIND_SCALE = (1, 1, 2, 4)  # token grid size in units of the region grid
MAX_REGIONS = 16  # region grid side of a full tile
KIND_GRID = tuple(MAX_REGIONS * s for s in KIND_SCALE)
POS_OFFSET = tuple(sum(g * g for g in KIND_GRID[:k]) for k in range(NUM_KINDS))
NUM_POSITIONS = sum(g * g for g in KIND_GRID)
KIND_LEVEL = (None, 0, 1, 2)  # region level whose codes a content stream carries


@cache
def group_order(period: int) -> tuple[tuple[int, int], ...]:
    """Offsets (a, b) in [0, P)^2 in coding order: a coarse lattice first, then its refinements."""
    if period == 1:
        return ((0, 0),)
    if period % 2:
        raise ValueError(f"group period must be a power of two, got {period}")
    half = group_order(period // 2)
    out = [(2 * a, 2 * b) for a, b in half]
    for oy, ox in ((1, 1), (0, 1), (1, 0)):
        out += [(2 * a + oy, 2 * b + ox) for a, b in half]
    return tuple(out)


@cache
def group_order_table(period: int) -> torch.Tensor:
    table = torch.empty(period, period, dtype=torch.long)
    for g, (a, b) in enumerate(group_order(period)):
        table[a, b] = g
    return table


@dataclass(frozen=True)
class Schedule:
    """Group periods of the four streams (MAP, C0, C1, C2)."""

    periods: tuple[int, int, int, int] = (4, 4, 4, 4)

    def __post_init__(self) -> None:
        for p in self.periods:
            if p < 1 or p & (p - 1) or p > 64:
                raise ValueError(f"group period must be a power of two in 1..64, got {p}")

    def group_offsets(self) -> tuple[int, ...]:
        out, acc = [], 0
        for p in self.periods:
            out.append(acc)
            acc += p * p
        return tuple(out)


@dataclass
class TileTokens:
    """Tokens of one tile in coding order (sorted by group, then kind, then raster)."""

    kind: torch.Tensor  # (N,) long
    pos: torch.Tensor  # (N,) long, index into the prior's position table
    value: torch.Tensor  # (N,) long, level for MAP tokens, code index otherwise
    group: torch.Tensor  # (N,) long, global group number


def token_regions(t: TileTokens) -> tuple[torch.Tensor, torch.Tensor]:
    """(y, x) on the tile's region grid of the region each token belongs to."""
    scale = torch.tensor(KIND_SCALE)[t.kind]
    grid = torch.tensor(KIND_GRID)[t.kind]
    p = t.pos - torch.tensor(POS_OFFSET)[t.kind]
    return p // grid // scale, p % grid // scale


def _kind_positions(kind: int, rh: int, rw: int) -> tuple[torch.Tensor, torch.Tensor]:
    s = KIND_SCALE[kind]
    ys, xs = torch.meshgrid(torch.arange(rh * s), torch.arange(rw * s), indexing="ij")
    return ys.reshape(-1), xs.reshape(-1)


def tile_tokens(
    levels: torch.Tensor, idx: tuple[torch.Tensor, torch.Tensor, torch.Tensor], schedule: Schedule
) -> TileTokens:
    """Order the tokens of one tile. levels (rh, rw); idx[l] (rh*s, rw*s) with s = 1, 2, 4."""
    rh, rw = levels.shape
    offsets = schedule.group_offsets()
    parts = []
    for kind in range(NUM_KINDS):
        ys, xs = _kind_positions(kind, rh, rw)
        s = KIND_SCALE[kind]
        region_level = levels[ys // s, xs // s]
        if kind == KIND_MAP:
            keep = torch.ones_like(ys, dtype=torch.bool)
            values = region_level
        else:
            keep = region_level == KIND_LEVEL[kind]
            values = idx[KIND_LEVEL[kind]][ys, xs]
        ys, xs, values = ys[keep], xs[keep], values[keep]
        p = schedule.periods[kind]
        groups = offsets[kind] + group_order_table(p)[ys % p, xs % p]
        pos = POS_OFFSET[kind] + ys * KIND_GRID[kind] + xs
        parts.append((torch.full_like(ys, kind), pos, values, groups))
    kind_t, pos_t, value_t, group_t = (torch.cat(t) for t in zip(*parts))
    order = torch.argsort(group_t, stable=True)
    return TileTokens(kind_t[order], pos_t[order], value_t[order].long(), group_t[order])


def batch_tile_tokens(
    levels: torch.Tensor, idx: tuple[torch.Tensor, torch.Tensor, torch.Tensor], periods: torch.Tensor
) -> tuple[TileTokens, torch.Tensor]:
    """Vectorised `tile_tokens` for a batch of full tiles (training).

    levels (B, 16, 16), idx as in `tile_tokens` with a batch dimension, periods (B, 4).
    Returns padded tokens (B, N) and a validity mask (B, N); padding has group 2**30.
    Tokens are in canonical (kind, raster) order; attention masks come from the groups.
    """
    b, rh, rw = levels.shape
    dev = levels.device
    kinds, poss, vals, ys_all, xs_all, keeps = [], [], [], [], [], []
    for kind in range(NUM_KINDS):
        ys, xs = (t.to(dev) for t in _kind_positions(kind, rh, rw))
        s = KIND_SCALE[kind]
        region_level = levels[:, ys // s, xs // s]
        if kind == KIND_MAP:
            keep = torch.ones_like(region_level, dtype=torch.bool)
            values = region_level
        else:
            keep = region_level == KIND_LEVEL[kind]
            values = idx[KIND_LEVEL[kind]][:, ys, xs]
        kinds.append(torch.full_like(values, kind))
        poss.append((POS_OFFSET[kind] + ys * KIND_GRID[kind] + xs).expand(b, -1))
        vals.append(values)
        ys_all.append(ys.expand(b, -1))
        xs_all.append(xs.expand(b, -1))
        keeps.append(keep)
    kind_t, pos_t, val_t, ys_t, xs_t, keep_t = (torch.cat(t, 1) for t in (kinds, poss, vals, ys_all, xs_all, keeps))
    # group numbers: periods differ per sample and stream
    p = periods.gather(1, kind_t)  # (B, N)
    sq = periods * periods
    offsets = torch.cumsum(sq, 1) - sq
    table = torch.full((7, 64, 64), 0, dtype=torch.long, device=dev)
    for i in range(7):
        per = 1 << i
        table[i] = group_order_table(per).to(dev).repeat(64 // per, 64 // per)
    log_p = torch.log2(p.float()).round().long()
    group = offsets.gather(1, kind_t) + table[log_p, ys_t % 64, xs_t % 64]
    group = torch.where(keep_t, group, torch.full_like(group, 2**30))
    # compact: valid tokens first, truncate to the longest row
    order = torch.argsort((~keep_t).to(torch.uint8), dim=1, stable=True)
    n = int(keep_t.sum(1).max())
    order = order[:, :n]
    take = lambda t: t.gather(1, order)  # noqa: E731
    tokens = TileTokens(take(kind_t), take(pos_t), take(val_t).long(), take(group))
    return tokens, take(keep_t)
