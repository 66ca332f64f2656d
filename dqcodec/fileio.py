"""Atomic output: write to a temporary file beside the target, then move it into place; and a
claim on an output, so that two runs into one folder do not both make it."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

_UMASK_LOCK = threading.Lock()
# where a file system has no hard links, no-clobber falls back to check-then-rename (racy)
_NO_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV, errno.EMLINK, errno.ENOSYS}


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
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent or ".")
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
    does. The claim is an advisory lock on a dot-file beside `path`, which the system releases
    when its holder dies however it dies; the file is removed when the claim ends."""
    try:
        import fcntl
    except ImportError:  # no POSIX locks: every process may make it
        yield True
        return
    lock = path.parent / f".{path.name}.lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(lock)  # before the unlock: a process that locks this name later sees the output
    finally:
        os.close(fd)


def sweep_stale(folder: Path) -> int:
    """Remove the temp and lock files under `folder` that a killed writer left (its claim is
    free); a live writer's are kept. Returns how many were removed."""
    removed = 0
    for leftover in sorted(Path(folder).rglob(".*")):
        name = leftover.name
        if name.endswith(".lock"):
            target = name[1:-5]
        elif name.endswith(".part"):
            target = name[1:].rsplit(".", 2)[0]  # .NAME.<random>.part
        else:
            continue
        with claim(leftover.parent / target) as free:
            if free and leftover.exists() and name.endswith(".part"):
                leftover.unlink()
                removed += 1
            elif free:
                removed += 1  # the lock file itself: the claim removes it
    return removed


def _replaced_mode(path: Path) -> int:
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        with _UMASK_LOCK:  # os.umask can only be read by setting it
            umask = os.umask(0o022)
            os.umask(umask)
        return 0o666 & ~umask
