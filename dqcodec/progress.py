"""How far an encode or a decode has come, for whoever listens (the command line's bars and its
`-v` timings). The codec reports stages and steps; without a listener a report costs nothing."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

# stage name, steps done, steps in all (a stage starts with done == 0)
Listener = Callable[[str, int, int], None]
_listener: ContextVar[Listener | None] = ContextVar("dqc_progress", default=None)


def report(stage: str, done: int, total: int) -> None:
    listener = _listener.get()
    if listener is not None:
        listener(stage, done, total)


@contextmanager
def listening(listener: Listener) -> Iterator[None]:
    token = _listener.set(listener)
    try:
        yield
    finally:
        _listener.reset(token)


def current() -> Listener | None:
    """The listener of this context, to hand to worker threads (contextvars do not follow them)."""
    return _listener.get()
