"""Rate-distortion on Kodak: `dqc compare` on the 24 images, into benchmarks/results/compare-kodak/.

    python -m benchmarks.kodak_rd [--kodak ../shared/data/kodak] [--codecs dq,vqgan,...] [--quick]

The report there (index.html, results.csv, summary.json, bd-rate.md, plots/, crops/) is the one
the README quotes. Its .cache/ is not committed; a rerun with it present only redoes what changed
(a new dqc version, say). Until dqc 0.3 this script swept fixed settings of its own; those research
tables (dqc at fixed scales, dqc 0.2's default) stay in kodak_rd.{csv,json,md}, read by
benchmarks/report.py.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kodak", type=Path, default=Path("../shared/data/kodak"))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/compare-kodak"))
    ap.add_argument("--codecs", help="as dqc compare's --codecs [default: all installed]")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    dqc = Path(sys.executable).with_name("dqc")
    cmd = [str(dqc), "compare", str(args.kodak), "-o", str(args.out)]
    cmd += ["--codecs", args.codecs] if args.codecs else []
    cmd += ["--quick"] if args.quick else []
    sys.exit(subprocess.call(cmd))


if __name__ == "__main__":
    main()
