"""BD-rate of dqc now against an earlier release of dqc, run from its commit: what dqc has gained
since a release that had no `dqc compare`, on the same images and measures.

    python -m benchmarks.compare_release --commit 8e36ee8 --current-qualities 20,25,30,...,70 \
        [--report benchmarks/results/compare-kodak] [--qualities 0,15,30,50,65,80,100] [--stem compare_release_0.2]
        [--current-effort 5] [--against avif] [--reuse benchmarks/results/compare_release_0.2.json] [--jobs 2]

The release is checked out in a temporary git worktree (its C kernels built in place) and run in a
child interpreter with that worktree first on its path: its `dqcodec.encode(img, quality=Q)` and its
own `decode` on every image of the report, at each of --qualities (its `dqc encode -q Q`). With
--current-qualities this checkout is run the same way at those -q values. The pictures are scored
here by `dqcodec.compare.metrics`, as the report's were. Each curve is the mean, over the images, of
its k-th point by rate (`compare_versions.mean_curve`); the BD-rate is the report's (`bjontegaard`,
pchip), against the release, of the report's codec (its few rates, spread over every scale) and of
this checkout's -q curve (as dense as the release's: the fairer comparison). --current-effort
codes this checkout at that `--effort` (codec `dq@current:effort=E`; `dq@current` is the default
effort), --against also gives each of this checkout's curves' BD-rate against those codecs of the
report, and --reuse keeps an earlier output's rows (the release's, and this checkout's other
curves). Writes OUT/STEM.json
(benchmarks/results/) with every row.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.compare_versions import MEASURES, mean_curve
from dqcodec.compare.metrics import measure_all
from dqcodec.compare.report import bd_rate

# run by the release's interpreter: encode and decode each image at each quality
CHILD = """
import json, sys
from pathlib import Path
from PIL import Image
import dqcodec
images, qualities, out = json.loads(sys.argv[1]), json.loads(sys.argv[2]), Path(sys.argv[3])
options = json.loads(sys.argv[4]) if len(sys.argv) > 4 else {}
for path in images:
    img = Image.open(path).convert("RGB")
    for q in qualities:
        data = dqcodec.encode(img, quality=q, **options)
        name = f"{Path(path).stem}_q{q:g}.png"
        dqcodec.decode(data).convert("RGB").save(out / name)
        print(json.dumps({"image": Path(path).name, "quality": q, "bytes": len(data), "png": name}), flush=True)
"""


def coded_rows(
    tree: Path, images: list[Path], qualities: list[float], work: Path, options: dict | None = None, jobs: int = 1
) -> list[dict]:
    """(image, quality, bytes, decoded png) rows of the dqc checked out at `tree`, its `encode`
    given `options` too; in `jobs` child interpreters, each on its share of the images."""
    env = os.environ | {"PYTHONPATH": str(tree)}
    if jobs > 1:
        env |= {"OMP_NUM_THREADS": "1"}  # each child on one core
    shares = [images[k::jobs] for k in range(jobs) if images[k::jobs]]
    children = []
    for share in shares:
        paths = json.dumps([str(p.resolve()) for p in share])
        command = [sys.executable, "-c", CHILD, paths, json.dumps(qualities), str(work), json.dumps(options or {})]
        children.append(subprocess.Popen(command, cwd=tree, env=env, stdout=subprocess.PIPE, text=True))
    rows = []
    for child in children:
        out, _ = child.communicate()
        if child.returncode:
            raise subprocess.CalledProcessError(child.returncode, "the release's encoder")
        rows += [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return sorted(rows, key=lambda r: (r["image"], r["quality"]))


def release_rows(commit: str, images: list[Path], qualities: list[float], work: Path, jobs: int = 1) -> list[dict]:
    """The rows of the release at `commit`, from a worktree with its C kernels built in place."""
    tree = work / "tree"
    subprocess.run(["git", "worktree", "add", "--detach", str(tree), commit], check=True, capture_output=True)
    try:
        subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"], cwd=tree, check=True,
                       capture_output=True)  # fmt: skip
        return coded_rows(tree, images, qualities, work, jobs=jobs)
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(tree)], check=False, capture_output=True)


def scored(rows: list[dict], codec: str, images: Path, work: Path) -> list[dict]:
    """The rows with their rate and measures (the report's) against the originals."""
    out = []
    for row in rows:
        reference = np.asarray(Image.open(images / row["image"]).convert("RGB"))
        decoded = np.asarray(Image.open(work / row.pop("png")))
        h, w = reference.shape[:2]
        row |= {"codec": codec, "bpp": 8 * row["bytes"] / (w * h)}
        out.append(row | measure_all(list(MEASURES), reference, decoded))
        print(codec, row["image"], row["quality"], f"{row['bpp']:.4f}", flush=True)
    return out


def as_csv(rows: list[dict]) -> str:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return text.getvalue()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--commit", required=True, help="the release's commit")
    ap.add_argument("--report", type=Path, default=Path("benchmarks/results/compare-kodak"))
    ap.add_argument("--codec", default="dq", help="the report's codec to compare")
    ap.add_argument("--images", type=Path, default=Path("../shared/data/kodak"))
    ap.add_argument("--qualities", default="0,15,30,50,65,80,100", help="the release's -q values")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    ap.add_argument("--stem", default="compare_release")
    ap.add_argument("--current-qualities", help="also code with this checkout at these -q values (same harness)")
    ap.add_argument("--reuse", type=Path, help="take the release's rows from this earlier output")
    ap.add_argument("--current-effort", type=int, help="this checkout's --effort [default: its default]")
    ap.add_argument("--against", default="", help="report codecs to give this checkout's BD-rates against too")
    ap.add_argument("--jobs", type=int, default=1, help="encoders in parallel, each on one core")
    ap.add_argument("--limit", type=int, default=0, help="only the first N images (a smoke test)")
    args = ap.parse_args()
    report = (args.report / "results.csv").read_text()
    names = sorted({row["image"] for row in csv.DictReader(io.StringIO(report)) if row["codec"] == args.codec})
    images = [args.images / n for n in names[: args.limit or None]]
    qualities = [float(q) for q in args.qualities.split(",")]
    release = f"dq@{args.commit}"
    current = "dq@current" + (f":effort={args.current_effort}" if args.current_effort is not None else "")
    with tempfile.TemporaryDirectory(prefix="dqc-release-") as tmp:
        if args.reuse:  # an earlier run's rows: a release's files never change
            earlier = json.loads(args.reuse.read_text())
            assert earlier["release"] == args.commit and earlier["release_qualities"] == qualities
            rows = [r for r in earlier["rows"] if not (args.current_qualities and r["codec"] == current)]
        else:
            coded = release_rows(args.commit, images, qualities, Path(tmp), args.jobs)
            rows = scored(coded, release, args.images, Path(tmp))
        if args.current_qualities:
            options = {"effort": args.current_effort} if args.current_effort is not None else {}
            currents = [float(q) for q in args.current_qualities.split(",")]
            coded = coded_rows(Path.cwd(), images, currents, Path(tmp), options, args.jobs)
            rows += scored(coded, current, args.images, Path(tmp))
    old = mean_curve(as_csv(rows), release)
    result: dict = {"report": str(args.report), "codec": args.codec, "release": args.commit}
    result["release_qualities"] = qualities
    curves = {f"{args.codec} of the report": mean_curve(report, args.codec)}
    for codec in sorted({r["codec"] for r in rows} - {release}):
        spread = ",".join(f"{q:g}" for q in sorted({r["quality"] for r in rows if r["codec"] == codec}))
        curves[f"{codec} -q {spread}"] = mean_curve(as_csv(rows), codec)
    result["bd_rate_percent"] = {
        name: {m: bd_rate(new, old, m) for m in MEASURES if m in old[0] and m in new[0]} for name, new in curves.items()
    }
    result["bd_rate_against_report"] = {
        other: {
            name: {m: bd_rate(new, anchor, m) for m in MEASURES if m in anchor[0] and m in new[0]}
            for name, new in {release: old, **curves}.items()
        }
        for other in filter(None, args.against.split(","))
        for anchor in [mean_curve(report, other)]
    }
    result |= {"curve_release": old, "curves_now": curves, "rows": rows}
    (args.out / f"{args.stem}.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: result[k] for k in ("bd_rate_percent", "bd_rate_against_report")}, indent=1))


if __name__ == "__main__":
    main()
