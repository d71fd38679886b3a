"""Stopping on SIGINT (Ctrl-C) and SIGTERM without losing work.

Outside training both signals raise :class:`Stopped` at once (in the command-line tool; a
Python caller keeps its own handlers), so partial files are discarded by the atomic writers.
During training the engine asks for :func:`deferred_stop`: the first signal only records
itself, the loop finishes the current step, saves a checkpoint and raises
:class:`Interrupted`; a second signal stops at once.
Exit codes follow the shell convention 128 + signal number: 130 for SIGINT, 143 for SIGTERM.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Stopped(BaseException):
    """A stop signal (SIGINT or SIGTERM) that ended the run.

    A BaseException, like KeyboardInterrupt, so no ``except Exception`` swallows it; unlike
    KeyboardInterrupt, the command-line parser passes it through untouched.
    """

    def __init__(self, signum: int):
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum

    @property
    def exit_code(self) -> int:
        """Returns 128 + the signal number (130 for SIGINT, 143 for SIGTERM)."""
        return 128 + self.signum


class Interrupted(Stopped):
    """Training stopped by a signal after saving a checkpoint.

    Attributes:
        signum: the signal received.
        checkpoint: the checkpoint written on the way out, or None when the run keeps none.
        epoch, step: the epoch (1-based) and steps of it done when training stopped.
    """

    def __init__(self, signum: int, checkpoint: Path | None, epoch: int, step: int):
        super().__init__(signum)
        self.checkpoint, self.epoch, self.step = checkpoint, epoch, step


def _raise_stopped(signum, frame) -> None:
    raise Stopped(signum)


def _replace_handlers(handler) -> dict:
    """Sets `handler` for the stop signals that are not ignored (a background job ignores SIGINT).

    Returns the previous handlers.
    """
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS if signal.getsignal(sig) is not signal.SIG_IGN}


def install_stop_handlers() -> dict:
    """Makes SIGINT and SIGTERM raise :class:`Stopped` in the main thread.

    Returns the previous handlers (empty off the main thread).
    """
    return _replace_handlers(_raise_stopped)


def restore_handlers(previous: dict) -> None:
    """Puts back the handlers `install_stop_handlers` returned. Returns None."""
    for sig, handler in previous.items():
        signal.signal(sig, handler)


class StopRequest:
    """Holds the first stop signal received while deferred (None until one arrives)."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def handle(self, signum, frame) -> None:
        if self.signum is not None:  # a second signal: the user insists
            raise Stopped(signum)
        self.signum = signum


@contextmanager
def deferred_stop() -> Iterator[StopRequest]:
    """Yields a StopRequest that records SIGINT/SIGTERM instead of raising, until the block ends.

    Off the main thread (where Python cannot install handlers) the request never fires, and an
    ignored signal stays ignored. The previous handlers are restored on exit.
    """
    request = StopRequest()
    previous = _replace_handlers(request.handle)
    try:
        yield request
    finally:
        restore_handlers(previous)
