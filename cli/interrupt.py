"""Ctrl-C in the `dqc` command: one line and exit 130, wherever it comes.

Python's own handler raises KeyboardInterrupt at the next bytecode, which can be inside an import
(a traceback), inside a weakref callback (where it is swallowed and the work goes on), or while
the interpreter joins a pool's threads at exit. This handler raises nothing: it removes the temp
and lock files this process holds (`fileio.PENDING`), runs what the command registered (a batch
closes its manifest and says how many files it made), prints one line and exits 130.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Callable

# what to say (and do first) on a Ctrl-C; the command replaces it while it works
_farewell: Callable[[], str] = lambda: "dqc: interrupted"  # noqa: E731


def install() -> None:
    signal.signal(signal.SIGINT, _on_sigint)


def on_interrupt(farewell: Callable[[], str]) -> None:
    """Run `farewell` on a Ctrl-C and print the line it returns (instead of 'dqc: interrupted')."""
    global _farewell
    _farewell = farewell


def _on_sigint(_signum: int, _frame: object) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C does not cut this short
    from dqcodec.fileio import PENDING

    for path in list(PENDING):
        with contextlib.suppress(OSError):
            os.unlink(path)
    try:
        line = _farewell()
    except Exception:  # noqa: BLE001 - the exit must happen whatever the command's state
        line = "dqc: interrupted"
    with contextlib.suppress(OSError, ValueError):  # sys.stderr's descriptor: fd 2 may be lent to children
        sys.stderr.flush()
        os.write(sys.stderr.fileno(), (("\r\033[K" if sys.stderr.isatty() else "") + line + "\n").encode())
    os._exit(130)
