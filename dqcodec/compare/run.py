"""`dqc compare`: every image through every codec, on a local pool or a Dask cluster, into a report.

Each image is one task (sweep.run_image). The report is rewritten as results come (at most every
REPORT_SECONDS) and at the end; a Ctrl-C writes it from what has come, marked partial. A rerun
finds the coded files and their measures in REPORT_DIR/.cache and redoes only what is missing.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import click

from dqcodec.compare.codecs import DEFAULT_CODECS, missing_reason, parse_codec
from dqcodec.compare.metrics import ALWAYS, OPTIONAL
from dqcodec.compare.metrics import missing_reason as metric_missing
from dqcodec.compare.sweep import ImageJob, ImageResult, run_image
from dqcodec.errors import DQCError

QUICK_POINTS, DEFAULT_POINTS = 4, 6
REPORT_SECONDS = 30.0
PLAIN_PROGRESS_SECONDS = 10.0


@dataclasses.dataclass(frozen=True)
class Plan:
    images: list[str]
    codecs: list[str]
    metrics: list[str]
    notes: list[str]


def list_images(srcs: tuple[str, ...], report_dir: str | None = None) -> list[str]:
    """The pictures among SRC files and under SRC folders (recursively, but not in hidden folders
    nor in REPORT_DIR, whose crops are pictures too), sorted per folder."""
    from dqcodec.cli.files import is_picture_name

    report = os.path.realpath(report_dir) if report_dir else None
    found: list[str] = []
    for src in srcs:
        if os.path.isdir(src):
            for folder, dirs, files in os.walk(src):
                dirs[:] = sorted(
                    d for d in dirs if not d.startswith(".") and os.path.realpath(os.path.join(folder, d)) != report
                )
                found += [os.path.join(folder, f) for f in sorted(files) if is_picture_name(f)]
        elif os.path.exists(src):
            found.append(src)
        else:
            raise DQCError(f"{src}: no such file or folder")
    if not found:
        raise DQCError(f"{', '.join(srcs)}: no pictures there")
    return found


def plan(srcs: tuple[str, ...], codecs: str | None, metrics: str | None, report_dir: str | None = None) -> Plan:
    """The images, and the codecs and measures that can run here (a missing optional one is a note)."""
    notes = []
    names = [c for c in (codecs.split(",") if codecs else DEFAULT_CODECS) if c.strip()]
    chosen = []
    for name in names:
        codec = parse_codec(name)
        reason = missing_reason(codec)
        if reason is None:
            chosen.append(codec.name)
        elif codecs:
            raise DQCError(f"--codecs {codec.name}: {reason}")
        else:
            notes.append(f"{codec.name} skipped: {reason}")
    wanted = [m.strip().replace("-", "_") for m in metrics.split(",")] if metrics else [*ALWAYS, *OPTIONAL]
    known = (*ALWAYS, *OPTIONAL)
    measures = []
    for m in wanted:
        if m not in known:
            raise DQCError(f"--metrics: unknown measure {m!r}; known: {', '.join(known)}")
        reason = metric_missing(m)
        if reason is None:
            measures.append(m)
        elif metrics or m in ALWAYS:
            raise DQCError(f"--metrics {m}: {reason}")
        else:
            notes.append(f"{m} skipped: {reason}")
    return Plan(list_images(srcs, report_dir), chosen, measures, notes)


def parse_rates(text: str | None) -> tuple[float, float] | None:
    if not text:
        return None
    try:
        lo, hi = (float(v) for v in text.split("-"))
    except ValueError:
        raise DQCError(f"--rates {text}: give a range of bpp such as 0.05-0.8") from None
    if not 0 < lo < hi:
        raise DQCError(f"--rates {text}: give two rates, the lower first, both above 0")
    return lo, hi


class Progress:
    """A tqdm bar of images done, with ETA, on a terminal; else a plain line every so often."""

    def __init__(self, total: int, quiet: bool) -> None:
        self.total, self.done, self.failed, self.quiet = total, 0, 0, quiet
        self.started = self.shown_at = time.monotonic()
        self.bar = None
        if sys.stderr.isatty() and not quiet:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="image", desc="dqc compare", file=sys.stderr, dynamic_ncols=True)

    def echo(self, line: str) -> None:
        if self.bar is not None:
            self.bar.write(line, file=sys.stderr)
        else:
            click.echo(line, err=True)

    def update(self, result: ImageResult) -> None:
        self.done += 1
        if result.error:
            self.failed += 1
            self.echo(f"dqc: error: {result.error}")
        for row in result.rows:
            if row.get("error"):
                self.echo(f"dqc: error: {result.source}: {row['codec']}: {row['error']}")
        if self.bar is not None:
            self.bar.update(1)
        elif not self.quiet and time.monotonic() - self.shown_at >= PLAIN_PROGRESS_SECONDS:
            left = (time.monotonic() - self.started) / self.done * (self.total - self.done)
            click.echo(f"dqc: {self.done}/{self.total} images, about {left / 60:.0f} min left", err=True)
            self.shown_at = time.monotonic()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def as_dict(result: ImageResult, name: str) -> dict:
    return {"image": name, **dataclasses.asdict(result)}


def image_names(images: list[str]) -> list[str]:
    """How the report names each image: its file name, or its path where names repeat."""
    names = [Path(p).name for p in images]
    repeated = {n for n in names if names.count(n) > 1}
    return [p.lstrip("./") if n in repeated else n for p, n in zip(images, names, strict=True)]


def run(
    srcs: tuple[str, ...], report_dir: str, codecs: str | None, metrics: str | None, rates: str | None, quick: bool,
    jobs: int | None, scheduler: str | None, threads: int, quiet: bool,
) -> int:  # fmt: skip
    """The whole command; returns its exit code (1 if any image or codec failed)."""
    from dqcodec.cli import batch, interrupt
    from dqcodec.compare.report import plot_image, write_report

    p = plan(srcs, codecs, metrics, report_dir)
    root = Path(report_dir)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DQCError(f"{report_dir}: cannot make the folder ({e.strerror or e})") from None
    if not os.access(root, os.W_OK | os.X_OK):
        raise DQCError(f"{report_dir}: the folder cannot be written")
    points = QUICK_POINTS if quick else DEFAULT_POINTS
    bounds = parse_rates(rates)
    names = image_names(p.images)
    by_source = dict(zip(p.images, names, strict=True))
    job_list = [ImageJob(src, str(root.resolve()), tuple(p.codecs), tuple(p.metrics), points, bounds)
                for src in p.images]  # fmt: skip
    import dqcodec

    meta = {
        "codecs": p.codecs,
        "metrics": p.metrics,
        "notes": p.notes,
        "points": points,
        "rates": (
            f"rates {bounds[0]:g}-{bounds[1]:g} bpp"
            if bounds
            else "rates from each image's smallest file to JPEG's quality 75 size"
        ),  # fmt: skip
        "made_by": f"dqc {dqcodec.__version__}, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.machine()}",
    }
    if not quiet:
        for note in p.notes:
            click.echo(f"dqc: note: {note}", err=True)
    results: list[dict] = []
    progress = Progress(len(job_list), quiet)
    written_at = time.monotonic()

    def farewell() -> str:
        progress.close()
        write_report(root, meta, sorted(results, key=lambda r: r["image"]), finished=False)
        done = f"{len(results)} of {len(job_list)} images"
        return f"dqc: interrupted; the report in {report_dir} has {done}, rerun to finish"

    stop = threading.Event()
    if scheduler is None or scheduler == "local":
        from dqcodec.cli.main import bounded_count

        jobs, threads = bounded_count("-j", jobs), bounded_count("--threads", threads) or 1
    outcomes: Iterator[ImageResult] = batch.run_jobs(job_list, scheduler, jobs, threads, stop, task=run_image)
    interrupt.on_interrupt(farewell)
    for result in outcomes:
        record = as_dict(result, by_source[result.source])
        results.append(record)
        if not result.error:
            plot_image(root, record, p.codecs, p.metrics)
        progress.update(result)
        if time.monotonic() - written_at > REPORT_SECONDS:
            write_report(root, meta, sorted(results, key=lambda r: r["image"]), finished=False)
            written_at = time.monotonic()
    progress.close()
    summary = write_report(root, meta, sorted(results, key=lambda r: r["image"]), finished=True)
    failed = sum(bool(r["error"]) for r in results)
    codec_failures = sum(bool(row.get("error")) for r in results for row in r["rows"])
    if not quiet:
        click.echo(one_line_verdict(summary), err=True)
        click.echo(f"dqc: {len(results)} images, {failed} failed; report: {root / 'index.html'}", err=True)
    return 1 if failed or codec_failures else 0


def one_line_verdict(summary: dict) -> str:
    """dq's BD-rate against each codec on the last measure, e.g. 'SSIMULACRA2: dq vs avif +12.0%, ...'."""
    from dqcodec.compare.metrics import LABELS

    if not summary["bd_rate"]:
        return "dqc: no results"
    metric = summary["metrics"][-1] if "ssimulacra2" not in summary["metrics"] else "ssimulacra2"
    table = summary["bd_rate"][metric]
    test = next((c for c in table if c.startswith("dq")), None)
    if test is None:
        return "dqc: no dq results"
    cells = [f"{a} {v:+.1f}%" if v is not None else f"{a} no overlap" for a, v in table[test].items()]
    return f"dqc: BD-rate of {test} ({LABELS[metric]}) against " + ", ".join(cells)
