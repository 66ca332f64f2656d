"""Throughput of `dqc batch` on this machine: the local process pool against a Dask LocalCluster.

    python -m benchmarks.batch_throughput [--images 48] [--rounds 2]

Codes the same images (BSDS500 test, 481x321) at -q 50 with each engine and worker count, each
run a fresh `dqc batch` process into an empty DST, wall clock from start to exit (model loading
and cluster start included, as a user sees it). The engines alternate within each round, so
they see the same machine load; the table gives the median over rounds. Writes
batch_throughput.json under --out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

ENGINES = {  # name: extra `dqc batch` arguments
    "pool, 1 worker": ["-j", "1"],
    "LocalCluster, 1 worker": ["--scheduler", "local", "-j", "1"],
    "pool, 2 workers": ["-j", "2"],
    "LocalCluster, 2 workers": ["--scheduler", "local", "-j", "2"],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("../shared/data/train/bsds500/test"))
    ap.add_argument("--images", type=int, default=48)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = ap.parse_args()
    files = sorted(args.data.glob("*.jpg"))[: args.images]
    megapixels = sum(Image.open(f).width * Image.open(f).height for f in files) / 1e6
    dqc = shutil.which("dqc") or str(Path(sys.executable).parent / "dqc")
    seconds: dict[str, list[float]] = {name: [] for name in ENGINES}
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        for f in files:
            shutil.copy(f, src / f.name)
        for r in range(args.rounds):
            for name, extra in ENGINES.items():
                dst = Path(tmp) / f"dst-{r}-{len(seconds[name])}-{name.replace(' ', '').replace(',', '')}"
                t0 = time.perf_counter()
                subprocess.run([dqc, "batch", *extra, "-q", "50", str(src), str(dst)], check=True,
                               stderr=subprocess.DEVNULL)  # fmt: skip
                seconds[name].append(time.perf_counter() - t0)
                made = len(list(dst.glob("*.dqc")))
                assert made == len(files), (name, made)
                print(f"round {r + 1} {name}: {seconds[name][-1]:.1f} s", flush=True)
    results = {}
    for name, times in seconds.items():
        s = statistics.median(times)
        results[name] = {"seconds": s, "all_seconds": times, "images_per_s": len(files) / s, "mp_per_s": megapixels / s}
    for workers in ("1 worker", "2 workers"):
        pool, dask = results[f"pool, {workers}"], results[f"LocalCluster, {workers}"]
        dask["overhead_vs_pool"] = dask["seconds"] / pool["seconds"] - 1
    print("| engine | seconds | images/s | MP/s | Dask overhead |")
    print("| --- | --- | --- | --- | --- |")
    for name, r in results.items():
        overhead = f"{100 * r['overhead_vs_pool']:+.0f}%" if "overhead_vs_pool" in r else "-"
        print(f"| {name} | {r['seconds']:.1f} | {r['images_per_s']:.2f} | {r['mp_per_s']:.3f} | {overhead} |")
    meta = {"machine": platform.platform(), "cpus": os.cpu_count(), "images": len(files), "megapixels": megapixels,
            "quality": 50, "rounds": args.rounds}  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "batch_throughput.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
