"""Regenerate the conformance vectors (run after the shipped weights change).

    python bitstream_spec/make_conformance.py

Valid vectors: small crops of scikit-image photos at several qualities and tunes (two of them
resampled, with an RSMP chunk), with the decoded picture (PNG) and, in expected.json, the header
fields, each tile's symbol CRC and the digests of the symbols and tokens (FORMAT.md section 9),
which every conforming decoder reproduces exactly; the picture within MAX_PIXEL_DIFF.
Invalid vectors: files a reader must refuse, with the error class it must raise.
"""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image
from skimage import data

import dqcodec
from dqcodec.codec import decode_tokens
from dqcodec.coding import digests
from dqcodec.tokens import Schedule

HERE = Path(__file__).parent / "conformance"
MAX_PIXEL_DIFF = 2  # the synthesis transform is float: another machine may round a pixel otherwise


def main() -> None:
    HERE.mkdir(exist_ok=True)
    sources = {
        "astronaut": Image.fromarray(data.astronaut()[40:120, 160:280]),
        "coffee_gray": Image.fromarray(data.coffee()[100:164, 200:300]).convert("L"),
        "chelsea_wide": Image.fromarray(data.chelsea()[100:148, 0:300]),
        "rocket_psnr": Image.fromarray(data.rocket()[150:246, 200:360]),
        "astronaut_4tiles": Image.fromarray(data.astronaut()[20:300, 100:400]),
    }
    valid = []
    settings = [(name, q, 1.0, "ssim") for name in ("astronaut", "coffee_gray", "chelsea_wide") for q in (0, 50, 100)]
    settings += [("astronaut", 25, 1.0, "ssim"), ("astronaut", 75, 1.0, "ssim"), ("astronaut_4tiles", 70, 1.0, "ssim")]
    settings += [("astronaut", 50, 0.5, "ssim"), ("chelsea_wide", 50, 1.5, "ssim"), ("rocket_psnr", 60, 1.0, "psnr")]
    for name, q, scale, tune in settings:
        img = sources[name]
        blob = dqcodec.encode(img, quality=q, scale=scale, tune=tune)
        stem = f"{name}_q{q}" + ("" if scale == 1 else f"_scale{scale:g}")
        (HERE / f"{stem}.dqc").write_bytes(blob)
        out = dqcodec.decode(blob)
        out.save(HERE / f"{stem}.png")
        c, tokens = decode_tokens(blob)
        symbols_sha, tokens_sha = digests(tokens.levels[0], tuple(i[0] for i in tokens.idx), Schedule(c.header.periods))
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
                "symbols_sha256": symbols_sha,
                "tokens_sha256": tokens_sha,
                "levels": [int((tokens.levels == lv).sum()) for lv in range(3)],
                "max_pixel_diff": MAX_PIXEL_DIFF,
            }
        )
    good = (HERE / "astronaut_q50.dqc").read_bytes()
    bad_version = bytearray(good)
    bad_version[8] = 3
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
    # version1.dqc (a file of dqc 0.1, float prior) stays as it is: version 2 readers refuse it
    invalid["version1.dqc"] = (b"", "FormatError")
    expected = {"valid": valid, "invalid": [{"file": f, "error": e} for f, (_, e) in invalid.items()]}
    (HERE / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")
    print(f"wrote {len(valid)} valid and {len(invalid)} invalid vectors to {HERE}")


if __name__ == "__main__":
    main()
