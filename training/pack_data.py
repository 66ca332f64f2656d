"""Pack ../shared/data/train into one folder of JPEG-95 (4:4:4) files small enough to carry to a GPU machine.

The packed copy lives in an ignored folder (never committed): the training data stays in ../shared.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--src", type=Path, default=Path("../shared/data/train"))
    ap.add_argument("--dst", type=Path, default=Path(".gpu/data"))
    ap.add_argument("--include-test", action="store_true", help="also pack bsds500/test (validation)")
    args = ap.parse_args()
    args.dst.mkdir(parents=True, exist_ok=True)
    files = sorted(p for p in args.src.rglob("*") if p.suffix.lower() in {".png", ".jpg", ".jpeg"})
    n = 0
    for p in files:
        rel = p.relative_to(args.src)
        if "kodak" in rel.parts or ("test" in rel.parts and not args.include_test):
            continue
        out = args.dst / ("_".join(rel.with_suffix("").parts) + ".jpg")
        if p.suffix.lower() in {".jpg", ".jpeg"}:
            out.write_bytes(p.read_bytes())
        else:
            Image.open(p).convert("RGB").save(out, quality=95, subsampling=0)
        n += 1
    print(f"packed {n} images into {args.dst}")


if __name__ == "__main__":
    main()
