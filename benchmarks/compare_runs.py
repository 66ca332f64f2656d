"""How long `dqc compare` takes, run as a user runs it: the issue's three sizes of comparison.

    python -m benchmarks.compare_runs kodak4-quick     # 4 Kodak images, --quick (target: 5 minutes)
    python -m benchmarks.compare_runs kodak            # all 24, the committed report (compare-kodak/)
    python -m benchmarks.compare_runs bsds200-local    # 200 BSDS500 test images, dq and JPEG, --quick,
                                                       # --scheduler local -j 2

Each run starts from an empty cache (but `kodak`, whose folder is the committed report: delete
benchmarks/results/compare-kodak/.cache to time it afresh). Wall time, exit code and the command
land in benchmarks/results/compare_runs.json, one entry per run name.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

KODAK = Path("../shared/data/kodak")
BSDS_TEST = Path("../shared/data/train/bsds500/test")
RESULTS = Path("benchmarks/results")


def images_folder(source: Path, count: int, into: Path) -> Path:
    """The first `count` pictures of `source`, linked into a folder of their own."""
    into.mkdir(parents=True, exist_ok=True)
    for path in sorted(p for p in source.iterdir() if p.suffix.lower() in (".png", ".jpg"))[:count]:
        (into / path.name).symlink_to(path.resolve())
    return into


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", choices=["kodak4-quick", "kodak", "bsds200-local"])
    args = ap.parse_args()
    dqc = str(Path(sys.executable).with_name("dqc"))
    with tempfile.TemporaryDirectory(prefix="dqc-compare-bench-") as tmp:
        work = Path(tmp)
        if args.run == "kodak4-quick":
            cmd = [dqc, "compare", str(images_folder(KODAK, 4, work / "in")), "-o", str(work / "out"), "--quick"]
        elif args.run == "kodak":
            cmd = [dqc, "compare", str(KODAK), "-o", str(RESULTS / "compare-kodak")]
        else:
            source = images_folder(BSDS_TEST, 200, work / "in")
            # dq against JPEG only: all six codecs would take about 100 minutes here
            cmd = [dqc, "compare", str(source), "-o", str(work / "out"), "--quick", "--codecs", "dq,jpeg"]
            cmd += ["--scheduler", "local", "-j", "2"]
        t0 = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True)
        seconds = time.perf_counter() - t0
        summary = {}
        out = Path(cmd[cmd.index("-o") + 1])
        if (out / "summary.json").exists():
            doc = json.loads((out / "summary.json").read_text())
            summary = {k: doc[k] for k in ("images", "failed_images", "codecs", "metrics")}
        if args.run != "kodak":
            shutil.rmtree(out, ignore_errors=True)
    entry = {
        "command": " ".join(Path(c).name if c == dqc else c for c in cmd),
        "wall_s": round(seconds, 1),
        "exit_code": done.returncode,
        "last_lines": done.stderr.strip().splitlines()[-3:],
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "date": time.strftime("%Y-%m-%d"),
        **summary,
    }
    path = RESULTS / "compare_runs.json"
    runs = json.loads(path.read_text()) if path.exists() else {}
    runs[args.run] = entry
    path.write_text(json.dumps(runs, indent=1) + "\n")
    print(json.dumps(entry, indent=1))


if __name__ == "__main__":
    main()
