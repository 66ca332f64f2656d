"""Add the conformance vectors of this release (run after the format or the shipped weights change).

    python bitstream_spec/make_conformance.py

Files of earlier releases are never regenerated: they stay as those releases wrote them, with
their expected digests, and every later dqc must keep decoding them (FORMAT.md section 9). This
writes the vectors of the current release, named `<RELEASE>_*.dqc`, and replaces only those.

Valid vectors: small crops of scikit-image photos and flat colours at several qualities, tunes
and efforts (some resampled, with an RSMP chunk; most with a CCOR colour correction; the flat
ones and a chart of flat patches with a FLAT chunk), with the decoded picture (PNG) and, in
expected.json, the header fields, each tile's symbol CRC and the digests of the symbols, tokens,
colour offsets and flat blocks (section 9), which every conforming decoder
reproduces exactly; the picture within MAX_PIXEL_DIFF.
Invalid vectors: files a reader must refuse, with the error class it must raise.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data

import dqcodec
from dqcodec.decoding import decode_tokens
from dqcodec.format import bitstream
from dqcodec.format.coding import digests
from dqcodec.format.tokens import Schedule
from dqcodec.models.shipped import model_name

HERE = Path(__file__).parent / "conformance"
RELEASE = "v4"  # the prefix of this release's vectors
MAX_PIXEL_DIFF = 2  # the synthesis transform is float: another machine may round a pixel otherwise


def reference_module():
    spec = importlib.util.spec_from_file_location("reference_prior", Path(__file__).parent / "reference_prior.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def colour_chart() -> np.ndarray:
    """Flat patches of saturated colours beside part of a photo, 100 x 72 (not a multiple of 8 or 16)."""
    chart = np.zeros((72, 100, 3), np.uint8)
    chart[:, 60:] = data.astronaut()[0:72, 200:240]
    for i, rgb in enumerate([(255, 0, 0), (0, 0, 255), (128, 0, 255), (255, 255, 0), (20, 200, 90), (250, 250, 250)]):
        chart[24 * (i // 2) : 24 * (i // 2 + 1), 30 * (i % 2) : 30 * (i % 2 + 1)] = rgb
    return chart


def sources() -> dict[str, Image.Image]:
    flat = np.broadcast_to(np.array([200, 30, 40], np.uint8), (64, 64, 3))
    purple = np.broadcast_to(np.array([128, 0, 255], np.uint8), (64, 64, 3))
    return {
        "astronaut": Image.fromarray(data.astronaut()[40:120, 160:280]),
        "coffee_gray": Image.fromarray(data.coffee()[100:164, 200:300]).convert("L"),
        "chelsea_wide": Image.fromarray(data.chelsea()[100:148, 0:300]),
        "rocket_psnr": Image.fromarray(data.rocket()[150:246, 200:360]),
        "astronaut_4tiles": Image.fromarray(data.astronaut()[20:300, 100:400]),
        "flat_red": Image.fromarray(flat.copy()),
        "camera_gray": Image.fromarray(data.camera()[100:196, 100:260]),
        "flat_purple": Image.fromarray(purple.copy()),
        "flat_gray": Image.fromarray(np.full((40, 50), 77, np.uint8)).convert("L"),
        "flat_chart": Image.fromarray(colour_chart()),
        "pixel_red": Image.fromarray(np.array([[[255, 0, 0]]], np.uint8)),
    }


# (source, -q, tune, effort, scale or None for -q's own)
SETTINGS = [
    ("astronaut", 0, "ssim", None, None),
    ("astronaut", 50, "ssim", None, None),
    ("astronaut", 100, "ssim", None, None),
    ("astronaut", 50, "ssim", 0, None),
    ("coffee_gray", 50, "ssim", None, None),
    ("chelsea_wide", 30, "ssim", None, None),
    ("chelsea_wide", 50, "ssim", None, 1.5),
    ("rocket_psnr", 60, "psnr", None, None),
    ("astronaut_4tiles", 70, "ssim", None, None),
    ("flat_red", 50, "ssim", None, None),
    ("camera_gray", 60, "ssim", None, None),
    ("flat_purple", 50, "ssim", None, None),
    ("flat_gray", 50, "ssim", None, None),
    ("flat_chart", 50, "ssim", None, None),
    ("flat_chart", 20, "ssim", None, 0.5),
    ("pixel_red", 50, "ssim", None, None),
]


def entry(stem: str, blob: bytes) -> dict:
    c, tokens = decode_tokens(blob)
    symbols_sha, tokens_sha = digests(tokens.levels[0], tuple(i[0] for i in tokens.idx), Schedule(c.header.periods))
    offsets = reference_module().colour_offsets(blob)
    flat = reference_module().flat_blocks(blob)
    return {
        "file": f"{stem}.dqc",
        "decoded": f"{stem}.png",
        "version": c.version,
        "model": model_name(c.header.model_id),
        "width": c.header.width,
        "height": c.header.height,
        "coded_width": c.coded_width,
        "coded_height": c.coded_height,
        "color": c.header.color,
        "tiles": len(c.tiles),
        "symbol_crcs": [t.symbol_crc for t in c.tiles],
        "symbols_sha256": symbols_sha,
        "tokens_sha256": tokens_sha,
        "colour_sha256": None if offsets is None else reference_module().colour_digest(offsets),
        "flat_sha256": None if flat is None else reference_module().flat_digest(*flat),
        "levels": [int((tokens.levels == lv).sum()) for lv in range(3)],
        "settings": None if c.settings is None else str(c.settings),
        "max_pixel_diff": MAX_PIXEL_DIFF,
    }


def main() -> None:
    HERE.mkdir(exist_ok=True)
    expected = json.loads((HERE / "expected.json").read_text())
    valid = [v for v in expected["valid"] if not v["file"].startswith(f"{RELEASE}_")]
    pictures = sources()
    for name, q, tune, effort, scale in SETTINGS:
        options = {} if effort is None else {"effort": effort}
        blob = dqcodec.encode(pictures[name], quality=q, tune=tune, scale=scale, **options)
        stem = (
            f"{RELEASE}_{name}_q{q}" + ("" if effort is None else f"_e{effort}") + (f"_scale{scale:g}" if scale else "")
        )
        (HERE / f"{stem}.dqc").write_bytes(blob)
        dqcodec.decode(blob).save(HERE / f"{stem}.png")
        valid.append(entry(stem, blob))
    good = (HERE / f"{RELEASE}_flat_red_q50.dqc").read_bytes()
    assert bitstream.read(good).flat is not None
    bad_version = bytearray(good)
    bad_version[8] = 9
    invalid = {
        "bad_version.dqc": (bytes(bad_version), "FormatError"),
        f"{RELEASE}_flat_in_version3.dqc": (good[:8] + bytes([3]) + good[9:], "FormatError"),
    }
    for fname, (blob, _) in invalid.items():
        (HERE / fname).write_bytes(blob)
    kept = [v for v in expected["invalid"] if v["file"] not in invalid]
    expected = {"valid": valid, "invalid": kept + [{"file": f, "error": e} for f, (_, e) in invalid.items()]}
    (HERE / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")
    print(f"wrote {len(SETTINGS)} valid and {len(invalid)} invalid vectors of {RELEASE} to {HERE}")


if __name__ == "__main__":
    main()
