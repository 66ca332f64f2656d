"""Encode/decode speed and peak memory on Kodak: dqc, dqc at a baseline commit (side by side),
Pillow's JPEG, WebP, AVIF and JPEG XL, and CompressAI's bmshj2018-hyperprior, mbt2018-mean and
cheng2020-anchor (random weights; `benchmarks/compressai_models.py`), on this CPU.

    python -m benchmarks.speed [--images 6] [--baseline 11c1e41] [--only 'dq q=50,dq --bpp 0.1'] [--stem speed]
                               [--rounds 1] [--baseline-every]

Settings: 'dq q=50' (-q 50 at scale 1, the default effort), 'dq q=100 scale 1.5', 'dq q=50 effort 0'
(an effort), 'dq default' (dqcodec.encode with every default: the -q path across scales), 'dq --bpp 0.1'.

Each codec setting runs in a fresh subprocess (so its peak RSS is its own, model loading
included); times are per image, after one warm-up image, wall clock on all cores, plus the
process's CPU seconds. The baseline's dqc runs from a git worktree of that commit (its own code
and weights, this environment's packages) right after the same setting of this checkout's, so
both see the same machine load. --rounds R runs every setting R times, each round's pair in
the other order, and reports each image's median: the machine is shared, and one run of a setting
can be 10% off the next. Writes speed.json under --out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from dqcodec.encoder.effort import MAX_EFFORT

WORKER = r"""
import io, json, resource, sys, time
from pathlib import Path
from PIL import Image
codec, quality, scale, effort = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
files = sys.argv[5:]
from benchmarks.codecs import LEARNED, pillow_encode
if codec.removesuffix("-bpp") in LEARNED:
    import dqcodec
    model, tune = LEARNED[codec.removesuffix("-bpp")]
    options = {"effort": effort} if effort >= 0 else {}  # a baseline commit may predate --effort
    if codec.endswith("-bpp"):  # the setting's number is a target rate
        enc = lambda im: dqcodec.encode(im, target_bpp=quality, model=model, tune=tune, **options)
    elif quality != quality:  # NaN: every default
        enc = lambda im: dqcodec.encode(im, model=model, tune=tune, **options)
    else:
        enc = lambda im: dqcodec.encode(im, quality=quality, model=model, tune=tune, scale=scale, **options)
    dec = lambda b: dqcodec.decode(b, model=model)
elif codec.startswith("compressai:"):  # CompressAI's model of that zoo name, random weights
    from benchmarks import compressai_models as cai
    net = cai.model(codec.removeprefix("compressai:"), int(quality))
    enc = lambda im: cai.encode(net, im)
    dec = lambda b: cai.decode(net, b)
else:
    enc = lambda im: pillow_encode(im, codec, int(quality))
    dec = lambda b: Image.open(io.BytesIO(b)).convert("RGB")
rows = []
imgs = [Image.open(f).convert("RGB") for f in files]
dec(enc(imgs[0]))  # warm-up: model loading, first-call costs
for f, im in zip(files, imgs):
    c0, t0 = time.process_time(), time.perf_counter(); blob = enc(im); c1, t1 = time.process_time(), time.perf_counter()
    out = dec(blob); out.load(); c2, t2 = time.process_time(), time.perf_counter()
    rows.append({"image": Path(f).name, "bytes": len(blob), "encode_s": t1 - t0, "decode_s": t2 - t1,
                 "encode_cpu_s": c1 - c0, "decode_cpu_s": c2 - c1})
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"rows": rows, "peak_rss_mb": peak}))
"""

REPO = Path(__file__).resolve().parent.parent
SETTINGS = [  # codec, quality (a target bpp for "-bpp", NaN for every default), scale (dqc's --scale), effort
    ("jpeg", 50, 1),
    ("webp", 20, 1),
    ("avif", 20, 1),
    ("jxl", 20, 1),
    ("dq", float("nan"), 1),
    ("dq", 0, 0.5),
    ("dq", 0, 1),
    ("dq", 50, 1),
    ("dq", 100, 1),
    ("dq", 100, 1.5),
    *(("dq", 50, 1, effort) for effort in range(MAX_EFFORT + 1)),
    ("dq-bpp", 0.05, 1),
    ("dq-bpp", 0.1, 1),
    ("dq-bpp", 0.2, 1),
    ("dq-psnr", 50, 1),
    ("vqgan", 50, 1),
    # CompressAI (installed for the benchmark only, random weights: speed, not rate), zoo quality 3
    ("compressai:bmshj2018-hyperprior", 3, 1),
    ("compressai:mbt2018-mean", 3, 1),
    ("compressai:cheng2020-anchor", 3, 1),
]
BASELINE_SETTINGS = {"dq default", "dq q=0", "dq q=50", "dq q=100"}  # names: a baseline encodes with its own effort


def name(codec: str, quality: float, scale: float, effort: int = -1) -> str:
    suffix = "" if effort < 0 else f" effort {effort}"
    if codec.endswith("-bpp"):
        return f"{codec.removesuffix('-bpp')} --bpp {quality}{suffix}"
    if quality != quality:
        return f"{codec} default{suffix}"
    return f"{codec} q={quality}" + ("" if scale == 1 else f" scale {scale}") + suffix


def parse_name(label: str) -> tuple[str, float, float, int]:
    """A setting's name -> (codec, quality, scale, effort), for settings that SETTINGS does not list."""
    label, _, effort = label.partition(" effort ")
    codec, _, rest = label.partition(" ")
    e = int(effort) if effort else -1
    if rest.startswith("--bpp "):
        return f"{codec}-bpp", float(rest.split()[1]), 1, e
    if rest == "default":
        return codec, float("nan"), 1, e
    if rest.startswith("q="):
        quality, _, scale = rest[2:].partition(" scale ")
        q = float(quality)
        return codec, int(q) if q.is_integer() else q, float(scale or 1), e
    raise SystemExit(f"cannot read the setting {label!r}: e.g. 'dq q=75', 'dq q=100 scale 1.5', 'dq --bpp 0.2'")


def run(codec: str, q: float, scale: float, effort: int, files: list[str], code_root: Path) -> dict:
    """One setting in a fresh process importing dqcodec from `code_root`."""
    path = [str(code_root), str(REPO), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, path))}
    cmd = [sys.executable, "-c", WORKER, codec, str(q), str(scale), str(effort), *files]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=code_root)
    if r.returncode:
        raise SystemExit(f"{name(codec, q, scale)} ({code_root}) failed:\n{r.stderr}")
    return json.loads(r.stdout.strip().splitlines()[-1])


TIMES = ("encode_s", "decode_s", "encode_cpu_s", "decode_cpu_s")


def summary(runs: list[dict]) -> dict:
    """A setting's rounds -> each image's median time over the rounds, then the mean over images
    (and the highest peak RSS)."""
    rows = [
        {**per_round[0], **{k: statistics.median(x[k] for x in per_round) for k in TIMES}}
        for per_round in zip(*(r["rows"] for r in runs))
    ]
    n = len(rows)
    mean = {k: sum(x[k] for x in rows) / n for k in TIMES}
    bpp = sum(8 * x["bytes"] / (768 * 512) for x in rows) / n
    peak = max(r["peak_rss_mb"] for r in runs)
    return {**mean, "bpp": bpp, "peak_rss_mb": peak, "rounds": len(runs), "rows": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kodak", type=Path, default=Path("../shared/data/kodak"))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    ap.add_argument("--images", type=int, default=6)
    ap.add_argument("--baseline", default="11c1e41", help="a commit to time side by side ('' for none)")
    ap.add_argument(
        "--only", default="", help="comma-separated setting names, e.g. 'dq q=50,dq --bpp 0.1,dq q=75' (any q)"
    )
    ap.add_argument("--stem", default="speed", help="name of the result file")
    ap.add_argument("--baseline-every", action="store_true", help="time the baseline at every setting, not only -q's")
    ap.add_argument(
        "--rounds", type=int, default=1, help="runs of every setting, interleaved with its baseline's (medians)"
    )
    args = ap.parse_args()
    only = set(filter(None, args.only.split(",")))
    files = [str(p.resolve()) for p in sorted(args.kodak.glob("kodim*.png"))[: args.images]]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        base_root = Path(tmp) / "baseline"
        if args.baseline:
            subprocess.run(["git", "worktree", "add", "--detach", str(base_root), args.baseline], cwd=REPO, check=True)
        try:
            settings = [(*s, -1)[:4] for s in SETTINGS]
            chosen = [s for s in settings if not only or name(*s) in only]
            chosen += [parse_name(label) for label in sorted(only - {name(*s) for s in settings})]
            runs: dict[str, list[dict]] = {}
            for i in range(args.rounds):
                for codec, q, scale, effort in chosen:
                    label = name(codec, q, scale, effort)
                    pair = [(label, REPO)]
                    if args.baseline and (label in BASELINE_SETTINGS or args.baseline_every):
                        pair.append((label + f" ({args.baseline})", base_root))
                    for label, root in pair[:: 1 if i % 2 == 0 else -1]:  # either goes first in turn
                        runs.setdefault(label, []).append(run(codec, q, scale, effort, files, root))
            results = {label: summary(r) for label, r in runs.items()}
        finally:
            if args.baseline:
                subprocess.run(["git", "worktree", "remove", "--force", str(base_root)], cwd=REPO, check=True)
    base = results.get("jpeg q=50")
    print("| codec | bpp | encode s | decode s | encode CPU s | decode CPU s | x JPEG decode | peak RSS MB |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for label, e in results.items():
        x_jpeg = f"{e['decode_s'] / base['decode_s']:.0f}" if base else "-"
        print(
            f"| {label} | {e['bpp']:.4f} | {e['encode_s']:.3f} | {e['decode_s']:.3f} | {e['encode_cpu_s']:.2f} | "
            f"{e['decode_cpu_s']:.2f} | {x_jpeg} | {e['peak_rss_mb']:.0f} |"
        )
    meta = {
        "machine": platform.platform(),
        "commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
        ).stdout.strip(),
        "cpus": os.cpu_count(),
        "images": len(files),
        "baseline": args.baseline,
        "rounds": args.rounds,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.stem}.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1))


if __name__ == "__main__":
    main()
