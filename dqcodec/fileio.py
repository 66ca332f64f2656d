"""Atomic output: write to a temporary file beside the target, then move it into place; a
claim on an output, so that two runs into one folder do not both make it; and the sweep of what
a killed run of dqc left beside its outputs.

dqc's own leftovers have names no other program makes: `.NAME.dqc-PID-RANDOM.part` (a temp
file) and `.NAME.dqc-lock` (a claim, whose content is CLAIM_MARK), beside the output NAME. The
sweep removes only those, beside outputs it is told of, and only where no live process holds
the claim: a user's own `.notes.lock` or `.movie.mkv.part` is never touched."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

_UMASK_LOCK = threading.Lock()
# where a file system has no hard links, no-clobber falls back to check-then-rename (racy)
_NO_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV, errno.EMLINK, errno.ENOSYS}
TEMP_MARK, LOCK_SUFFIX = ".dqc-", ".dqc-lock"
CLAIM_MARK = b"dqc claim\n"  # the content of a claim's lock file


def temp_prefix(name: str) -> str:
    """The start of the name of this process's temp files for the output `name`."""
    return f".{name}{TEMP_MARK}{os.getpid()}-"


def lock_name(name: str) -> str:
    return f".{name}{LOCK_SUFFIX}"


def _leftover_target(name: str) -> str | None:
    """The output a file named `name` was left for, if it is named as dqc names its temp and
    lock files; else None."""
    if name.startswith(".") and name.endswith(LOCK_SUFFIX):
        return name[1 : -len(LOCK_SUFFIX)] or None
    found = _TEMP_NAME.fullmatch(name)
    return found.group(1) if found else None


_TEMP_NAME = re.compile(r"\.(.+)\.dqc-[0-9]+-[A-Za-z0-9_]+\.part", re.DOTALL)


class NotAClaimError(OSError):
    """A file with a claim's name, not made by dqc, is where the claim would go."""


# temp and lock files this process holds now: what a Ctrl-C removes before it exits (cli.interrupt)
PENDING: set[str] = set()


def write_atomic(path: Path, write: Callable[[BinaryIO], None], overwrite: bool = True) -> None:
    """Call write(fileobj) on a temp file in path's folder and move it to path on success.

    On any failure (or a kill before the move) the target is untouched and the temp file is
    removed (or left under a dot-name that never looks like a finished output). With
    overwrite=False an existing path is never replaced, even one that appears while writing:
    the finished file is hard-linked into place, which fails atomically (FileExistsError) where
    the name exists. The file gets the permissions a plain open() would give it (mkstemp's are
    owner-only), or those of the file it replaces."""
    path = Path(path)
    mode = _replaced_mode(path)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path.name), suffix=".part", dir=path.parent or ".")
    PENDING.add(tmp)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            _move_no_clobber(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        PENDING.discard(tmp)


def _move_no_clobber(tmp: str, path: Path) -> None:
    try:
        os.link(tmp, path)  # FileExistsError where path exists, whoever made it when
    except OSError as e:
        if e.errno not in _NO_LINKS:
            raise
        if path.exists():
            raise FileExistsError(errno.EEXIST, "File exists", str(path)) from None
        os.replace(tmp, path)
    else:
        os.unlink(tmp)


@contextlib.contextmanager
def claim(path: Path) -> Iterator[bool]:
    """An exclusive claim on making `path`: yields True if this process holds it, False if another
    does. The claim is an advisory lock on `.NAME.dqc-lock` beside `path`, which the system
    releases when its holder dies however it dies; the file is removed when the claim ends. A
    file of that name that dqc did not make (its content is not CLAIM_MARK) is left as it is,
    and NotAClaimError raised."""
    try:
        import fcntl
    except ImportError:  # no POSIX locks: every process may make it
        yield True
        return
    lock = path.parent / lock_name(path.name)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        content = os.pread(fd, len(CLAIM_MARK) + 1, 0)
        if content not in (b"", CLAIM_MARK):
            raise NotAClaimError(errno.EEXIST, "a file that dqc did not make is where its lock would go", str(lock))
        if not content:
            os.pwrite(fd, CLAIM_MARK, 0)
        PENDING.add(str(lock))
        try:
            yield True
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(lock)  # before the unlock: a process that locks this name later sees the output
            PENDING.discard(str(lock))
    finally:
        os.close(fd)


def sweep_stale(outputs: Iterable[Path]) -> int:
    """Remove what killed dqc processes left beside `outputs`: temp files `.NAME.dqc-PID-RANDOM.part`
    and claims `.NAME.dqc-lock` (with dqc's content) of an output NAME among them, where no live
    process holds that output's claim. Nothing else is touched. Returns how many were removed."""
    wanted: dict[Path, set[str]] = {}
    for out in outputs:
        out = Path(out)
        wanted.setdefault(out.parent, set()).add(out.name)
    removed = 0
    for folder, names in wanted.items():
        try:
            entries = [e.name for e in os.scandir(folder) if e.name.startswith(".")]
        except OSError:
            continue
        for name in sorted(entries):
            target = _leftover_target(name)
            if target not in names:
                continue
            leftover = folder / name
            try:
                if name.endswith(LOCK_SUFFIX) and leftover.read_bytes() != CLAIM_MARK:
                    continue  # a claim being made this instant, or not dqc's
                with claim(folder / target) as free:
                    if free and name.endswith(".part"):
                        leftover.unlink(missing_ok=True)
                        removed += 1
                    elif free:
                        removed += 1  # the lock file itself: the claim removes it
            except OSError:
                continue  # not ours after all (NotAClaimError), or gone meanwhile
    return removed


def _replaced_mode(path: Path) -> int:
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        with _UMASK_LOCK:  # os.umask can only be read by setting it
            umask = os.umask(0o022)
            os.umask(umask)
        return 0o666 & ~umask
