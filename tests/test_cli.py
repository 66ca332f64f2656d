"""Drive the installed `dqc` command as a user would."""

import json
import re
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import click
import numpy as np
import pytest
from PIL import Image

import dqcodec
from dqcodec.metrics import psnr_of_pictures
from dqcodec.models.shipped import model_id
from tests.conftest import synthetic_image

DQC = shutil.which("dqc") or str(Path(sys.executable).parent / "dqc")


def dqc(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([DQC, *args], input=stdin, capture_output=True, timeout=300)


@pytest.fixture()
def photo(tmp_path: Path, small_image: Image.Image) -> Path:
    p = tmp_path / "photo.png"
    small_image.save(p)
    return p


def test_encode_decode_info(photo: Path, tmp_path: Path) -> None:
    r = dqc("encode", str(photo), "-q", "40")
    assert r.returncode == 0, r.stderr
    dqc_file = photo.with_suffix(".dqc")
    assert dqc_file.exists()
    out = tmp_path / "back.png"
    r = dqc("decode", str(dqc_file), "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert Image.open(out).size == Image.open(photo).size
    r = dqc("info", str(dqc_file), "--json")
    info = json.loads(r.stdout)
    assert info["width"] == 72 and info["height"] == 40 and info["bytes"] == dqc_file.stat().st_size


def test_decode_finds_the_files_model(photo: Path, tmp_path: Path) -> None:
    coded = tmp_path / "vq.dqc"
    assert dqc("encode", str(photo), "--model", "vqgan", "-o", str(coded)).returncode == 0
    assert json.loads(dqc("info", str(coded), "--json").stdout)["model"] == "vqgan"
    r = dqc("decode", str(coded), "-o", str(tmp_path / "vq.png"))
    assert r.returncode == 0, r.stderr
    _one_line_error(dqc("decode", str(coded), "--model", "dq", "-o", str(tmp_path / "dq.png")), 4)
    assert not (tmp_path / "dq.png").exists()


@pytest.mark.parametrize("suffix", [".avif", ".jxl"])
def test_decode_to_and_encode_from_other_formats(photo: Path, tmp_path: Path, suffix: str) -> None:
    if suffix == ".jxl":
        pytest.importorskip("pillow_jxl")
    coded, picture = tmp_path / "a.dqc", tmp_path / f"a{suffix}"
    assert dqc("encode", str(photo), "-o", str(coded)).returncode == 0
    r = dqc("decode", str(coded), "-o", str(picture))
    assert r.returncode == 0, r.stderr
    r = dqc("encode", str(picture), "-o", str(tmp_path / "b.dqc"))
    assert r.returncode == 0, r.stderr


def test_several_inputs(photo: Path, tmp_path: Path) -> None:
    second = tmp_path / "second.png"
    shutil.copy(photo, second)
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image")
    r = dqc("encode", str(photo), str(junk), str(second))
    assert r.returncode == 1 and r.stderr.count(b"dqc: error:") == 1
    assert photo.with_suffix(".dqc").exists() and second.with_suffix(".dqc").exists()
    r = dqc("decode", str(photo.with_suffix(".dqc")), str(second.with_suffix(".dqc")), "--overwrite")
    assert r.returncode == 0, r.stderr
    assert dqc("encode", str(photo), str(second), "-o", str(tmp_path / "x.dqc")).returncode == 2


def test_xmp_goes_from_jpeg_through_dqc_to_png(photo: Path, tmp_path: Path) -> None:
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF/></x:xmpmeta>'
    Image.open(photo).save(tmp_path / "in.jpg", xmp=xmp)
    assert dqc("encode", str(tmp_path / "in.jpg"), "-o", str(tmp_path / "in.dqc"), "--metadata", "xmp").returncode == 0
    assert json.loads(dqc("info", str(tmp_path / "in.dqc"), "--json").stdout)["xmp_bytes"] == len(xmp)
    assert dqc("decode", str(tmp_path / "in.dqc"), "-o", str(tmp_path / "out.png")).returncode == 0
    assert Image.open(tmp_path / "out.png").info["xmp"] == xmp


def _swapped_primaries(icc: bytes) -> bytes:
    """An RGB profile with red's and green's primaries swapped (their tags' places in the tag table)."""
    out = bytearray(icc)
    (n,) = struct.unpack(">I", icc[128:132])
    places = {icc[132 + 12 * i : 136 + 12 * i]: 132 + 12 * i for i in range(n)}
    red, green = places[b"rXYZ"], places[b"gXYZ"]
    out[red + 4 : red + 12], out[green + 4 : green + 12] = icc[green + 4 : green + 12], icc[red + 4 : red + 12]
    return bytes(out)


def test_metadata_is_the_users_choice(photo: Path, tmp_path: Path) -> None:
    from PIL import ImageCms

    exif = Image.Exif()
    exif[0x010F] = "x" * 20000  # Make: a 20 KB EXIF block, as cameras and phones write
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF/></x:xmpmeta>'
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    lab = _swapped_primaries(srgb)  # an RGB profile that is not sRGB
    src = tmp_path / "in.jpg"
    Image.open(photo).save(src, exif=exif.tobytes(), xmp=xmp, icc_profile=lab, quality=95)

    def made(*args: str) -> dict:
        out = tmp_path / "out.dqc"
        r = dqc("encode", str(src), "-o", str(out), "--overwrite", *args)
        assert r.returncode == 0, r.stderr
        return json.loads(dqc("info", str(out), "--json").stdout)

    default = made()  # a low-rate codec keeps the colour profile only
    assert (default["icc_profile_bytes"], default["exif_bytes"], default["xmp_bytes"]) == (len(lab), 0, 0)
    every = made("--metadata", "all")
    assert every["exif_bytes"] > 20000 and every["xmp_bytes"] == len(xmp)
    assert made("--metadata", "exif")["icc_profile_bytes"] == 0
    stripped = made("--strip")
    assert (stripped["icc_profile_bytes"], stripped["exif_bytes"], stripped["xmp_bytes"]) == (0, 0, 0)
    assert stripped["made_with"] == "not recorded" and default["made_with"].startswith("-q 50")
    assert stripped["bytes"] < default["bytes"] - len(lab)
    Image.open(photo).save(src, icc_profile=srgb, quality=95)
    assert made()["icc_profile_bytes"] == 0  # sRGB is what a file without a profile means: no bytes
    # --bpp counts the metadata's bytes, and says so where they alone are over it
    Image.open(photo).save(src, exif=exif.tobytes(), quality=95)
    r = dqc("encode", str(src), "-o", str(tmp_path / "t.dqc"), "--bpp", "0.1", "--metadata", "all")
    assert r.returncode == 0 and b"the metadata alone (" in r.stderr and b"bytes) is over 0.1 bpp" in r.stderr
    r = dqc("encode", str(src), "-o", str(tmp_path / "u.dqc"), "--bpp", "0.5")
    assert r.returncode == 0, r.stderr
    assert 8 * (tmp_path / "u.dqc").stat().st_size / (72 * 40) <= 0.5 + 1e-9


def _chunks(data: bytes) -> list[tuple[bytes, int, int]]:
    """(kind, start of its payload, payload length) of each chunk of a .dqc file."""
    pos, out = 9, []
    while pos < len(data):
        (length,) = struct.unpack_from(">I", data, pos)
        out.append((data[pos + 4 : pos + 8], pos + 8, length))
        pos += 12 + length
    return out


def test_a_bit_flipped_in_any_chunk_is_a_corrupt_file_exit_3(tmp_path: Path, small_image: Image.Image) -> None:
    from PIL import ImageCms

    src = tmp_path / "in.jpg"
    icc = _swapped_primaries(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
    exif = Image.Exif()
    exif[0x010F] = "camera"
    small_image.save(src, exif=exif.tobytes(), xmp=b"<x:xmpmeta/>", icc_profile=icc, quality=95)
    good = tmp_path / "good.dqc"
    assert dqc("encode", str(src), "-o", str(good), "--metadata", "all", "--scale", "1.5").returncode == 0
    data = good.read_bytes()
    chunks = _chunks(data)
    kinds = {kind for kind, _, _ in chunks}
    assert kinds >= {b"HEAD", b"RSMP", b"ICCP", b"EXIF", b"xmp ", b"sett", b"TILE", b"END "}, kinds
    rng = np.random.default_rng(1)
    cases = []
    for kind, start, length in chunks:
        # a bit in the payload (the CRC where there is none), and one in the length field
        where = start + int(rng.integers(length)) if length else start + length
        cases += [(kind, where, int(rng.integers(8))), (kind, start - 5, 0)]
    for kind, byte, bit in cases:
        bad = bytearray(data)
        bad[byte] ^= 1 << bit
        f = tmp_path / "bad.dqc"
        f.write_bytes(bytes(bad))
        r = dqc("decode", str(f), "-o", str(tmp_path / "bad.png"), "--overwrite")
        assert r.returncode == 3, (kind, byte, r.stderr)
        _one_line_error(r, 3)
        assert str(f) in r.stderr.decode() and not (tmp_path / "bad.png").exists(), (kind, r.stderr)


def test_stdin_stdout(photo: Path) -> None:
    enc = dqc("encode", "-", "-o", "-", stdin=photo.read_bytes())
    assert enc.returncode == 0 and enc.stdout.startswith(b"\x89DQC")
    dec = dqc("decode", "-", "-o", "-", stdin=enc.stdout)
    assert dec.returncode == 0 and dec.stdout.startswith(b"\x89PNG")


def test_existing_output_needs_overwrite(photo: Path) -> None:
    assert dqc("encode", str(photo)).returncode == 0
    r = dqc("encode", str(photo))
    assert r.returncode == 1 and b"--overwrite" in r.stderr
    assert dqc("encode", str(photo), "--overwrite").returncode == 0


def _one_line_error(r: subprocess.CompletedProcess, code: int) -> None:
    assert r.returncode == code
    lines = r.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dqc: error:"), r.stderr


def test_bad_inputs_give_one_line_errors_and_leave_nothing(tmp_path: Path) -> None:
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"this is not an image")
    _one_line_error(dqc("encode", str(junk), "-o", str(tmp_path / "junk.dqc")), 1)
    _one_line_error(dqc("encode", str(tmp_path / "missing.png")), 1)
    _one_line_error(dqc("decode", str(junk), "-o", str(tmp_path / "x.png")), 1)
    Image.new("RGBA", (20, 20)).save(tmp_path / "alpha.png")
    _one_line_error(dqc("encode", str(tmp_path / "alpha.png")), 1)
    frames = [Image.new("RGB", (20, 20), c) for c in ("red", "blue")]
    frames[0].save(tmp_path / "anim.webp", save_all=True, append_images=frames[1:])
    _one_line_error(dqc("encode", str(tmp_path / "anim.webp")), 1)
    Image.new("RGB", (20, 20)).save(tmp_path / "ok.png")
    r = dqc("encode", str(tmp_path / "ok.png"), "-o", str(tmp_path / "nodir" / "ok.dqc"))
    _one_line_error(r, 1)
    assert b"there is no folder" in r.stderr
    _one_line_error(dqc("encode", str(tmp_path / "ok.png"), "-o", str(tmp_path), "--overwrite"), 1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alpha.png", "anim.webp", "junk.png", "ok.png"]


def test_corrupt_file_is_reported_not_shown(photo: Path, tmp_path: Path) -> None:
    from dqcodec.format import bitstream

    assert dqc("encode", str(photo)).returncode == 0
    c = bitstream.read(photo.with_suffix(".dqc").read_bytes())
    t = c.tiles[0]
    damaged = bytes([t.data[0] ^ 0x77]) + t.data[1:]
    c.tiles[0] = bitstream.Tile(t.index, t.num_symbols, t.symbol_crc, damaged)
    bad = tmp_path / "bad.dqc"
    bad.write_bytes(bitstream.write(c))
    _one_line_error(dqc("decode", str(bad), "-o", str(tmp_path / "bad.png")), 3)
    assert not (tmp_path / "bad.png").exists()


def test_version_1_file_names_its_version_and_this_dqcs(tmp_path: Path) -> None:
    """A file of dqc 0.1 (float prior, format version 1) is refused in one line naming both."""
    old = Path(__file__).parent.parent / "bitstream_spec" / "conformance" / "version1.dqc"
    r = dqc("decode", str(old), "-o", str(tmp_path / "old.png"))
    _one_line_error(r, 1)
    assert "format version 1 (made by dqc 0.1" in r.stderr.decode()
    assert f"this dqc {dqcodec.__version__} reads format versions 2, 3 and 4" in r.stderr.decode()
    assert not (tmp_path / "old.png").exists()


def test_batch_continues_past_errors_and_resumes(tmp_path: Path, small_image: Image.Image) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    (src / "nested").mkdir(parents=True)
    small_image.save(src / "a.png")
    small_image.convert("L").save(src / "nested" / "b.jpg")
    (src / "broken.png").write_bytes(b"not a png")
    small_image.save(src / "c.png")
    small_image.save(src / "c.webp")  # both would become c.dqc
    r = dqc("batch", str(src), str(dst), "-q", "20", "-j", "2")
    assert r.returncode == 1
    assert b"broken.png" in r.stderr and b"c.png" in r.stderr and b"c.webp" in r.stderr
    assert not (dst / "c.dqc").exists()
    assert (dst / "a.dqc").exists() and (dst / "nested" / "b.dqc").exists()
    assert not (dst / "broken.dqc").exists()
    before = (dst / "a.dqc").stat().st_mtime_ns
    r = dqc("batch", str(src), str(dst), "-j", "1")
    assert b"skipped 2" in r.stderr and (dst / "a.dqc").stat().st_mtime_ns == before
    r = dqc("batch", str(dst), str(tmp_path / "png"), "--decode")
    assert r.returncode == 0
    assert Image.open(tmp_path / "png" / "nested" / "b.dqc.png").mode == "L"
    r = dqc("batch", str(dst), str(tmp_path / "jpg"), "--decode", "--format", "jpg")
    assert r.returncode == 0 and Image.open(tmp_path / "jpg" / "a.dqc.jpg").format == "JPEG"


def test_target_bpp_and_granularity_map(photo: Path, tmp_path: Path) -> None:
    out = tmp_path / "t.dqc"
    r = dqc("encode", str(photo), "-o", str(out), "--bpp", "0.5")
    assert r.returncode == 0, r.stderr
    assert 8 * out.stat().st_size / (72 * 40) <= 0.5 * 1.1
    assert b"note" not in r.stderr
    r = dqc("encode", str(photo), "-o", str(tmp_path / "low.dqc"), "--bpp", "0.01")  # the header alone is more
    assert r.returncode == 0 and b"below the lowest rate" in r.stderr
    tuned = tmp_path / "p.dqc"
    r = dqc("encode", str(photo), "-o", str(tuned), "--bpp", "0.5", "--tune", "psnr")
    assert r.returncode == 0, r.stderr
    assert 8 * tuned.stat().st_size / (72 * 40) <= 0.5 * 1.1
    r = dqc("info", str(out), "--map", str(tmp_path / "map.png"))
    assert r.returncode == 0, r.stderr
    drawn = np.asarray(Image.open(tmp_path / "map.png").convert("RGB"))
    assert drawn.shape[0] > 40 and drawn.shape[1] >= 72  # the picture's size, and a legend strip below it
    legend = drawn[40:]
    assert (legend == 255).all(axis=-1).mean() > 0.5 and (legend < 100).all(axis=-1).any()  # white, with dark text


def test_exif_orientation_is_applied(tmp_path: Path, small_image: Image.Image) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    src = tmp_path / "rotated.jpg"
    small_image.save(src, exif=exif.tobytes(), quality=95)
    assert dqc("encode", str(src)).returncode == 0
    assert dqc("decode", str(src.with_suffix(".dqc")), "-o", str(tmp_path / "r.png")).returncode == 0
    assert Image.open(tmp_path / "r.png").size == (40, 72)


def test_pixel_limit(photo: Path) -> None:
    import os

    env = {**os.environ, "DQC_MAX_PIXELS": "1000"}
    r = subprocess.run([DQC, "encode", str(photo), "-o", "-"], capture_output=True, env=env, timeout=300)
    _one_line_error(r, 1)
    assert b"--allow-large" in r.stderr


def test_scale_option(photo: Path, tmp_path: Path) -> None:
    out = tmp_path / "s.dqc"
    r = dqc("encode", str(photo), "-o", str(out), "--scale", "1.5", "-q", "20")
    assert r.returncode == 0, r.stderr
    info = json.loads(dqc("info", str(out), "--json").stdout)
    assert (info["width"], info["coded_width"]) == (72, 108)
    assert dqc("decode", str(out), "-o", str(tmp_path / "s.png")).returncode == 0
    assert Image.open(tmp_path / "s.png").size == (72, 40)
    r = dqc("encode", str(photo), "-o", str(tmp_path / "x.dqc"), "--scale", "5")
    assert r.returncode == 2 and not (tmp_path / "x.dqc").exists()


def _s15(x: float) -> bytes:
    return struct.pack(">i", round(x * 65536))


def cmyk_profile() -> bytes:
    """A minimal ICC v2 CMYK printer profile: paper white without ink, neutral L* 20 with any."""
    desc = b"test CMYK\0"
    grid, inputs, outputs = 2, 4, 3
    lut = b"mft2" + bytes(4) + bytes([inputs, outputs, grid, 0])
    lut += b"".join(_s15(float(i == j)) for i in range(3) for j in range(3)) + struct.pack(">HH", 2, 2)
    lut += struct.pack(">HH", 0, 0xFFFF) * inputs
    lut += b"".join(struct.pack(">HHH", 0xFF00 if i == 0 else 0x3300, 0x8000, 0x8000) for i in range(grid**inputs))
    lut += struct.pack(">HH", 0, 0xFFFF) * outputs
    d50 = _s15(0.9642) + _s15(1.0) + _s15(0.8249)
    tags = [
        (b"desc", b"desc" + bytes(4) + struct.pack(">I", len(desc)) + desc + bytes(78)),
        (b"wtpt", b"XYZ " + bytes(4) + d50),
        (b"cprt", b"text" + bytes(4) + b"none\0"),
        (b"A2B0", lut),
    ]
    offset = 128 + 4 + 12 * len(tags)
    table, body = b"", b""
    for sig, data in tags:
        data += bytes(-len(data) % 4)
        table += sig + struct.pack(">II", offset + len(body), len(data))
        body += data
    header = struct.pack(">I", offset + len(body)) + bytes(4) + struct.pack(">I", 0x02100000) + b"prtrCMYKLab "
    header += bytes(12) + b"acsp" + bytes(28) + d50 + bytes(48)
    return header + struct.pack(">I", len(tags)) + table + body


def test_cmyk_goes_through_its_profile_to_rgb(tmp_path: Path) -> None:
    from dqcodec.cli.images import open_image

    inks = np.array([[[0, 0, 0, 0], [255, 0, 0, 0], [0, 0, 0, 255]]], np.uint8)
    Image.fromarray(inks, "CMYK").save(tmp_path / "print.tif", icc_profile=cmyk_profile())
    img, _, _ = open_image(str(tmp_path / "print.tif"), allow_large=False)
    rgb = np.asarray(img).astype(int)
    assert img.mode == "RGB" and "icc_profile" not in img.info
    assert rgb[0, 0].tolist() == [255, 255, 255]
    assert rgb[0, 1].max() - rgb[0, 1].min() <= 1 and rgb[0, 1, 0] < 128  # neutral dark, not cyan (0, 255, 255)


def test_profile_of_another_colour_space_is_left_out(small_image: Image.Image) -> None:
    data = dqcodec.encode(small_image, quality=0, icc_profile=cmyk_profile())
    assert "icc_profile" not in dqcodec.decode(data).info


def _psnr(a: Path | Image.Image, b: Path) -> float:
    x = np.asarray(Image.open(a).convert("RGB") if isinstance(a, Path) else a.convert("RGB"))
    return psnr_of_pictures(x, np.asarray(Image.open(b).convert("RGB")))


def test_target_quality_reaches_it_with_the_least_bits(photo: Path, tmp_path: Path) -> None:
    reached = {}
    for dbs in ("20", "24"):
        out, png = tmp_path / f"{dbs}.dqc", tmp_path / f"{dbs}.png"
        r = dqc("encode", str(photo), "-o", str(out), "--target", f"psnr={dbs}")
        assert r.returncode == 0 and b"note" not in r.stderr, r.stderr
        assert dqc("decode", str(out), "-o", str(png)).returncode == 0
        reached[dbs] = (_psnr(photo, png), out.stat().st_size)
        assert reached[dbs][0] >= float(dbs)
    assert reached["20"][1] < reached["24"][1]  # a lower target costs less
    # ...and it is the least: quality 0 (every region coarse) would miss 24 dB here
    q0, q0_png = tmp_path / "q0.dqc", tmp_path / "q0.png"
    assert dqc("encode", str(photo), "-o", str(q0), "-q", "0").returncode == 0
    assert dqc("decode", str(q0), "-o", str(q0_png)).returncode == 0
    assert _psnr(photo, q0_png) < 24


def test_target_quality_out_of_reach_or_malformed(photo: Path, tmp_path: Path) -> None:
    out = tmp_path / "far.dqc"
    r = dqc("encode", str(photo), "-o", str(out), "--target", "psnr=59")
    assert r.returncode == 0 and out.exists()
    assert b"beyond this image's reach: quality 100" in r.stderr
    for bad in ("psnr", "lpips=0.1", "psnr=abc", "psnr=nan", "ms-ssim=2"):
        r = dqc("encode", str(photo), "-o", str(tmp_path / "bad.dqc"), "--target", bad)
        assert r.returncode == 2 and b"--target" in r.stderr, (bad, r.stderr)
    r = dqc("encode", str(photo), "-o", str(tmp_path / "both.dqc"), "--target", "psnr=30", "--bpp", "0.2")
    assert r.returncode == 2 and b"give one" in r.stderr
    assert not (tmp_path / "bad.dqc").exists() and not (tmp_path / "both.dqc").exists()


def _peak_rss_mb(*args: str) -> tuple[subprocess.CompletedProcess, float]:
    """Run dqc in a fresh Python whose only child it is: (result, the child's peak RSS in MB)."""
    probe = (
        "import resource, subprocess, sys\n"
        "r = subprocess.run(sys.argv[1:], capture_output=True)\n"
        "sys.stderr.buffer.write(r.stderr)\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
        "sys.exit(r.returncode)\n"
    )
    r = subprocess.run([sys.executable, "-c", probe, DQC, *args], capture_output=True, timeout=300)
    return r, int(r.stdout.split()[-1]) / 1024


def test_small_files_cannot_make_the_decoder_allocate(tmp_path: Path) -> None:
    from dqcodec.format import bitstream

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    def crafted(width: int, height: int, periods: tuple[int, ...] = (4, 4, 4, 4), rsmp: bytes = b"") -> bytes:
        head = bitstream.Header(width, height, 0, 256, model_id("dq"), 0, 0, periods, 20)
        tile = bitstream.Tile(0, 500, 0, bytes(64))
        return (
            bitstream.SIGNATURE + bytes([bitstream.FORMAT_VERSION]) + chunk(b"HEAD", head.pack()) + rsmp
            + chunk(b"TILE", tile.pack()) + chunk(b"END ", b"")
        )  # fmt: skip

    files = {
        "bomb": crafted(4194304, 15, rsmp=chunk(b"RSMP", struct.pack(">II", 64, 64))),  # 121 bytes before
        "huge": crafted(60000, 60000),
        "slow": crafted(64, 64, periods=(4, 4, 4, 64)),
    }
    # and a real one: 2048x2048 coded at a quarter of its size, under 1 KB
    big = np.zeros((2048, 2048, 3), np.uint8)
    big[..., 0] = np.linspace(0, 255, 2048).astype(np.uint8)
    files["real"] = dqcodec.encode(big, quality=0, scale=0.25)
    for name, data in files.items():
        assert len(data) <= 1024, name
        src = tmp_path / f"{name}.dqc"
        src.write_bytes(data)
        r, peak = _peak_rss_mb("decode", str(src), "-o", str(tmp_path / f"{name}.png"), "--allow-large")
        if name == "real":
            assert r.returncode == 0, r.stderr
            assert Image.open(tmp_path / "real.png").size == (2048, 2048)
        else:  # a header the format does not allow, or tiles missing: a corrupt file
            _one_line_error(r, 3)
            assert not (tmp_path / f"{name}.png").exists()
        assert peak < 600, (name, peak)


def test_decoding_memory_is_bounded_per_output_pixel(tmp_path: Path) -> None:
    """The worst a small file can ask: a picture coded at a quarter of its size each way (the
    format's smallest scale), so that every coded pixel becomes 16. The bound docs/usage.md states: at most
    500 MB plus 16 bytes per output pixel."""
    import dataclasses

    from dqcodec.format import bitstream

    peaks = {}
    for coded_width in (2432, 4864):  # 10 and 20 MP out, from files of 1 and 2 KB
        flat = dqcodec.encode(np.zeros((256, coded_width, 3), np.uint8), quality=0, effort=0, scale=1.0)
        c = bitstream.read(flat)
        header = dataclasses.replace(c.header, width=4 * coded_width, height=4 * 256)
        crafted = bitstream.write(dataclasses.replace(c, header=header, coded_size=(coded_width, 256)))
        src = tmp_path / f"w{coded_width}.dqc"
        src.write_bytes(crafted)
        r, peaks[coded_width] = _peak_rss_mb("decode", str(src), "-o", str(tmp_path / "out.png"), "--overwrite",
                                             "--allow-large")  # fmt: skip
        assert r.returncode == 0, r.stderr
        assert Image.open(tmp_path / "out.png").size == (4 * coded_width, 1024)
    megapixels = 4 * 2432 * 1024 / 1e6
    assert peaks[2432] < 500 + 16 * megapixels, peaks  # measured: about 480 MB
    assert peaks[4864] - peaks[2432] < 16 * megapixels, peaks  # each further output pixel: measured 8-11 bytes


@pytest.mark.parametrize("kind", ["png", "webp"])
def test_malformed_exif_is_left_out_with_a_note(tmp_path: Path, small_image: Image.Image, kind: str) -> None:
    src = tmp_path / f"bad_exif.{kind}"
    small_image.save(src, exif=b"garbage-exif-data")  # Pillow raises SyntaxError on it (struct.error on others)
    r = dqc("encode", str(src), "--metadata", "all")
    assert r.returncode == 0, r.stderr
    assert b"Traceback" not in r.stderr and b"malformed EXIF left out" in r.stderr
    assert dqcodec.decode(src.with_suffix(".dqc").read_bytes()).size == small_image.size


def test_pixel_limit_from_the_environment(photo: Path) -> None:
    import os

    def run(limit: str, *args: str) -> subprocess.CompletedProcess:
        env = {**os.environ, "DQC_MAX_PIXELS": limit}
        return subprocess.run([DQC, *args], capture_output=True, env=env, timeout=300)

    assert run("1e6", "--version").returncode == 0
    assert run("1e6", "encode", str(photo), "-o", "-").returncode == 0
    assert b"over the 0.001 MP limit" in run("1e3", "encode", str(photo), "-o", "-").stderr
    assert run("many", "--version").returncode == 0
    r = run("many", "encode", str(photo), "-o", "-")
    _one_line_error(r, 1)
    assert b"DQC_MAX_PIXELS" in r.stderr


def test_decompression_bomb_is_refused_before_decoding(tmp_path: Path) -> None:
    """A 35 KB PNG of 60000x60000 pixels: refused by the memory its picture needs, even with
    --allow-large, before its 10.8 GB of pixels are decoded."""
    side = 60000
    compressor = zlib.compressobj(9)
    rows = b"".join(compressor.compress(bytes(1 + 3 * side)) for _ in range(200)) + compressor.flush()

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", rows) + chunk(b"IEND", b""))
    r, peak = _peak_rss_mb("encode", str(bomb), "--allow-large")
    _one_line_error(r, 1)
    assert b"GiB of memory to encode" in r.stderr and peak < 600
    assert not bomb.with_suffix(".dqc").exists()


def _children(pid: int) -> list[int]:
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _batch_source(tmp_path: Path, count: int) -> Path:
    from skimage import data

    src = tmp_path / "src"
    src.mkdir()
    astronaut = Image.fromarray(data.astronaut())
    for i in range(count):
        astronaut.rotate(10 * i).resize((256, 256)).save(src / f"im{i}.png")
    return src


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
@pytest.mark.parametrize("signal_name", ["SIGKILL", "SIGTERM"])
def test_batch_workers_die_with_the_batch(tmp_path: Path, signal_name: str) -> None:
    import os
    import signal
    import time

    src, dst = _batch_source(tmp_path, 6), tmp_path / "dst"
    batch = subprocess.Popen([DQC, "batch", "-j", "2", str(src), str(dst)], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while not (dst.is_dir() and any(dst.glob("*.dqc"))) and time.monotonic() < deadline:
        time.sleep(0.2)
    workers = _children(batch.pid)
    assert workers and batch.poll() is None, "the batch ended before it could be killed"
    os.kill(batch.pid, getattr(signal, signal_name))
    batch.wait(timeout=30)
    deadline = time.monotonic() + 15
    while any(_alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(_alive(w) for w in workers), "workers outlived the batch"
    left = sorted(p.name for p in dst.iterdir() if p.name.startswith("."))
    assert signal_name == "SIGKILL" or not left, left  # SIGTERM unwinds: no temp or lock file
    assert all(dqcodec.decode(p.read_bytes()) for p in dst.glob("*.dqc"))


def test_two_batches_into_one_folder_code_each_file_once(tmp_path: Path) -> None:
    src, dst = _batch_source(tmp_path, 6), tmp_path / "dst"
    runs = [subprocess.Popen([DQC, "batch", "-j", "1", str(src), str(dst)], stderr=subprocess.PIPE) for _ in range(2)]
    tallies = [run.communicate(timeout=300)[1].decode().strip().splitlines()[-1] for run in runs]
    # each run's last line adds up its 6 inputs: made, skipped (made by the other) or failed
    counts = [re.fullmatch(r"dqc: 6 files: ok (\d+), skipped (\d+), failed 0 \(\d+ s\)", t) for t in tallies]
    assert all(counts), tallies
    assert sum(int(c[1]) for c in counts) == 6 and all(int(c[1]) + int(c[2]) == 6 for c in counts), tallies
    assert sorted(p.name for p in dst.iterdir()) == ["dqc-manifest", *(f"im{i}.dqc" for i in range(6))]
    assert len(list((dst / "dqc-manifest").glob("*.jsonl"))) == 2  # one part from each run


def test_distortion_option_picks_estimate_or_measurement(tmp_path: Path) -> None:
    src = tmp_path / "synthetic.png"
    synthetic_image(128, 96, seed=0).save(src)
    coded = {}
    for how in ("estimated", "measured"):
        out = tmp_path / f"{how}.dqc"
        r = dqc("encode", str(src), "-o", str(out), "--distortion", how, "--quiet")
        assert r.returncode == 0, r.stderr
        coded[how] = out.read_bytes()
        assert coded[how] == dqcodec.encode(Image.open(src), distortion=how)
    assert coded["estimated"] != coded["measured"]  # the maps differ here, so the option says something
    r = dqc("encode", str(src), "-o", str(tmp_path / "x.dqc"), "--distortion", "guessed")
    assert r.returncode == 2 and b"guessed" in r.stderr


def default_sigint() -> None:
    """In a child before exec: SIGINT as a terminal's Ctrl-C finds it (a shell's background job,
    which may have started these tests, ignores it, and exec keeps that)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def _wide_file(tmp_path: Path, width: int, height: int = 16) -> Path:
    """A real .dqc of a width x height picture, coded at a quarter of its size (fast)."""
    out = tmp_path / f"wide{width}x{height}.dqc"
    out.write_bytes(dqcodec.encode(np.zeros((height, width, 3), np.uint8), quality=0, scale=0.25))
    return out


def test_output_formats_size_limits_are_one_line_errors(tmp_path: Path) -> None:
    """Pictures past what WebP, JPEG and AVIF take: refused before decoding, naming the file and
    the limit, with nothing from the libraries."""
    for width, suffix, limit in ((16400, "webp", b"16383"), (65600, "jpg", b"65500"), (66562, "avif", b"65536")):
        src = _wide_file(tmp_path, width)
        out = tmp_path / f"out.{suffix}"
        r = dqc("decode", str(src), "-o", str(out))
        _one_line_error(r, 1)
        assert str(src).encode() in r.stderr and limit in r.stderr, r.stderr
        assert not out.exists()
        dst = tmp_path / f"batch_{suffix}"
        r = dqc("batch", "--decode", "--format", suffix, str(src.parent), str(dst), "-j", "1")
        assert r.returncode == 1 and limit in r.stderr and b"internal error" not in r.stderr, r.stderr
    r = dqc("decode", str(_wide_file(tmp_path, 16383)), "-o", str(tmp_path / "ok.webp"))
    assert r.returncode == 0 and Image.open(tmp_path / "ok.webp").size == (16383, 16)


def test_thread_counts_are_bounded(photo: Path, tmp_path: Path) -> None:
    r = dqc("encode", str(photo), "-o", str(tmp_path / "a.dqc"), "--threads", "99999999999999999999")
    _one_line_error(r, 2)
    assert b"4096" in r.stderr
    r = dqc("encode", str(photo), "-o", str(tmp_path / "b.dqc"), "--threads", "4096")
    assert r.returncode == 0 and b"using" in r.stderr, r.stderr  # lowered to the CPUs here, and said
    r = dqc("batch", str(photo.parent), str(tmp_path / "d"), "-j", "99999999999999999999")
    _one_line_error(r, 2)


@pytest.mark.parametrize("option", ["-q", "--bpp", "--scale"])
@pytest.mark.parametrize("value", ["nan", "inf", "-nan"])
def test_non_finite_numbers_are_usage_errors(photo: Path, tmp_path: Path, option: str, value: str) -> None:
    r = dqc("encode", str(photo), "-o", str(tmp_path / "x.dqc"), option, value)
    _one_line_error(r, 2)
    assert not (tmp_path / "x.dqc").exists()


def test_truncated_inputs_name_their_file(tmp_path: Path, small_image: Image.Image) -> None:
    for suffix in ("png", "jpg"):
        whole = tmp_path / f"whole.{suffix}"
        small_image.save(whole)
        cut = tmp_path / f"cut.{suffix}"
        cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
        r = dqc("encode", str(cut), "-o", str(tmp_path / "cut.dqc"))
        _one_line_error(r, 1)
        assert str(cut).encode() in r.stderr and b"truncated" in r.stderr, r.stderr


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_ctrl_c_on_decode_exits_130_in_one_line(tmp_path: Path) -> None:
    import signal
    import time

    big = np.random.default_rng(0).integers(0, 255, (1024, 1024, 3), np.uint8)
    src = tmp_path / "big.dqc"
    src.write_bytes(dqcodec.encode(big, quality=100))
    for delay in (0.3, 3.0):  # while torch imports, and while decoding
        out = tmp_path / f"big{delay}.png"
        run = subprocess.Popen([DQC, "decode", str(src), "-o", str(out)], stderr=subprocess.PIPE,
                               preexec_fn=default_sigint)  # fmt: skip
        time.sleep(delay)
        run.send_signal(signal.SIGINT)
        _, stderr = run.communicate(timeout=120)
        assert run.returncode == 130, (delay, run.returncode, stderr)
        assert stderr.decode().strip().splitlines() == ["dqc: interrupted"], stderr
        assert list(tmp_path.glob("*.png")) == [] and list(tmp_path.glob(".*")) == []


def test_help_describes_every_option_and_its_default() -> None:
    from dqcodec.cli.main import cli

    top = dqc("--help").stdout.decode()
    summaries = top.split("Commands:")[1].strip().splitlines()
    assert len(summaries) == len(cli.commands) and not any(line.endswith(("...", "\u2026")) for line in summaries)
    for name, command in cli.commands.items():
        text = dqc(name, "--help").stdout.decode()
        for param in command.params:
            if not isinstance(param, click.Option) or param.name == "help":
                continue
            assert param.help, (name, param.name)  # every option says what it does
            assert param.opts[-1] in text
            has_default = param.default is not None and "UNSET" not in repr(param.default)  # click 8.2's sentinel
            if not param.is_flag and has_default:  # and what it is when not given
                assert param.show_default or "[default:" in param.help, (name, param.name)
    assert "processes" in dqc("batch", "--help").stdout.decode()  # -j is processes (avifenc's -j is threads)


def test_batch_counts_read_right_and_its_report_keeps_encodes_apart(tmp_path: Path, small_image: Image.Image) -> None:
    """Issue 33's batch polish: "1 file", tallies that add up, the --decode manifest out of the
    decoded pictures' way, --report that does not mix pictures' bytes with .dqc bpp, and a bad
    DST said once."""
    src, dst, decoded = tmp_path / "src", tmp_path / "dst", tmp_path / "decoded"
    src.mkdir()
    small_image.save(src / "photo.png")
    r = dqc("batch", str(src), str(dst), "-q", "30")
    assert r.returncode == 0, r.stderr
    assert re.search(rb"dqc: 1 file: ok 1, skipped 0, failed 0", r.stderr), r.stderr
    r = dqc("batch", str(dst), str(decoded), "--decode")
    assert r.returncode == 0, r.stderr
    assert [p.name for p in decoded.iterdir() if not p.name.startswith(".")] == ["photo.dqc.png"]
    encoded_report = dqc("batch", "--report", str(dst)).stdout.decode()
    assert "encoded: 1 .dqc file" in encoded_report and "bpp" in encoded_report, encoded_report
    decoded_report = dqc("batch", "--report", str(decoded)).stdout.decode()
    assert "decoded: 1 picture" in decoded_report and "bpp" not in decoded_report, decoded_report
    small_image.save(src / "second.png")
    (tmp_path / "a-file").write_bytes(b"")
    r = dqc("batch", str(src), str(tmp_path / "a-file"))
    assert r.returncode == 1 and r.stderr.decode().count("\n") == 1 and b"a-file" in r.stderr, r.stderr
