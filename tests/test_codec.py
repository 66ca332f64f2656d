import dataclasses
import hashlib
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import dqcodec
from dqcodec.decoding import decode_tokens, model_of, reconstruct
from dqcodec.encoder.ratecontrol import analyze, levels_for_quality
from dqcodec.encoding import image_to_tensor
from dqcodec.format import bitstream
from dqcodec.metrics import psnr_of_pictures
from dqcodec.models.loading import load_model
from dqcodec.models.shipped import model_id
from dqcodec.models.transform import bfloat16_convolutions, decode_tiled, synthesize, to_uint8
from tests.conftest import synthetic_image


def psnr(a: Image.Image, b: Image.Image) -> float:
    return psnr_of_pictures(np.asarray(a), np.asarray(b))


def test_round_trip_size_and_quality(small_image: Image.Image, small_file: bytes) -> None:
    out = dqcodec.decode(small_file)
    assert out.size == small_image.size and out.mode == "RGB"
    assert psnr(out, small_image) > 20


def test_encode_is_deterministic(small_image: Image.Image, small_file: bytes) -> None:
    assert dqcodec.encode(small_image, quality=60) == small_file


def test_quality_orders_rate() -> None:
    img = synthetic_image(96, 64, seed=3)
    sizes = [len(dqcodec.encode(img, quality=q)) for q in (0, 50, 100)]
    assert sizes[0] < sizes[1] < sizes[2]


def test_decode_with_other_thread_count_gives_identical_symbols(small_image: Image.Image) -> None:
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        data = dqcodec.encode(small_image, quality=80, scale=1.0, effort=0)  # the map of within-scale quality 80
        torch.set_num_threads(1)
        # decode_tokens checks each tile's symbol CRC against the encoder's
        _, tokens = decode_tokens(data)
    finally:
        torch.set_num_threads(old)
    m = load_model()
    a = analyze(m, image_to_tensor(small_image)[0])
    levels, q_fine, q_medium = levels_for_quality(m, a, 80)
    h = bitstream.read(data).header
    assert (h.share_fine, h.share_medium) == (q_fine, q_medium)
    assert torch.equal(tokens.levels[0], levels)
    for level in range(3):
        scale = 4 ** (level == 2) * 2 ** (level == 1)
        used = torch.nn.functional.interpolate((levels == level)[None, None].float(), scale_factor=scale)[0, 0] > 0
        assert torch.equal(tokens.idx[level][0][used], a.idx[level][used])


def test_decoded_image_is_the_models_reconstruction(small_file: bytes) -> None:
    from dqcodec.format import colour

    c, tokens = decode_tokens(small_file)
    rgb = reconstruct(tokens, c.header.width, c.header.height)
    assert c.colour is not None  # the default effort corrects the colours: added to the synthesis
    rgb = colour.apply(rgb, colour.unpack(c.colour, c.header.width, c.header.height))
    assert np.array_equal(np.asarray(dqcodec.decode(small_file)), rgb)


def test_decode_synthesis_is_bfloat16_where_native_and_within_one_of_float32() -> None:
    """The decoder's bfloat16 convolutions against float32, on a photo at a quality that mixes all
    three granularities: at most 1 apart in any sample. Without native bfloat16 (oneDNN would
    emulate it, slowly) decode gives float32's picture."""
    from skimage import data

    blob = dqcodec.encode(Image.fromarray(data.astronaut()[:256, :384]), quality=60, effort=0)  # no colour correction
    c, tokens = decode_tokens(blob)
    m = load_model()
    args = (m.vae, tokens.levels[0], tuple(i[0] for i in tokens.idx), c.header.width, c.header.height)
    exact = synthesize(*args).to(torch.int16)
    decoded = torch.from_numpy(np.asarray(dqcodec.decode(blob), dtype=np.int16)).permute(2, 0, 1)
    if not bfloat16_convolutions():
        assert torch.equal(decoded, exact)
        return
    fast = to_uint8(decode_tiled(m.vae, *args[1:3], "cpu", bfloat16=True), *args[3:]).to(torch.int16)
    diff = (fast - exact).abs()
    assert diff.max() <= 1 and 0 < (diff > 0).float().mean() < 0.2
    assert torch.equal(decoded, fast)


def test_grayscale_round_trips_as_grayscale() -> None:
    img = synthetic_image(40, 40, mode="L")
    out = dqcodec.decode(dqcodec.encode(img, quality=50))
    assert out.mode == "L" and out.size == img.size


def test_multi_tile_image_and_parallel_tiles() -> None:
    img = synthetic_image(600, 40, seed=5)  # three tiles across at its own size
    data = dqcodec.encode(img, quality=30, scale=1.0, workers=1)
    assert len(bitstream.read(data).tiles) == 3
    assert dqcodec.encode(img, quality=30, scale=1.0, workers=3) == data  # tiles on threads: same bytes
    serial = np.asarray(dqcodec.decode(data, workers=1))
    assert serial.shape == (40, 600, 3)
    assert np.array_equal(np.asarray(dqcodec.decode(data, workers=3)), serial)


def test_icc_exif_and_xmp_are_carried(small_image: Image.Image) -> None:
    data = dqcodec.encode(small_image, quality=10, icc_profile=b"fake-icc", exif=b"Exif\0\0fake", xmp=b"<x/>")
    out = dqcodec.decode(data)
    assert out.info["icc_profile"] == b"fake-icc" and out.info["exif"] == b"Exif\0\0fake"
    assert out.info["xmp"] == b"<x/>" and bitstream.read(data).xmp == b"<x/>"


@pytest.mark.parametrize("mode", ["RGBA", "LA", "I", "F"])
def test_unsupported_modes_are_refused(mode: str) -> None:
    img = Image.new(mode, (16, 16))  # alpha 0: transparent
    with pytest.raises(dqcodec.DQCError):
        dqcodec.encode(img)


def test_arrays_encode_like_images(small_image: Image.Image) -> None:
    rgb = np.asarray(small_image)
    assert dqcodec.encode(rgb, quality=30) == dqcodec.encode(small_image, quality=30)
    gray = np.asarray(small_image.convert("L"))
    assert dqcodec.encode(gray, quality=30) == dqcodec.encode(small_image.convert("L"), quality=30)
    for bad in (rgb.astype(np.float32), rgb[..., :2], "photo.png"):
        with pytest.raises(dqcodec.DQCError, match="expected"):
            dqcodec.encode(bad)


def test_transparent_palette_image_is_refused(small_image: Image.Image) -> None:
    img = small_image.convert("P")
    img.info["transparency"] = img.getpixel((0, 0))  # one colour of the picture is transparent
    with pytest.raises(dqcodec.DQCError, match="transparency"):
        dqcodec.encode(img)


def test_opaque_alpha_is_dropped(small_image: Image.Image) -> None:
    rgba = small_image.copy()
    rgba.putalpha(255)
    assert dqcodec.encode(rgba, quality=30) == dqcodec.encode(small_image, quality=30)


def test_16_bit_gray_is_rounded_to_8_bits(small_image: Image.Image) -> None:
    gray = np.asarray(small_image.convert("L"))
    img16 = Image.fromarray(gray.astype(np.uint16) * 257 + 100)  # mode I;16; +100 rounds away
    assert img16.mode == "I;16"
    assert dqcodec.encode(img16, quality=30) == dqcodec.encode(Image.fromarray(gray), quality=30)


def test_wrong_model_file_is_refused(small_file: bytes) -> None:
    with pytest.raises(dqcodec.ModelMismatchError):
        dqcodec.decode(small_file, model="vqgan")


def test_file_claiming_a_huge_picture_is_refused_before_decoding(small_file: bytes) -> None:
    c = bitstream.read(small_file)
    coded = (20000, 20000)  # a 10000x10000 picture coded at scale 2: the coded size is over the limit
    empty = [bitstream.Tile(i, 0, 0, b"") for i in range(bitstream.num_tiles(*coded, c.header.tile_size))]
    header = dataclasses.replace(c.header, width=10000, height=10000)
    bomb = bitstream.write(dataclasses.replace(c, header=header, tiles=empty, coded_size=coded))
    assert len(bomb) < 200_000
    with pytest.raises(dqcodec.SizeLimitError, match="20000x20000"):
        dqcodec.decode(bomb)
    with pytest.raises(dqcodec.IntegrityError):  # without the limit it gets as far as the empty tiles
        decode_tokens(bomb, max_pixels=None, workers=1)


def test_decode_uses_the_files_model(small_image: Image.Image) -> None:
    data = dqcodec.encode(small_image, quality=50, model="vqgan")
    assert model_of(data) == "vqgan"
    assert np.array_equal(np.asarray(dqcodec.decode(data)), np.asarray(dqcodec.decode(data, model="vqgan")))


def test_file_of_a_model_not_shipped_is_refused(small_file: bytes) -> None:
    c = bitstream.read(small_file)
    other = bitstream.write(dataclasses.replace(c, header=dataclasses.replace(c.header, model_id=bytes(16))))
    with pytest.raises(dqcodec.ModelMismatchError, match=f"0{{32}}.*{model_id('dq').hex()} \\(dq\\)"):
        dqcodec.decode(other)


def test_pillow_plugin_saves_dqc(tmp_path, small_image: Image.Image, small_file: bytes) -> None:
    small_image.save(tmp_path / "x.dqc", quality=60)
    assert (tmp_path / "x.dqc").read_bytes() == small_file  # small_file is quality 60
    small_image.save(tmp_path / "y.dqc", bpp=0.5, tune="psnr")
    assert (tmp_path / "y.dqc").read_bytes() == dqcodec.encode(small_image, target_bpp=0.5, tune="psnr")


def test_pillow_plugin_opens_dqc(tmp_path, small_file: bytes) -> None:
    path = tmp_path / "x.dqc"
    path.write_bytes(small_file)
    with Image.open(path) as im:
        assert im.format == "DQC" and im.size == (72, 40)
        assert np.array_equal(np.asarray(im.convert("RGB")), np.asarray(dqcodec.decode(small_file)))


NEAREST_CASE = r"""
import numpy as np
rng = np.random.default_rng(5)
n, dim = 500, 16
vectors = rng.normal(size=(n, dim)).astype(np.float32)
step = (rng.normal(size=(n, dim)) * 0.05).astype(np.float32)
order = np.stack([np.arange(dim)] * 10 + [rng.permutation(dim) for _ in range(n - 10)])
codebook = np.empty((2 * n, dim), np.float32)  # 1000 codes: the vector paths' tails run too
codebook[0::2] = vectors + step
codebook[1::2] = vectors + np.take_along_axis(step, order, 1)
"""

NEAREST_RUN = r"""
import hashlib, torch
from dqcodec.models import quantize
found = quantize.nearest_codes(torch.from_numpy(vectors), torch.from_numpy(codebook))
kernels = quantize._search_kernel()
print(kernels.isa if kernels else "torch", hashlib.sha256(found.numpy().tobytes()).hexdigest())
"""


def test_nearest_code_search_is_the_same_on_every_path() -> None:
    """Vector i's nearest codes are 2i and 2i + 1, whose distances are the same squares summed in
    two orders (the first 10 pairs: the same code twice), so rounding picks between them: every
    path of the C search (AVX-512, AVX2, portable) and the torch loop must pick as float32 sums
    taken channel after channel do, and the first of equal codes; a tree sum (torch's .sum)
    picks otherwise for about 1 in 10."""
    namespace: dict = {}
    exec(NEAREST_CASE, namespace)
    vectors, codebook = namespace["vectors"], namespace["codebook"]
    sums = np.zeros((len(vectors), len(codebook)), np.float32)
    for i in range(vectors.shape[1]):
        diff = codebook[None, :, i] - vectors[:, None, i]
        sums = sums + diff * diff
    expected = sums.argmin(1)  # numpy: float32 steps, each rounded, first minimum
    assert (expected // 2 == np.arange(len(vectors))).all() and (expected[:10] == 2 * np.arange(10)).all()
    tree = ((codebook[None] - vectors[:, None]) ** 2).sum(-1).argmin(1)
    assert (tree != expected).sum() >= 10  # the case tells summation orders apart
    env = {k: v for k, v in os.environ.items() if not k.startswith("DQC_NATIVE")}
    runs = {}
    for setting in ({}, {"DQC_NATIVE_ISA": "avx2"}, {"DQC_NATIVE_ISA": "generic"}, {"DQC_NATIVE": "0"}):
        r = subprocess.run(
            [sys.executable, "-c", NEAREST_CASE + NEAREST_RUN], env=env | setting, capture_output=True, text=True
        )
        assert r.returncode == 0, r.stderr
        path, digest = r.stdout.split()
        runs[path] = digest
    assert "torch" in runs and len(runs) >= 2, runs  # the CPU decides which vector paths exist
    assert set(runs.values()) == {hashlib.sha256(expected.astype(np.int64).tobytes()).hexdigest()}, runs


def test_tiled_encoder_and_chunked_quantizer_match_whole_image(monkeypatch: pytest.MonkeyPatch) -> None:
    from dqcodec.models import quantize
    from dqcodec.models.transform import encode_tiled, pad16

    m = load_model()
    x = pad16(image_to_tensor(synthetic_image(200, 150, seed=2))[0]) * 2 - 1
    with torch.no_grad():
        whole_latents, whole_score = m.vae.encoder(x)
        whole = [m.vae.quantizer.indices(z) for z in whole_latents]
        monkeypatch.setattr(quantize, "INDEX_CHUNK", 7)
        monkeypatch.setattr(quantize, "_search_kernel", lambda: None)  # the torch loop, in chunks
        tiled_latents, tiled_score = encode_tiled(m.vae, x, tile=64)
        tiled = [m.vae.quantizer.indices(z) for z in tiled_latents]
    assert torch.allclose(whole_score, tiled_score, atol=1e-4)
    assert all(torch.equal(a, b) for a, b in zip(whole, tiled))


def test_tiled_decoder_matches_whole_map_within_rounding() -> None:
    from dqcodec.models.transform import decode_tiled

    m = load_model()
    a = analyze(m, image_to_tensor(synthetic_image(200, 150, seed=4))[0])
    levels = levels_for_quality(m, a, 60)[0]
    with torch.no_grad():
        whole = decode_tiled(m.vae, levels, a.idx, "cpu", tile=100)
        tiled = decode_tiled(m.vae, levels, a.idx, "cpu", tile=4)
    assert whole.shape == tiled.shape == (3, 160, 208)
    assert (whole - tiled).abs().max() < 0.01  # about 1 in 8-bit units; a misplaced tile is far off


def test_resampled_coding_spans_lower_and_higher_rates() -> None:
    img = synthetic_image(192, 128, seed=5)
    sizes = {}
    for scale, quality in ((0.5, 0), (1.0, 0), (1.0, 100), (1.5, 100)):
        data = dqcodec.encode(img, quality=quality, scale=scale)
        c = bitstream.read(data)
        assert c.coded_size == (None if scale == 1 else (round(192 * scale), round(128 * scale)))
        out = dqcodec.decode(data)
        assert out.size == img.size
        sizes[scale, quality] = len(data)
    assert sizes[0.5, 0] < sizes[1.0, 0] < sizes[1.0, 100] < sizes[1.5, 100]


def test_resampled_decode_is_the_reconstruction_resized(small_image: Image.Image) -> None:
    from dqcodec.format.resample import resize

    data = dqcodec.encode(small_image, quality=40, scale=1.5, effort=0)  # effort 0: no colour correction on top
    c, tokens = decode_tokens(data)
    coded = reconstruct(tokens, *c.coded_size)
    assert coded.shape == (60, 108, 3)
    expected = resize(torch.from_numpy(coded).permute(2, 0, 1), 72, 40).permute(1, 2, 0).numpy()
    assert np.array_equal(np.asarray(dqcodec.decode(data)), expected)
    assert psnr(dqcodec.decode(data), small_image) > 20


def test_scale_out_of_range_is_refused() -> None:
    with pytest.raises(dqcodec.DQCError, match="scale"):
        dqcodec.encode(synthetic_image(32, 32), scale=3.0)


def test_target_bpp_picks_the_scale_of_its_band() -> None:
    img = synthetic_image(192, 128, seed=6)
    for target, scale in ((0.01, 0.5), (0.15, 1.0), (0.5, 1.5)):
        c = bitstream.read(dqcodec.encode(img, target_bpp=target))
        assert (c.coded_width, c.coded_height) == (round(192 * scale), round(128 * scale))
    assert bitstream.read(dqcodec.encode(img, target_bpp=0.5, scale=1.0)).coded_size is None


def test_target_bpp_lands_just_under_the_target_and_writes_that_quality() -> None:
    from skimage import data

    from dqcodec.encoder.ratecontrol import quality_for_bpp
    from dqcodec.format.tokens import Schedule

    img = Image.fromarray(data.astronaut()[::2, ::2])  # 256x256, one tile
    m = load_model("dq")
    x, _ = image_to_tensor(img)
    a = analyze(m, x)
    pixels = img.width * img.height
    target = 0.15
    fit = quality_for_bpp(m, a, pixels, target, Schedule())
    assert fit.bits <= target * pixels
    coded = dqcodec.encode(img, target_bpp=target, scale=1.0, effort=0, record_settings=False)
    assert 0.95 * target <= 8 * len(coded) / pixels <= target
    assert [t.data for t in bitstream.read(coded).tiles] == [t.data for t in fit.tiles]  # the file rate control coded
    refined = dqcodec.encode(img, target_bpp=target, scale=1.0)  # the default effort: within the target too
    assert 8 * len(refined) / pixels <= target
    assert torch.equal(decode_tokens(coded)[1].levels[0], fit.levels)


def test_targets_are_checked_before_any_work() -> None:
    img = synthetic_image(32, 32)
    for bpp in (float("nan"), 0.0, -1.0):
        with pytest.raises(dqcodec.DQCError, match="target_bpp"):
            dqcodec.encode(img, target_bpp=bpp)
    with pytest.raises(dqcodec.DQCError, match="not both"):
        dqcodec.encode(img, target_bpp=0.1, target="psnr=30")
    with pytest.raises(dqcodec.DQCError, match="METRIC=VALUE"):
        dqcodec.encode(img, target="sharpness=3")


def test_pillow_plugin_errors_are_oserrors(tmp_path, small_image: Image.Image, small_file: bytes) -> None:
    corrupt = bytearray(small_file)
    corrupt[len(bitstream.SIGNATURE) + 1 + 8 + 4] ^= 0xFF  # a byte of HEAD: its CRC fails
    (tmp_path / "bad.dqc").write_bytes(bytes(corrupt))
    with pytest.raises(OSError, match="checksum"):
        Image.open(tmp_path / "bad.dqc")
    with pytest.raises(OSError, match="target_bpp"):
        small_image.save(tmp_path / "nan.dqc", bpp=float("nan"))
    with pytest.raises(OSError, match="METRIC=VALUE"):
        small_image.save(tmp_path / "t.dqc", target="blur=2")


BAD_ARGUMENTS = {
    "zero-size image": lambda img: dqcodec.encode(Image.new("RGB", (0, 10))),
    "mode La, transparent": lambda img: dqcodec.encode(Image.new("La", (8, 8))),
    "device cuda without CUDA": lambda img: dqcodec.encode(img, device="cuda"),
    "device xyz": lambda img: dqcodec.encode(img, device="xyz"),
    "quality as a string": lambda img: dqcodec.encode(img, quality="50"),
    "quality True": lambda img: dqcodec.encode(img, quality=True),
    "target_bpp as a string": lambda img: dqcodec.encode(img, target_bpp="0.1"),
    "target as a number": lambda img: dqcodec.encode(img, target=30),
    "scale 0": lambda img: dqcodec.encode(img, scale=0),
    "scale as a string": lambda img: dqcodec.encode(img, scale="1"),
    "workers 0": lambda img: dqcodec.encode(img, workers=0),
    "workers as a string": lambda img: dqcodec.encode(img, workers="2"),
    "exif as a string": lambda img: dqcodec.encode(img, exif="Exif"),
    "decode max_pixels nan": lambda img: dqcodec.decode(dqcodec.encode(img, quality=0), max_pixels=float("nan")),
    "decode max_pixels as a string": lambda img: dqcodec.decode(dqcodec.encode(img, quality=0), max_pixels="9"),
    "decode device xyz": lambda img: dqcodec.decode(dqcodec.encode(img, quality=0), device="xyz"),
}


@pytest.mark.parametrize("case", BAD_ARGUMENTS)
def test_bad_arguments_are_refused_in_one_line(small_image: Image.Image, case: str) -> None:
    if case.startswith("device cuda") and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(dqcodec.DQCError) as refused:
        BAD_ARGUMENTS[case](small_image)
    assert "\n" not in str(refused.value)


def test_opaque_premultiplied_alpha_is_dropped(small_image: Image.Image) -> None:
    opaque = small_image.convert("RGBA").convert("RGBa")
    assert dqcodec.encode(opaque, quality=0) == dqcodec.encode(small_image, quality=0)
