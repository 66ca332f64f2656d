"""Regenerate the conformance vectors (run after the shipped weights change).

    python bitstream_spec/make_conformance.py

Valid vectors: small crops of scikit-image photos at several qualities (two of them resampled,
with an RSMP chunk), with the decoded picture (PNG) and the header fields in expected.json.
Invalid vectors: files a reader must refuse, with the error class it must raise.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data

import dqcodec
from dqcodec import bitstream

HERE = Path(__file__).parent / "conformance"


def main() -> None:
    HERE.mkdir(exist_ok=True)
    sources = {
        "astronaut": Image.fromarray(data.astronaut()[40:120, 160:280]),
        "coffee_gray": Image.fromarray(data.coffee()[100:164, 200:300]).convert("L"),
        "chelsea_wide": Image.fromarray(data.chelsea()[100:148, 0:300]),
    }
    valid = []
    settings = [(name, q, 1.0) for name in sources for q in (0, 50, 100)]
    settings += [("astronaut", 50, 0.5), ("chelsea_wide", 50, 1.5)]
    for name, q, scale in settings:
        img = sources[name]
        blob = dqcodec.encode(img, quality=q, scale=scale)
        stem = f"{name}_q{q}" + ("" if scale == 1 else f"_scale{scale:g}")
        (HERE / f"{stem}.dqc").write_bytes(blob)
        out = dqcodec.decode(blob)
        out.save(HERE / f"{stem}.png")
        c = bitstream.read(blob)
        valid.append(
            {
                "file": f"{stem}.dqc",
                "decoded": f"{stem}.png",
                "width": c.header.width,
                "height": c.header.height,
                "coded_width": c.coded_width,
                "coded_height": c.coded_height,
                "color": c.header.color,
                "tiles": len(c.tiles),
                "symbol_crcs": [t.symbol_crc for t in c.tiles],
                "decoded_sha256": hashlib.sha256(np.asarray(out).tobytes()).hexdigest(),
            }
        )
    good = (HERE / "astronaut_q50.dqc").read_bytes()
    bad_version = bytearray(good)
    bad_version[8] = 2
    bad_crc = bytearray(good)
    bad_crc[30] ^= 0xFF
    invalid = {
        "truncated.dqc": (good[: len(good) // 2], "FormatError"),
        "bad_version.dqc": (bytes(bad_version), "FormatError"),
        "bad_chunk_crc.dqc": (bytes(bad_crc), "FormatError"),
        "no_end.dqc": (good[:-12], "FormatError"),
    }
    for fname, (blob, _) in invalid.items():
        (HERE / fname).write_bytes(blob)
    expected = {"valid": valid, "invalid": [{"file": f, "error": e} for f, (_, e) in invalid.items()]}
    (HERE / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")
    print(f"wrote {len(valid)} valid and {len(invalid)} invalid vectors to {HERE}")


if __name__ == "__main__":
    main()
