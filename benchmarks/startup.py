"""Start-up: what a call of `dqc` costs before it works, as a ratio to `python -c "import torch"`.

    python -m benchmarks.startup [--rounds 5] [--stem startup]

Times (wall seconds, the median of the rounds; within a round the commands run one after the
other, so load on the machine hits them alike) `import torch`, `dqc --help`, `dqc info` of a
1x1 file, and the encode and decode of a 1x1 picture at the default settings, in fresh
processes. Issue 33's target: the 1x1 encode and decode each at most 1.5x `import torch`, and
`--help` and `info` without torch. Writes benchmarks/results/<stem>.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    ap.add_argument("--stem", default="startup")
    args = ap.parse_args()
    dqc = shutil.which("dqc") or str(Path(sys.executable).parent / "dqc")
    with tempfile.TemporaryDirectory() as tmp:
        one = Path(tmp) / "one.png"
        Image.new("RGB", (1, 1), (200, 30, 40)).save(one)
        coded = Path(tmp) / "one.dqc"
        subprocess.run([dqc, "encode", str(one), "-o", str(coded)], check=True, capture_output=True)
        commands = {
            "import torch": [sys.executable, "-c", "import torch"],
            "dqc --help": [dqc, "--help"],
            "dqc info 1x1": [dqc, "info", str(coded)],
            "dqc encode 1x1": [dqc, "encode", str(one), "-o", str(Path(tmp) / "e.dqc"), "--overwrite"],
            "dqc decode 1x1": [dqc, "decode", str(coded), "-o", str(Path(tmp) / "d.png"), "--overwrite"],
        }
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(args.rounds):
            for name, command in commands.items():
                t0 = time.perf_counter()
                subprocess.run(command, check=True, capture_output=True)
                times[name].append(time.perf_counter() - t0)
        torch_loaded = {
            name: "torch"
            in subprocess.run(
                [sys.executable, "-X", "importtime", *command[1:]]
                if command[0] == sys.executable
                else [sys.executable, "-X", "importtime", "-m", "dqcodec.cli.main", *command[1:]],
                capture_output=True,
                text=True,
            ).stderr  # fmt: skip
            for name, command in commands.items()
            if name.startswith("dqc")
        }
    median = {name: statistics.median(t) for name, t in times.items()}
    base = median["import torch"]
    result = {
        "meta": {"machine": platform.platform(), "python": platform.python_version(), "rounds": args.rounds},
        "seconds": times,
        "median_seconds": median,
        "ratio_to_import_torch": {name: m / base for name, m in median.items()},
        "imports_torch": torch_loaded,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.stem}.json").write_text(json.dumps(result, indent=1) + "\n")
    for name, m in median.items():
        torch_note = f", imports torch: {torch_loaded[name]}" if name in torch_loaded else ""
        print(f"{name:16} {m:6.2f} s  {m / base:5.2f}x import torch{torch_note}")


if __name__ == "__main__":
    main()
