"""`dqc batch`: every picture under SRC coded into the same tree under DST.

SRC and DST are folders or fsspec URLs (s3://, gs://, file://; not memory://, which is one
process's own). The files run on a local process pool, or as one task each on a Dask cluster
(`--scheduler`). Each task is pure:
it reads its source, writes its output whole (a temp file renamed into place on a local disk, a
single PUT on an object store) and returns a manifest row; the only state a worker keeps is the
model, loaded once per process (dqcodec.models.loading.load_model is cached). The run's rows go to
DST/dqc-manifest/ as JSON Lines (`Manifest`); a rerun skips the outputs DST already has, and
removes what a killed run of dqc left beside them (`fileio.sweep_stale`: only dqc's own temp
and lock files, never a user's file that merely looks like one).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import click
from dqcodec.cli import interrupt
from dqcodec.cli.files import (
    EncodeSettings,
    decode_bytes,
    encode_bytes,
    outcome,
)

from dqcodec.errors import DQCError
from dqcodec.fileio import PENDING, claim, sweep_stale, write_atomic

T = TypeVar("T")
R = TypeVar("R")
MANIFEST_DIR = "dqc-manifest"  # of encode runs, under DST
DECODE_MANIFEST_DIR = ".dqc-manifest"  # of --decode runs: hidden, out of the decoded pictures' way
# an object store's manifest part is written at most this many rows or seconds apart
PART_ROWS, PART_SECONDS = 1000, 30.0
# a local manifest reserves the disk space of its rows before the run (so that a disk that fills
# up cannot lose them): this much per row beyond its paths, and at most this much ahead
ROW_RESERVE, MAX_RESERVE = 512, 64 * 2**20
DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
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
    needed: int | None = None  # bytes of the output that did not fit on a full disk
    kind: str = "encode"  # or "decode": what the output is (a .dqc file or a picture)
    settings: dict | None = None  # of an encode (EncodeSettings.summary), to tell a rerun with other ones


def count(n: int, noun: str) -> str:
    """'1 file', '2 files', '2 processes'."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}{'es' if noun.endswith('s') else 's'}"


def check_destination(dst: str) -> None:
    """A local DST must be a folder this process can write (made if missing): one error, before any job."""
    fs, root = url_to_fs(dst)
    if not is_local(fs):
        return
    try:
        os.makedirs(root, exist_ok=True)
    except OSError as e:
        raise DQCError(f"{dst}: cannot make the folder ({e.strerror or e})") from None
    if not os.path.isdir(root):
        raise DQCError(f"{dst}: not a folder")
    if not os.access(root, os.W_OK | os.X_OK):
        raise DQCError(f"{dst}: the folder cannot be written")


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
    row = Row(job.source, job.output, kind="decode" if job.decode else "encode",
              settings=None if job.decode else job.settings.summary())  # fmt: skip
    code, message = outcome(lambda: _code(job, row))
    if code:
        row.status, row.error = "fail", message if message.startswith(job.source) else f"{job.source}: {message}"
    row.seconds = round(time.perf_counter() - t0, 3)
    return row


def _code(job: Job, row: Row) -> None:
    try:
        _claim_and_code(job, row)
    except OSError as e:
        if e.errno not in DISK_FULL:
            raise
        row.needed = row.bytes or 0
        raise DQCError(f"{job.output}: the disk is full ({row.needed} bytes needed)") from None


def _claim_and_code(job: Job, row: Row) -> None:
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
        result, (w, h) = decode_bytes(job.source, data, job.image_format, job.settings.model, 1, "cpu", job.allow_large,
                                      job.settings.output_quality)  # fmt: skip
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


def in_pool_worker(task: Callable[[T], R], job: T) -> R:
    """task(job) in a local pool's worker, where SIGTERM (the run ended) unwinds the job."""
    from dqcodec.cli.workers import run_job

    return run_job(lambda: task(job))


def list_jobs(
    src: str, dst: str, decode: bool, image_suffix: str, image_format: str, settings: EncodeSettings,
    overwrite: bool, allow_large: bool, suffixes: set[str], update: bool = False,
) -> tuple[list[Job], list[Row], list[str]]:  # fmt: skip
    """The jobs for every input under src, the rows of inputs settled without one (failed where
    two would share an output, skipped where DST already has it: one listing of DST, not a task
    each), and the outputs DST has that its manifest says were made with other settings than
    these (redone with `update`)."""
    src_fs, src_root = url_to_fs(src)
    dst_fs, dst_root = url_to_fs(dst)
    if not src_fs.isdir(src_root):
        raise DQCError(f"{src}: there is no folder there")
    kind = "decode" if decode else "encode"
    new_suffix = f".dqc{image_suffix}" if decode else ".dqc"  # photo.dqc -> photo.dqc.png, never photo.png
    pairs = []
    for path in sorted(src_fs.find(src_root)):
        rel = path[len(src_root.rstrip("/")) :].lstrip("/")
        stem, dot, suffix = rel.rpartition(".")
        if not dot or f".{suffix.lower()}" not in suffixes or rel.split("/")[0] in (MANIFEST_DIR, DECODE_MANIFEST_DIR):
            continue
        out = f"{dst_root.rstrip('/')}/{stem}{new_suffix}"
        pairs.append((_url(src_fs, path), _url(dst_fs, out)))
    shared = {out for out, n in Counter(out for _, out in pairs).items() if n > 1}  # photo.png and photo.jpg
    settled = [
        Row(
            s,
            out,
            status="fail",
            error=f"{s}: another file under {src} also becomes {out}; rename one",
            worker="",
            kind=kind,
        )
        for s, out in pairs
        if out in shared
    ]
    existing = set() if overwrite or not dst_fs.isdir(dst_root) else {_url(dst_fs, p) for p in dst_fs.find(dst_root)}
    changed = [] if decode else changed_outputs(dst, existing, settings.summary())
    redo = set(changed) if update else set()
    settled += [
        Row(s, out, status="skip", worker="", kind=kind)
        for s, out in pairs
        if out in existing and out not in shared and out not in redo
    ]
    jobs = [
        Job(s, out, decode, image_format, settings, overwrite or out in redo, allow_large)
        for s, out in pairs
        if out not in shared and (out not in existing or out in redo)
    ]
    return jobs, settled, changed


def changed_outputs(dst: str, existing: set[str], settings: dict) -> list[str]:
    """The outputs among `existing` whose latest manifest row says they were made with other settings."""
    if not existing:
        return []
    try:
        rows = read_manifest(dst)
    except DQCError:
        return []
    made = {r["output"]: r.get("settings") for r in rows if r.get("status") == "ok"}
    return sorted(out for out in existing if made.get(out) is not None and made[out] != settings)


def _url(fs: object, path: str) -> str:
    return path if is_local(fs) else fs.unstrip_protocol(path)  # type: ignore[attr-defined]


class Manifest:
    """The run's rows in DST/dqc-manifest/ (DST/.dqc-manifest/ for a --decode run, whose DST holds
    pictures). On a local disk, one file <run>.jsonl, a row appended
    (and flushed) as each input settles, in disk space reserved before the run for every row it
    will write, so that a disk that fills up meanwhile loses none; on an object store, which
    cannot append, parts <run>-<part>.jsonl written whole, so a killed run loses at most its last
    part."""

    def __init__(self, dst: str, expected_rows: int = 0, decode: bool = False) -> None:
        self.fs, root = url_to_fs(dst)
        self.folder = f"{root.rstrip('/')}/{DECODE_MANIFEST_DIR if decode else MANIFEST_DIR}"
        self.run = time.strftime("%Y%m%dT%H%M%S") + f"-{os.getpid()}"
        self.rows: list[Row] = []
        self.part, self.written_at = 0, time.monotonic()
        self.local = is_local(self.fs)
        self.fd: int | None = None
        self.size = self.reserved = 0
        self.expected_rows = expected_rows
        self.lost = 0  # rows a full disk kept out of the file

    def add(self, row: Row) -> None:
        self.rows.append(row)
        if self.local:
            self.flush()
        elif len(self.rows) >= PART_ROWS or time.monotonic() - self.written_at > PART_SECONDS:
            self.flush()

    def open(self) -> None:
        """Create the local file and reserve its rows' space (a no-op for an object store)."""
        if self.local and self.fd is None:
            os.makedirs(self.folder, exist_ok=True)
            self.fd = os.open(f"{self.folder}/{self.run}.jsonl", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
            self._reserve(self.expected_rows * (ROW_RESERVE + 2 * len(self.folder)))

    def flush(self) -> None:
        if not self.rows:
            return
        text = "".join(json.dumps(row.__dict__) + "\n" for row in self.rows).encode()
        if not self.local:
            self.fs.pipe_file(f"{self.folder}/{self.run}-{self.part:06d}.jsonl", text)
            self.rows, self.part, self.written_at = [], self.part + 1, time.monotonic()
            return
        self.open()
        assert self.fd is not None
        if self.size + len(text) > self.reserved:
            self._reserve(max(len(text), 64 * ROW_RESERVE))
        try:
            os.write(self.fd, text)
            os.fsync(self.fd)
        except OSError as e:
            if e.errno not in DISK_FULL:
                raise
            self.lost = len(self.rows)  # kept, and tried again with the next row
            return
        self.size += len(text)
        self.rows, self.lost = [], 0

    def _reserve(self, nbytes: int) -> None:
        """Allocate disk blocks past the file's end without changing its size (Linux fallocate
        FALLOC_FL_KEEP_SIZE); where the system cannot, rows are still flushed one by one."""
        if self.fd is None or nbytes <= 0 or not sys.platform.startswith("linux"):
            return
        nbytes = min(nbytes, MAX_RESERVE)
        libc = ctypes.CDLL(None, use_errno=True)
        libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong]
        if libc.fallocate(self.fd, 1, self.size, nbytes) == 0:  # 1: FALLOC_FL_KEEP_SIZE
            self.reserved = self.size + nbytes

    def close(self) -> None:
        self.flush()
        if self.fd is not None:
            with contextlib.suppress(OSError):  # give back the reserved space past the last row
                os.ftruncate(self.fd, self.size + 1)
                os.ftruncate(self.fd, self.size)
            os.close(self.fd)
            self.fd = None


def read_manifest(dst: str) -> list[dict]:
    """Every row of every run under DST (encode and --decode runs), oldest first."""
    fs, root = url_to_fs(dst)
    folders = [f"{root.rstrip('/')}/{name}" for name in (MANIFEST_DIR, DECODE_MANIFEST_DIR)]
    folders = [folder for folder in folders if fs.isdir(folder)]
    if not folders:
        raise DQCError(f"{dst}: no {MANIFEST_DIR}/ there (not the DST of a dqc batch)")
    parts = [p for folder in folders for p in fs.ls(folder, detail=False) if p.endswith(".jsonl")]
    rows = []
    for part in sorted(parts, key=lambda p: p.rsplit("/", 1)[-1]):  # run names start with their time
        for line in fs.cat_file(part).decode().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut by a crash
    return rows


def report(dst: str) -> str:
    """A summary of DST's manifest: each output's latest row that made it or failed (a skip only
    says an earlier run made it), encodes (.dqc files, bpp) apart from decodes (pictures)."""
    latest: dict[str, dict] = {}
    for r in read_manifest(dst):
        if r["status"] != "skip" or r["output"] not in latest:
            latest[r["output"]] = r
    rows = list(latest.values())
    counts = Counter(r["status"] for r in rows)
    lines = [
        f"{dst}: {count(len(rows), 'input')}: {counts['ok']} coded, {counts['fail']} failed, {counts['skip']} found "
        "done (made before the manifest)",
    ]
    for kind, noun in (("encode", ".dqc file"), ("decode", "picture")):
        made = [r for r in rows if r["status"] == "ok" and r.get("kind", "encode") == kind]
        if not made:
            continue
        total = sum(r["bytes"] or 0 for r in made)
        seconds = sum(r["seconds"] for r in made)
        workers = len({r["worker"] for r in made})
        rate = ""
        if kind == "encode":
            bpps = [r["bpp"] for r in made if r["bpp"] is not None]
            rate = f", mean {sum(bpps) / max(1, len(bpps)):.4f} bpp"
        lines.append(
            f"{kind}d: {count(len(made), noun)}, {total} bytes{rate}, {seconds:.1f} worker-seconds "
            f"({seconds / len(made):.2f} s a file) on {count(workers, 'worker process')}"
        )
    failed = [r for r in rows if r["status"] == "fail"]
    lines += [f"failed: {r['error']}" for r in failed[:20]]
    if len(failed) > 20:
        lines.append(f"... and {len(failed) - 20} more failed (see {MANIFEST_DIR}/)")
    return "\n".join(lines)


class Progress:
    """A tqdm bar (files done, ok/skipped/failed, ETA) on a terminal; without one, a plain line
    every PLAIN_PROGRESS_SECONDS. Notes and errors print above the bar. The tallies add up to
    the inputs: skipped and failed-before-start inputs count from the start."""

    def __init__(self, total: int, settled: list[Row], quiet: bool = False) -> None:
        self.total, self.start = total + len(settled), time.monotonic()
        self.counts = Counter({"ok": 0, "skip": 0, "fail": 0})
        for row in settled:
            self.counts[row.status] += 1
        self.done = len(settled)
        self.bytes_made = 0
        self.quiet = quiet
        self.tty, self.shown_at = sys.stderr.isatty(), time.monotonic()
        self.bar = None
        if self.tty and not quiet:
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, initial=self.done, unit="file", file=sys.stderr, dynamic_ncols=True,
                            desc="dqc batch", leave=True)  # fmt: skip
            self._postfix()

    def update(self, row: Row) -> None:
        self.done += 1
        self.counts[row.status] += 1
        self.bytes_made += (row.bytes or 0) if row.status == "ok" else 0
        if not self.quiet:
            for note in row.notes:
                self.echo(f"dqc: note: {row.source}: {note}")
        if row.status == "fail":
            self.echo(f"dqc: error: {row.error}")
        if self.bar is not None:
            self._postfix()
            self.bar.update(1)
        elif not self.quiet and time.monotonic() - self.shown_at >= PLAIN_PROGRESS_SECONDS and self.done < self.total:
            click.echo(f"dqc: {self.done}/{self.total} files, {self.tallies()}", err=True)
            self.shown_at = time.monotonic()

    def tallies(self) -> str:
        c = self.counts
        return f"ok {c['ok']}, skipped {c['skip']}, failed {c['fail']}"

    def _postfix(self) -> None:
        assert self.bar is not None
        self.bar.set_postfix_str(self.tallies(), refresh=False)

    def echo(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            click.echo(text, err=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if not self.quiet:
            elapsed = time.monotonic() - self.start
            click.echo(f"dqc: {count(self.total, 'file')}: {self.tallies()} ({elapsed:.0f} s)", err=True)


def run_jobs(
    jobs: list[T], scheduler: str | None, workers: int | None, threads: int, stop: threading.Event,
    task: Callable[[T], R] = code_one,  # type: ignore[assignment]
) -> Iterator[R]:  # fmt: skip
    """task(job) for each job on the Dask cluster at `scheduler` ('local': a LocalCluster) or, without
    one, on a pool of `workers` local processes (None: one per CPU, at most one per job)."""
    if scheduler:
        return run_dask(jobs, scheduler, workers, threads, stop, task)
    from dqcodec.cli.main import available_cpus

    return run_pool(jobs, max(1, min(len(jobs), workers or available_cpus())), stop, task)


def run_pool(
    jobs: list[T],
    workers: int,
    stop: threading.Event,
    task: Callable[[T], R] = code_one,  # type: ignore[assignment]
) -> Iterator[R]:
    """task(job) for each job on a local pool of processes that die with this one (workers.py), in
    the order they finish. Once `stop` is set, the jobs not started are cancelled: the results of
    those running still come. `task` is a module-level function (it is pickled)."""
    import multiprocessing as mp
    import signal
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    from dqcodec.cli.workers import init_worker

    # multiprocessing's resource tracker outlives a killed batch and would print a Python warning
    sys.warnoptions.append("ignore:resource_tracker:UserWarning")
    pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=init_worker,
                               initargs=(os.getpid(),))  # fmt: skip
    # The workers start (at the submits) with SIGINT blocked, which they inherit and keep until
    # they ignore it: a Ctrl-C while they import torch reaches only this process. Here it waits
    # until the submits are done.
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        futures = [pool.submit(in_pool_worker, task, job) for job in jobs]
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
    try:
        for future in as_completed(futures):
            if stop.is_set():
                for pending in futures:
                    pending.cancel()  # does nothing to a running one
            if not future.cancelled():
                yield future.result()
    except BrokenProcessPool:
        raise DQCError("a worker process died (out of memory?); finished files are kept, rerun to resume") from None
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def run_dask(
    jobs: list[T], scheduler: str, workers: int | None, threads: int, stop: threading.Event,
    task: Callable[[T], R] = code_one,  # type: ignore[assignment]
) -> Iterator[R]:  # fmt: skip
    """task(job) for each job (which has a `source`) as tasks on a Dask cluster: the one at
    `scheduler`, or 'local', a LocalCluster of `workers` processes with `threads` threads each. A
    task whose worker dies is run again elsewhere by the scheduler; a bad input is a failed
    result, never retried. Once `stop` is set, the tasks not finished are cancelled."""
    try:
        from distributed import Client, LocalCluster, as_completed
    except ImportError:
        raise DQCError("--scheduler needs Dask: pip install 'dqcodec[dask]'") from None
    import logging
    import tempfile

    # a row says what failed: distributed's own logs in this process (a worker's comm closing as a
    # Ctrl-C stops the cluster, with its traceback) would only clutter the user's terminal
    logging.getLogger("distributed").setLevel(logging.CRITICAL)
    cluster = None
    if scheduler == "local":
        import dask

        # Dask's nannies set MALLOC_TRIM_THRESHOLD_, which turns off glibc's adaptive mmap
        # threshold: every large tensor is then mmapped afresh and coding takes 1.9x as long
        environ = dask.config.get("distributed.nanny.pre-spawn-environ", {})
        environ = {k: v for k, v in environ.items() if k != "MALLOC_TRIM_THRESHOLD_"}
        # A Ctrl-C reaches the cluster's processes too (they are in the batch's process group) and
        # each prints a traceback as it stops: what they write goes to a log file instead.
        with tempfile.NamedTemporaryFile(prefix="dqc-cluster-", suffix=".log", delete=False) as log:
            log_path = log.name
            PENDING.add(log_path)  # removed on a Ctrl-C too
            with _stderr_of_children(log.fileno()), dask.config.set({"distributed.nanny.pre-spawn-environ": environ}):
                cluster = LocalCluster(
                    n_workers=workers or os.cpu_count() or 1, threads_per_worker=threads, processes=True,
                    dashboard_address=None, silence_logs=logging.CRITICAL,  # rows say what failed
                )  # fmt: skip
        address = cluster.scheduler_address
    else:
        address = scheduler
    try:
        client = Client(address, timeout="20s")
    except OSError as e:
        raise DQCError(f"--scheduler {scheduler}: cannot reach it ({e})") from None
    try:
        futures = client.map(task, jobs, pure=False, key=[f"dqc-{i}-{job.source}" for i, job in enumerate(jobs)])
        stopped = False
        for future in as_completed(futures):
            if stop.is_set() and not stopped:
                client.cancel([f for f in futures if not f.done()])
                stopped = True
            if future.status == "finished":
                yield future.result()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
            with contextlib.suppress(OSError):
                os.unlink(log_path)
            PENDING.discard(log_path)


@contextlib.contextmanager
def _stderr_of_children(fd: int) -> Iterator[None]:
    """Processes started meanwhile get `fd` as their standard error; this process's sys.stderr
    stays where it was."""
    sys.stderr.flush()
    saved = os.dup(2)
    own = sys.stderr
    sys.stderr = open(saved, "w", buffering=1, closefd=False)  # noqa: SIM115 - closed below
    os.dup2(fd, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        sys.stderr.close()
        sys.stderr = own
        os.close(saved)


def run_batch(
    jobs: list[Job], settled: list[Row], dst: str, rows: Iterator[Row], stop: threading.Event, quiet: bool = False,
    decode: bool = False,
) -> int:  # fmt: skip
    """Report and record every row (those `list_jobs` settled first); returns the number of failed
    inputs. A full disk stops the run (`stop`: the jobs not started are cancelled), said once
    with the bytes it needs."""
    manifest = Manifest(dst, len(jobs) + len(settled), decode=decode)
    manifest.open()
    skipped = sum(row.status == "skip" for row in settled)
    if skipped and not quiet:
        click.echo(f"dqc: {count(skipped, 'file')} done already (the outputs exist); skipping "
                   f"{'it' if skipped == 1 else 'them'}", err=True)  # fmt: skip
    progress = Progress(len(jobs), settled, quiet)
    for row in settled:
        manifest.add(row)
        if row.status == "fail":
            progress.echo(f"dqc: error: {row.error}")
    disk_full: Row | None = None

    def farewell() -> str:
        # not waiting for the jobs: local workers see this process end and stop, removing their
        # temp files; a rerun resumes
        manifest.close()
        return f"dqc: interrupted; {count(progress.counts['ok'], 'file')} made, rerun to resume"

    interrupt.on_interrupt(farewell)
    try:
        for row in rows:
            manifest.add(row)
            if row.needed is not None:
                disk_full = disk_full or row
                progress.done += 1
                progress.counts[row.status] += 1
                stop.set()
            else:
                progress.update(row)
    finally:
        manifest.close()
    progress.close()
    fs, root = url_to_fs(dst)
    if is_local(fs):  # what killed runs of dqc left beside these outputs
        sweep_stale(Path(url_to_fs(r.output)[1]) for r in [*settled, *(Row(j.source, j.output) for j in jobs)])
    if disk_full is not None:
        left = progress.total - progress.done
        mean = (progress.bytes_made / progress.counts["ok"]) if progress.counts["ok"] else disk_full.needed or 0
        click.echo(
            f"dqc: error: {dst}: the disk is full: {disk_full.output} needed {disk_full.needed} bytes, and the "
            f"{count(left, 'file')} not coded about {_size(mean * left)} more; {count(progress.counts['ok'], 'file')} "
            "made are kept, free some space and rerun to resume",
            err=True,
        )
        return progress.counts["fail"]
    if manifest.lost:
        click.echo(f"dqc: error: {dst}: the disk is full: the manifest's last {manifest.lost} rows are not written",
                   err=True)  # fmt: skip
    return progress.counts["fail"]


def _size(nbytes: float) -> str:
    return f"{nbytes / 2**20:.1f} MiB" if nbytes >= 2**20 else f"{nbytes / 1024:.0f} KiB"
