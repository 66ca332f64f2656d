"""Rate-distortion on BSDS500 test images: `dqc compare` on the first N of them, all codecs, into
benchmarks/results/compare-bsds500/ (the README's second column of BD-rates, beside Kodak's).

    python -m benchmarks.bsds500_rd [--images 40] [--codecs dq,vqgan,...]

BSDS500 test is where dqc's settings were chosen (never Kodak), so these figures are not held
out as Kodak's are. The images (481x321 JPEGs) are linked into a temporary folder; the report's
crops and per-image plots are not committed (no picture of the data sets in the repository), its
tables and mean plots are. About 20 minutes for 40 images on 2 cores.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

BSDS_TEST = Path("../shared/data/train/bsds500/test")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=40)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/compare-bsds500"))
    ap.add_argument("--codecs", help="as dqc compare's --codecs [default: all installed]")
    args = ap.parse_args()
    dqc = Path(sys.executable).with_name("dqc")
    with tempfile.TemporaryDirectory(prefix="dqc-bsds500-") as tmp:
        for path in sorted(BSDS_TEST.glob("*.jpg"))[: args.images]:
            (Path(tmp) / path.name).symlink_to(path.resolve())
        cmd = [str(dqc), "compare", tmp, "-o", str(args.out)]
        cmd += ["--codecs", args.codecs] if args.codecs else []
        sys.exit(subprocess.call(cmd))


if __name__ == "__main__":
    main()
