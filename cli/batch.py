"""`dqc batch`: every picture under SRC coded into the same tree under DST.

SRC and DST are folders or fsspec URLs (s3://, gs://, file://; not memory://, which is one
process's own). The files run on a local process pool, or as one task each on a Dask cluster
(`--scheduler`). Each task is pure:
it reads its source, writes its output whole (a temp file renamed into place on a local disk, a
single PUT on an object store) and returns a manifest row; the only state a worker keeps is the
model, loaded once per process (dqcodec.loading.load_model is cached). The run's rows go to
DST/dqc-manifest/ in JSON Lines parts; a rerun skips the outputs DST already has.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import click
from dqcodec.cli.files import (
    EncodeSettings,
    decode_bytes,
    encode_bytes,
    outcome,
)

from dqcodec.errors import DQCError
from dqcodec.fileio import claim, sweep_stale, write_atomic

MANIFEST_DIR = "dqc-manifest"
PART_ROWS, PART_SECONDS = 1000, 30.0  # a manifest part is written at most this many rows or seconds apart
PLAIN_PROGRESS_SECONDS = 10.0  # without a terminal: a progress line this often


@dataclass(frozen=True)
class Job:
    source: str  # a path or URL
    output: str
    decode: bool
    image_format: str  # Pillow's name, for --decode
    settings: EncodeSettings
    overwrite: bool
    allow_large: bool


@dataclass
class Row:
    """What happened to one input: a line of the manifest."""

    source: str
    output: str
    status: str = "ok"  # ok, skip (DST has it), fail
    bytes: int | None = None  # of the output
    bpp: float | None = None  # of the .dqc file
    seconds: float = 0.0
    worker: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    error: str | None = None
    notes: list[str] = field(default_factory=list)


def url_to_fs(url: str) -> tuple:
    import fsspec

    return fsspec.core.url_to_fs(url)


def is_local(fs: object) -> bool:
    from fsspec.implementations.local import LocalFileSystem

    return isinstance(fs, LocalFileSystem)


def code_one(job: Job) -> Row:
    """One file, on any worker: read, code, write, and say how it went. Bad input is a failed row,
    not an exception, so a cluster never retries it."""
    t0 = time.perf_counter()
    row = Row(job.source, job.output)
    code, message = outcome(lambda: _code(job, row))
    if code:
        row.status, row.error = "fail", message if message.startswith(job.source) else f"{job.source}: {message}"
    row.seconds = round(time.perf_counter() - t0, 3)
    return row


def _code(job: Job, row: Row) -> None:
    fs, path = url_to_fs(job.output)
    if not job.overwrite and fs.exists(path):
        row.status = "skip"
        return
    if not is_local(fs):  # an object store: one PUT of the whole file, nothing to claim
        _code_and_put(job, row, fs, path)
        return
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with claim(Path(path)) as mine:
        if not mine or (not job.overwrite and os.path.exists(path)):
            row.status = "skip"  # another run is making it, or has made it
            return
        _code_and_put(job, row, fs, path)


def _code_and_put(job: Job, row: Row, fs: object, path: str) -> None:
    src_fs, src_path = url_to_fs(job.source)
    data = src_fs.cat_file(src_path)
    if job.decode:
        result, (w, h) = decode_bytes(job.source, data, job.image_format, job.settings.model, 1, "cpu", job.allow_large)
        row.bpp = 8 * len(data) / (w * h)
    else:
        result, (w, h), row.notes = encode_bytes(job.source, data, job.settings, 1, "cpu", job.allow_large)
        row.bpp = 8 * len(result) / (w * h)
    row.bytes = len(result)
    if is_local(fs):
        try:
            write_atomic(Path(path), lambda f: f.write(result), overwrite=job.overwrite)
        except FileExistsError:
            row.status = "skip"  # another run wrote it meanwhile
    else:
        fs.pipe_file(path, result)  # type: ignore[attr-defined]


def code_one_in_pool(job: Job) -> Row:
    """code_one in a local pool's worker, where SIGTERM (the batch ended) unwinds the job."""
    from dqcodec.cli.workers import run_job

    return run_job(lambda: code_one(job))


def list_jobs(
    src: str, dst: str, decode: bool, image_suffix: str, image_format: str, settings: EncodeSettings,
    overwrite: bool, allow_large: bool, suffixes: set[str],
) -> tuple[list[Job], list[Row]]:  # fmt: skip
    """The jobs for every input under src, and the rows of inputs settled without one: failed
    where two would share an output, skipped where DST already has it (one listing of DST, not
    a task each)."""
    src_fs, src_root = url_to_fs(src)
    dst_fs, dst_root = url_to_fs(dst)
    if not src_fs.isdir(src_root):
        raise DQCError(f"{src}: there is no folder there")
    new_suffix = image_suffix if decode else ".dqc"
    pairs = []
    for path in sorted(src_fs.find(src_root)):
        rel = path[len(src_root.rstrip("/")) :].lstrip("/")
        stem, dot, suffix = rel.rpartition(".")
        if not dot or f".{suffix.lower()}" not in suffixes or rel.split("/")[0] == MANIFEST_DIR:
            continue
        out = f"{dst_root.rstrip('/')}/{stem}{new_suffix}"
        pairs.append((_url(src_fs, path), _url(dst_fs, out)))
    shared = {out for out, n in Counter(out for _, out in pairs).items() if n > 1}  # photo.png and photo.jpg
    settled = [
        Row(s, out, status="fail", error=f"{s}: another file under {src} also becomes {out}; rename one", worker="")
        for s, out in pairs
        if out in shared
    ]
    existing = set() if overwrite or not dst_fs.isdir(dst_root) else {_url(dst_fs, p) for p in dst_fs.find(dst_root)}
    settled += [Row(s, out, status="skip", worker="") for s, out in pairs if out in existing and out not in shared]
    jobs = [
        Job(s, out, decode, image_format, settings, overwrite, allow_large)
        for s, out in pairs
        if out not in shared and out not in existing
    ]
    return jobs, settled


def _url(fs: object, path: str) -> str:
    return path if is_local(fs) else fs.unstrip_protocol(path)  # type: ignore[attr-defined]


class Manifest:
    """The run's rows, written to DST/dqc-manifest/<run>-<part>.jsonl a part at a time (an object
    store cannot append), each part whole, so a killed run loses at most its last part."""

    def __init__(self, dst: str) -> None:
        self.fs, root = url_to_fs(dst)
        self.folder = f"{root.rstrip('/')}/{MANIFEST_DIR}"
        self.run = time.strftime("%Y%m%dT%H%M%S") + f"-{os.getpid()}"
        self.rows: list[Row] = []
        self.part, self.written_at = 0, time.monotonic()

    def add(self, row: Row) -> None:
        self.rows.append(row)
        if len(self.rows) >= PART_ROWS or time.monotonic() - self.written_at > PART_SECONDS:
            self.flush()

    def flush(self) -> None:
        if not self.rows:
            return
        text = "".join(json.dumps(row.__dict__) + "\n" for row in self.rows).encode()
        path = f"{self.folder}/{self.run}-{self.part:06d}.jsonl"
        if is_local(self.fs):
            os.makedirs(self.folder, exist_ok=True)
            write_atomic(Path(path), lambda f: f.write(text))
        else:
            self.fs.pipe_file(path, text)
        self.rows, self.part, self.written_at = [], self.part + 1, time.monotonic()


def read_manifest(dst: str) -> list[dict]:
    """Every row of every run under DST, oldest first."""
    fs, root = url_to_fs(dst)
    folder = f"{root.rstrip('/')}/{MANIFEST_DIR}"
    if not fs.isdir(folder):
        raise DQCError(f"{dst}: no {MANIFEST_DIR}/ there (not the DST of a dqc batch)")
    rows = []
    for part in sorted(p for p in fs.ls(folder, detail=False) if p.endswith(".jsonl")):
        for line in fs.cat_file(part).decode().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut by a crash
    return rows


def report(dst: str) -> str:
    """A summary of DST's manifest: each input's latest row that coded it or failed (a skip only
    says an earlier run made it)."""
    latest: dict[str, dict] = {}
    for r in read_manifest(dst):
        if r["status"] != "skip" or r["source"] not in latest:
            latest[r["source"]] = r
    rows = list(latest.values())
    counts = Counter(r["status"] for r in rows)
    made = [r for r in rows if r["status"] == "ok"]
    lines = [
        f"{dst}: {len(rows)} inputs: {counts['ok']} coded, {counts['fail']} failed, {counts['skip']} found done "
        "(made before the manifest)",
    ]
    if made:
        total = sum(r["bytes"] or 0 for r in made)
        seconds = sum(r["seconds"] for r in made)
        bpps = [r["bpp"] for r in made if r["bpp"] is not None]
        workers = len({r["worker"] for r in made})
        lines.append(
            f"coded: {total} bytes, mean {sum(bpps) / max(1, len(bpps)):.4f} bpp, {seconds:.1f} worker-seconds "
            f"({seconds / len(made):.2f} s a file) on {workers} worker process(es)"
        )
    failed = [r for r in rows if r["status"] == "fail"]
    lines += [f"failed: {r['error']}" for r in failed[:20]]
    if len(failed) > 20:
        lines.append(f"... and {len(failed) - 20} more failed (see {MANIFEST_DIR}/)")
    return "\n".join(lines)


class Progress:
    """A bar with counts and an ETA on a terminal; a plain line every PLAIN_PROGRESS_SECONDS otherwise."""

    def __init__(self, total: int) -> None:
        self.total, self.done, self.start = total, 0, time.monotonic()
        self.counts = Counter({"ok": 0, "skip": 0, "fail": 0})
        self.tty, self.shown_at = sys.stderr.isatty(), 0.0

    def update(self, row: Row) -> None:
        self.done += 1
        self.counts[row.status] += 1
        for note in row.notes:
            self._echo(f"dqc: note: {row.source}: {note}")
        if row.status == "fail":
            self._echo(f"dqc: error: {row.error}")
        now = time.monotonic()
        if self.tty:
            click.echo("\r" + self.line(now), err=True, nl=False)
        elif now - self.shown_at >= PLAIN_PROGRESS_SECONDS or self.done == self.total:
            click.echo(self.line(now), err=True)
            self.shown_at = now

    def line(self, now: float) -> str:
        elapsed = now - self.start
        eta = elapsed / self.done * (self.total - self.done) if self.done else 0.0
        bar = "#" * (30 * self.done // max(1, self.total))
        c = self.counts
        return (
            f"[{bar:<30}] {self.done}/{self.total} ok {c['ok']} skipped {c['skip']} failed {c['fail']} "
            f"{elapsed:.0f} s, ETA {eta:.0f} s"
        )

    def _echo(self, text: str) -> None:
        click.echo(("\r\033[K" if self.tty else "") + text, err=True)

    def close(self) -> None:
        if self.tty:
            click.echo("", err=True)


def run_pool(jobs: list[Job], workers: int) -> Iterator[Row]:
    """The jobs on a local pool of processes that die with this one (workers.py)."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    from dqcodec.cli.workers import init_worker

    # multiprocessing's resource tracker outlives a killed batch and would print a Python warning
    sys.warnoptions.append("ignore:resource_tracker:UserWarning")
    pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=init_worker,
                               initargs=(os.getpid(),))  # fmt: skip
    try:
        futures = [pool.submit(code_one_in_pool, job) for job in jobs]
        for future in as_completed(futures):
            yield future.result()
    except BrokenProcessPool:
        raise DQCError("a worker process died (out of memory?); finished files are kept, rerun to resume") from None
    pool.shutdown()


def run_dask(jobs: list[Job], scheduler: str, workers: int | None, threads: int) -> Iterator[Row]:
    """The jobs as tasks on a Dask cluster: the one at `scheduler`, or 'local', a LocalCluster of
    `workers` processes with `threads` threads each. A task whose worker dies is run again
    elsewhere by the scheduler; a bad input is a failed row, never retried."""
    try:
        from distributed import Client, LocalCluster, as_completed
    except ImportError:
        raise DQCError("--scheduler needs Dask: pip install 'dqcodec[dask]'") from None
    import logging

    cluster = None
    if scheduler == "local":
        import dask

        # Dask's nannies set MALLOC_TRIM_THRESHOLD_, which turns off glibc's adaptive mmap
        # threshold: every large tensor is then mmapped afresh and coding takes 1.9x as long
        environ = dask.config.get("distributed.nanny.pre-spawn-environ", {})
        environ = {k: v for k, v in environ.items() if k != "MALLOC_TRIM_THRESHOLD_"}
        with dask.config.set({"distributed.nanny.pre-spawn-environ": environ}):
            cluster = LocalCluster(
                n_workers=workers or os.cpu_count() or 1, threads_per_worker=threads, processes=True,
                dashboard_address=None, silence_logs=logging.ERROR,
            )  # fmt: skip
        address = cluster.scheduler_address
    else:
        address = scheduler
    try:
        client = Client(address, timeout="20s")
    except OSError as e:
        raise DQCError(f"--scheduler {scheduler}: cannot reach it ({e})") from None
    try:
        futures = client.map(code_one, jobs, pure=False, key=[f"dqc-{i}-{job.source}" for i, job in enumerate(jobs)])
        for future in as_completed(futures):
            yield future.result()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def run_batch(jobs: list[Job], settled: list[Row], dst: str, rows: Iterator[Row]) -> int:
    """Report and record every row (those `list_jobs` settled first); returns the number of failed inputs."""
    progress, manifest = Progress(len(jobs)), Manifest(dst)
    for row in settled:
        progress.counts[row.status] += 1
        manifest.add(row)
        if row.status == "fail":
            click.echo(f"dqc: error: {row.error}", err=True)
    if progress.counts["skip"]:
        click.echo(
            f"dqc: {progress.counts['skip']} files are done already (their outputs exist); skipping them", err=True
        )
    try:
        for row in rows:
            manifest.add(row)
            progress.update(row)
    except KeyboardInterrupt:
        manifest.flush()
        # not waiting for the jobs: local workers see this process end and stop, removing their
        # temp files; a rerun resumes
        click.echo(f"\ndqc: interrupted; {progress.counts['ok']} files made, rerun to resume", err=True)
        sys.stderr.flush()
        os._exit(130)
    finally:
        manifest.flush()
    progress.close()
    fs, root = url_to_fs(dst)
    if is_local(fs) and os.path.isdir(root):
        sweep_stale(Path(root))  # a killed worker's temp and lock files
    return progress.counts["fail"]
