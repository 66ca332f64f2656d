"""The integer prior: exact tables, the independent reference, and computation-shape independence."""

import importlib.util
import io
import math
import os
import subprocess
import sys
from decimal import Decimal, getcontext
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

import dqcodec
from dqcodec.encoder.ratecontrol import analyze, levels_for_quality
from dqcodec.encoding import image_to_tensor
from dqcodec.format import intmath, intprior
from dqcodec.format.coding import frequency_tables, tile_of
from dqcodec.format.entropy import PRECISION
from dqcodec.format.intprior import IntPrior, WeightsError
from dqcodec.format.tokens import Schedule, tile_tokens
from dqcodec.models.loading import load_model

WEIGHTS = Path(dqcodec.__file__).parent / "weights" / "prior_dq.npz"
SPEC = Path(__file__).parent.parent / "bitstream_spec"


def reference():
    spec = importlib.util.spec_from_file_location("reference_prior", SPEC / "reference_prior.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.ReferencePrior(WEIGHTS)


@pytest.fixture(scope="module")
def mixed_tiles():
    """Real tiles with all three granularities: a full 16x16-region tile and an edge tile."""
    m = load_model("dq")
    img = Image.fromarray(data.astronaut()[100:356, 150:406])
    a = analyze(m, image_to_tensor(img)[0], tune="psnr")
    levels = levels_for_quality(m, a, 60)[0]
    assert all(int((levels == lv).sum()) > 10 for lv in range(3))
    return [tile_of(levels, a.idx, 0, 0, 16, 16), tile_of(levels, a.idx, 3, 5, 8, 11)]


def test_tables_are_their_exact_formulas() -> None:
    getcontext().prec = 50
    for j, r in enumerate(intmath.rsqrt_table()):
        exact = Decimal(2**20) / Decimal(1024 + j).sqrt()
        assert abs(Decimal(r) - exact) <= Decimal("0.5")
    for j, r in enumerate(intmath.recip_table()):
        assert r * (2049 + j) <= 2**24 < (r + 1) * (2049 + j)


def test_exp2_polynomial_is_close_and_monotone() -> None:
    r = torch.arange(1024, dtype=torch.int64)
    e = intmath.exp2_poly(r)
    exact = 2.0**15 * torch.pow(2.0, -r.double() / 1024)
    assert e[0] == 32768 and (e.diff() <= 0).all() and e[-1] > 16384
    assert ((e.double() - exact).abs() / exact).max() < 2e-4


def test_reciprocal_bounds_one_over_total_from_below() -> None:
    t = torch.cat([torch.arange(2048, 70000, 7), torch.tensor([2**33 - 1, 2**33, 12345678901])])
    r, e = intmath.reciprocal(t)
    approx = r.double() * torch.pow(2.0, -(e + 13).double())
    assert (approx <= 1 / t.double()).all() and (approx > (1 - 2**-10) / t.double()).all()


@pytest.mark.parametrize("periods", [(4, 4, 4, 4), (2, 1, 8, 4)])
def test_reference_implementation_gives_the_same_frequencies(mixed_tiles, periods) -> None:
    """Every group's table of the production prior (tiles batched together) equals the numpy int64
    reference's (one tile at a time), for every stream."""
    prod = frequency_tables(load_model("dq").prior, mixed_tiles, Schedule(periods))
    ref = reference()
    for tile, tables in zip(mixed_tiles, prod):
        ref_tables, _, _ = ref.tile_frequencies(tile.levels.numpy(), [i.numpy() for i in tile.idx], periods)
        assert len(ref_tables) == len(tables)
        assert {t.shape[1] for _, t in tables} == {3, 1024}
        for a, (_, b) in zip(ref_tables, tables):
            assert np.array_equal(a, b)


@pytest.mark.parametrize("path", ["native", "torch"])
def test_all_groups_at_once_equal_group_by_group(mixed_tiles, path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A slot's integers depend only on what it attends to: one masked pass over all tokens gives
    the tables that coding group by group gives, by the C kernels (each row attending to its own
    prefix of the keys; the encoder's path) and by torch's masks."""
    m = load_model("dq")
    if path == "native" and intmath.native_kernels() is None:
        pytest.skip("the C kernels are not built here")
    if path == "native":  # small row chunks, so that one spans the MAP/code boundary of a tile
        monkeypatch.setattr(intprior, "ALL_GROUPS_CHUNK", 100)
    else:
        monkeypatch.setattr(intprior, "native_kernels", lambda: None)
    schedule = Schedule((4, 2, 4, 8))
    tables = frequency_tables(m.prior, mixed_tiles, schedule)
    tokens = [tile_tokens(t.levels, t.idx, schedule) for t in mixed_tiles]
    at_once = m.prior.frequencies_all([(t.kind, t.pos, t.value, t.group) for t in tokens], PRECISION)
    for by_group, (map_freq, code_freq) in zip(tables, at_once):
        assert np.array_equal(np.concatenate([t for _, t in by_group if t.shape[1] == 3]), map_freq.numpy())
        assert np.array_equal(np.concatenate([t for _, t in by_group if t.shape[1] != 3]), code_freq.numpy())


def test_int8_kernel_and_float32_products_agree(mixed_tiles, monkeypatch: pytest.MonkeyPatch) -> None:
    """The int8 matrix-product kernel (where it is exact here) and float32 give the same tables."""
    if not intmath.int8_matmul_is_exact():
        pytest.skip("torch's int8 kernel is not exact on this machine: dqc uses float32 products")
    m = load_model("dq")
    runs = []
    for exact in (True, False):
        monkeypatch.setattr(intmath, "int8_matmul_is_exact", lambda exact=exact: exact)
        runs.append(frequency_tables(m.prior, mixed_tiles[1:], Schedule()))
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(runs[0][0], runs[1][0]))


FREQUENCY_DIGEST = """
import hashlib
from PIL import Image
from skimage import data
from dqcodec.encoding import image_to_tensor
from dqcodec.format.coding import frequency_tables, tile_of
from dqcodec.format.intmath import native_kernels
from dqcodec.models.loading import load_model
from dqcodec.encoder.ratecontrol import analyze, levels_for_quality
from dqcodec.format.tokens import Schedule
m = load_model("dq")
a = analyze(m, image_to_tensor(Image.fromarray(data.astronaut()[100:356, 150:406]))[0], tune="psnr")
levels = levels_for_quality(m, a, 60)[0]
tiles = [tile_of(levels, a.idx, 0, 0, 16, 16), tile_of(levels, a.idx, 3, 5, 8, 11)]
digest = hashlib.sha256()
for tile in frequency_tables(m.prior, tiles, Schedule()):
    for _, table in tile:
        digest.update(table.tobytes())
kernels = native_kernels()
print(kernels.isa if kernels else "torch", digest.hexdigest())
"""


def test_c_attention_kernel_gives_torchs_integers_on_every_path() -> None:
    """The C attention kernel's paths (AVX512-VNNI, AVX2, portable C) and torch's attention give
    the same frequency tables (each runs in a fresh process: the path is chosen at import)."""
    pytest.importorskip("dqcodec._native", reason="dqcodec was built without its C kernels")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DQC_NATIVE")}
    runs = {}
    for setting in ({}, {"DQC_NATIVE_ISA": "avx2"}, {"DQC_NATIVE_ISA": "generic"}, {"DQC_NATIVE": "0"}):
        r = subprocess.run(
            [sys.executable, "-c", FREQUENCY_DIGEST], env=env | setting, capture_output=True, text=True, timeout=600
        )
        assert r.returncode == 0, r.stderr
        path, digest = r.stdout.split()
        runs[path] = digest
    assert "torch" in runs and "generic" in runs, runs  # the CPU decides whether AVX2 / VNNI paths exist
    assert len(set(runs.values())) == 1, runs


def test_c_steps_between_products_give_torchs_integers_at_the_extremes() -> None:
    """The C kernels' norm (with the residual update), projection into queries and cache, GELU
    and frequencies give intmath's integers on inputs at and near every clamp: residuals at
    +-(2^21 - 1), rows of equal values (variance 0), activations at +-127 and logits far apart."""
    kernels = intmath.native_kernels()
    if kernels is None:
        pytest.skip("dqcodec was built without its C kernels, or this CPU has neither AVX2 nor VNNI")
    prior = load_model("dq").prior
    blk, d = prior.blocks[1], prior.config["dim"]
    gen = torch.Generator().manual_seed(5)
    limit = intmath.RESID_MAX
    h = torch.randint(-limit, limit + 1, (64, d), generator=gen)
    h[0], h[1], h[2], h[3] = limit, -limit, 7, torch.arange(d) % 2 * 2 * limit - limit
    a = torch.randint(-127, 128, (64, d), generator=gen, dtype=torch.int8)
    a[0], a[1], a[2] = 127, -127, torch.where(torch.arange(d) % 3 == 0, 127, -127).to(torch.int8)

    # residual + norm: h += proj(a), then ln2
    acc = blk.proj.product(a)
    expected_h = (h.double() + blk.proj(a)).clamp(-limit, limit)
    got_h, got = h.to(torch.int32).numpy().copy(), np.empty((64, d), dtype=np.int8)
    kernels.norm(got_h, acc.numpy(), *blk.proj.integers, *blk.ln2.integers, blk.ln2.eps, got, got.shape)
    assert np.array_equal(got_h, expected_h.numpy().astype(np.int32))
    assert np.array_equal(got, blk.ln2(expected_h).numpy())
    assert (abs(got_h) == limit).sum() > 100  # the clamp was reached
    # norm alone, on rows of equal values (variance 0: v = ln_eps) and at the extremes
    flat = torch.stack([torch.full((d,), x) for x in (-limit, -1, 0, 3, limit)] + [h[3]])
    got = np.empty(flat.shape, dtype=np.int8)
    kernels.norm(flat.to(torch.int32).numpy(), None, None, None, 0, *blk.ln1.integers, blk.ln1.eps, got, got.shape)
    assert np.array_equal(got, blk.ln1(flat.double()).numpy())

    # q, k and v into their tiles' slots and keys
    heads, dh = prior.config["heads"], d // prior.config["heads"]
    tiles, slots, keys = (np.array(x, dtype=np.int32) for x in ([1] * 32 + [0] * 32, list(range(64)), [5] * 64))
    keys[:32] = np.arange(32) + 16
    q = np.zeros((2, heads, 64, dh), dtype=np.int8)
    kt = np.zeros((2, heads, dh // 4, 64, 4), dtype=np.int8)
    v = np.zeros((2, heads, 32, dh, 2), dtype=np.int16)  # in pairs of keys
    kernels.project(
        blk.qkv.product(a).numpy(), *blk.qkv.integers, 3, tiles, slots, keys, q, kt, v, (64, d, heads, 2, 64, 64)
    )
    y = torch.max(torch.min(blk.qkv(a), blk.qkv_max), -blk.qkv_max).numpy()
    for r in (0, 1, 2, 20, 63):  # rows 32..63 share a key: the last one stays
        t, key = tiles[r], keys[r]
        assert np.array_equal(q[t, :, slots[r]].reshape(-1), y[r, :d])
        assert np.array_equal(kt[t, :, :, key].reshape(-1), y[r, d : 2 * d])
        assert np.array_equal(v[t, :, key // 2, :, key % 2].reshape(-1), y[r, 2 * d :])
    assert abs(y[:, d : 2 * d]).max() == 63 and abs(y[:, :d]).max() == 127

    # fc1 through the GELU table, for every sum its weights allow (the extremes included)
    bound = 127 * blk.fc1.weight.abs().sum(0).to(torch.int32)
    acc = (torch.rand(64, len(bound), generator=gen) * (2 * bound + 1)).to(torch.int32) - bound
    acc[0], acc[1] = bound, -bound
    got = np.empty(acc.shape, dtype=np.int8)
    kernels.gelu(acc.numpy(), *blk.fc1.integers, blk.gelu.numpy(), got, acc.shape)
    index = intmath.requantize(acc, blk.fc1.mul, blk.fc1.add).clamp(0, 2 * intmath.GELU_HALF - 1).long()
    assert np.array_equal(got, blk.gelu[index].numpy())
    assert index.min() == 0 and index.max() == 2 * intmath.GELU_HALF - 1

    # frequencies of both heads, of products and of sums at the weights' extremes (logits far apart)
    for head in (prior.map_head, prior.code_head):
        bound = 127 * head.weight.abs().sum(0).to(torch.int32)
        extreme = (torch.rand(64, len(bound), generator=gen) * (2 * bound + 1)).to(torch.int32) - bound
        for acc in (head.product(a), extreme):
            got = np.empty(acc.shape, dtype=np.int64)
            kernels.frequencies(acc.numpy(), *head.integers, got, acc.shape, PRECISION)
            expected = intmath.frequencies(intmath.requantize(acc, head.mul, head.add), PRECISION)
            assert np.array_equal(got, expected.numpy())


def test_c_product_and_fused_block_tail_give_exact_integers() -> None:
    """The AVX512-VNNI int8 product equals int64 matrix products at every row count its blocks
    leave over and at the operands' extremes; the fused block tail (projection, norm, MLP, norm)
    equals the same steps one call at a time, with residuals at their clamp."""
    kernels = intmath.native_kernels()
    if kernels is None or kernels.isa != "avx512-vnni":
        pytest.skip("the C product runs only with AVX512-VNNI")
    gen = torch.Generator().manual_seed(3)
    for k, m in ((4, 64), (256, 1024), (1024, 256)):
        w = torch.randint(-128, 128, (k, m), generator=gen, dtype=torch.int8)
        w[:, 0], w[:, 1] = 127, -128
        packed = intmath.pack_weights(w)
        for rows in (1, 2, 3, 4, 5, 6, 7, 13, 50):
            a = torch.randint(-128, 128, (rows, k), generator=gen, dtype=torch.int8)
            a[0] = -128 if rows > 1 else 127
            a[-1] = 127
            got = intmath.int8_product(a, w, packed)
            assert torch.equal(got.long(), a.long() @ w.long()), (k, m, rows)

    prior = load_model("dq").prior
    blk, d, limit = prior.blocks[2], prior.config["dim"], intmath.RESID_MAX
    for rows in (1, 5, 47, 48, 49, 130):  # around TAIL_ROWS
        h = torch.randint(-limit, limit + 1, (rows, d), generator=gen, dtype=torch.int32)
        h[0] = limit
        o = torch.randint(-127, 128, (rows, d), generator=gen, dtype=torch.int8)
        o[-1] = 127
        results = []
        for fused in (True, False):
            hx, ax = h.clone(), torch.empty(rows, d, dtype=torch.int8)
            if fused:
                intprior._block_tail(kernels, blk, prior.ln_out, hx, o, ax)
            else:
                an = ax.numpy()
                kernels.norm(
                    hx.numpy(),
                    intmath.int8_product(o, blk.proj.weight).numpy(),
                    *blk.proj.integers,
                    *blk.ln2.fused,
                    an,
                    an.shape,
                )
                acc = intmath.int8_product(ax, blk.fc1.weight)
                g = np.empty(acc.shape, dtype=np.int8)
                kernels.gelu(acc.numpy(), *blk.fc1.integers, blk.gelu.numpy(), g, acc.shape)
                acc = intmath.int8_product(torch.from_numpy(g), blk.fc2.weight)
                kernels.norm(hx.numpy(), acc.numpy(), *blk.fc2.integers, *prior.ln_out.fused, an, an.shape)
            results.append((hx, ax))
        assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1]), rows


def test_frequencies_do_not_depend_on_threads(mixed_tiles) -> None:
    m = load_model("dq")
    old = torch.get_num_threads()
    try:
        runs = []
        for n in (1, 3):
            torch.set_num_threads(n)
            runs.append(frequency_tables(m.prior, mixed_tiles[1:], Schedule()))
    finally:
        torch.set_num_threads(old)
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(runs[0][0], runs[1][0]))


def weights_with(**changes) -> bytes:
    with np.load(WEIGHTS, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays.update(changes)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


@pytest.mark.parametrize(
    "change, message",
    [
        ({"blocks.0.qkv.weight": np.full((768, 256), 64, np.int8)}, "outside -63..63"),
        ({"blocks.0.gelu": np.full(2048, -128, np.int8)}, "outside -127..127"),
        ({"blocks.1.fc2.mul": np.full(256, 1 << 24, np.int64)}, "below 2\\^24"),
        ({"blocks.1.fc2.add": np.full(256, -(1 << 63), np.int64)}, "below 2\\^53"),
        ({"blocks.2.attn.exp_clamp": np.array(3)}, "attention weights reach 0"),
        ({"blocks.3.gelu": np.zeros(100, np.int8)}, "2048 entries"),
        ({"ln_out.bias": np.full(256, 1 << 41, np.int64)}, "below 2\\^40"),
        ({"pos_embed": np.zeros((5632, 256), np.float32)}, "must be int16"),
        ({"config": np.frombuffer(b'{"format": "other"}', np.uint8)}, "format"),
    ],
)
def test_weights_that_break_a_bound_are_refused(change: dict, message: str) -> None:
    with pytest.raises(WeightsError, match=message):
        IntPrior.from_bytes(weights_with(**change))


def test_shipped_weights_record_how_they_were_made() -> None:
    prior = load_model("dq").prior
    assert prior.meta.get("qat_from", "").endswith("prior_dq_float.pt")
    assert math.log2(prior.num_codes) == 10
