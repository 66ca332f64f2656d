"""Worker processes of `dqc batch` that die with their parent.

A batch killed with SIGKILL or SIGTERM (or interrupted) must not leave workers that go on
coding, or block for ever on a pipe nobody reads. Each worker learns of its parent's death
from the kernel (Linux: PR_SET_PDEATHSIG) or, elsewhere, from a thread that watches its
parent's pid; either way it gets SIGTERM. Inside a job, SIGTERM unwinds the job, so the
output's temp file is removed (fileio.write_atomic), and then the worker exits.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import TypeVar

PR_SET_PDEATHSIG = 1
WATCH_SECONDS = 0.5
EXIT_TERMINATED = 128 + signal.SIGTERM

T = TypeVar("T")
_in_job = False


class Terminated(BaseException):
    """SIGTERM inside a job: unwind it (removing temp files) and exit."""


def _on_sigterm(_signum: int, _frame: object) -> None:
    if _in_job:
        raise Terminated
    os._exit(EXIT_TERMINATED)


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(WATCH_SECONDS)
    os.kill(os.getpid(), signal.SIGTERM)


def init_worker(parent: int) -> None:
    """Initializer of a batch worker process; `parent` is the batch's pid. The worker started
    with SIGINT blocked (batch.run_pool): it ignores it before it unblocks it, so a Ctrl-C at any
    moment goes to the batch alone, which ends its workers."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    signal.signal(signal.SIGTERM, _on_sigterm)
    import torch

    torch.set_num_threads(1)
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # it died before the line above
        os._exit(EXIT_TERMINATED)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()


def run_job(fn: Callable[[], T]) -> T:
    """fn() in a worker: SIGTERM during it unwinds it and ends the process."""
    global _in_job
    _in_job = True
    try:
        return fn()
    except Terminated:
        os._exit(EXIT_TERMINATED)
    finally:
        _in_job = False
