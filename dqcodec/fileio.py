"""Atomic output: write to a temporary file beside the target, then rename over it."""

from __future__ import annotations

import os
import stat
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

_UMASK_LOCK = threading.Lock()


def write_atomic(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Call write(fileobj) on a temp file in path's folder and rename it to path on success.

    On any failure (or a kill before the rename) the target is untouched and the temp file is
    removed (or left under a dot-name that never looks like a finished output). The file gets
    the permissions a plain open() would give it (mkstemp's are owner-only), or those of the
    file it replaces."""
    path = Path(path)
    mode = _replaced_mode(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent or ".")
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _replaced_mode(path: Path) -> int:
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        with _UMASK_LOCK:  # os.umask can only be read by setting it
            umask = os.umask(0o022)
            os.umask(umask)
        return 0o666 & ~umask
