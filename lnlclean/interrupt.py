"""Stopping on SIGINT (Ctrl-C) and SIGTERM without losing work.

Outside training both signals raise at once (:class:`KeyboardInterrupt`, :class:`Terminated`),
so partial files are discarded by the atomic writers. During training the engine asks for
:func:`deferred_stop`: the first signal only records itself, the loop finishes the current
step, saves a checkpoint and raises :class:`Interrupted`; a second signal stops at once.
Exit codes follow the shell convention 128 + signal number: 130 for SIGINT, 143 for SIGTERM.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so the same clean-up runs."""


class Interrupted(Exception):
    """Training stopped by a signal after saving a checkpoint.

    Attributes:
        signum: the signal received.
        checkpoint: the checkpoint written on the way out, or None when the run keeps none.
        epoch, step: the epoch (1-based) and steps of it done when training stopped.
    """

    def __init__(self, signum: int, checkpoint: Path | None, epoch: int, step: int):
        super().__init__(f"stopped by {signal.Signals(signum).name} in epoch {epoch} after step {step}")
        self.signum, self.checkpoint, self.epoch, self.step = signum, checkpoint, epoch, step

    @property
    def exit_code(self) -> int:
        """Returns 128 + the signal number (130 for SIGINT, 143 for SIGTERM)."""
        return 128 + self.signum


def _raise_terminated(signum, frame) -> None:
    raise Terminated()


def install_sigterm() -> None:
    """Makes SIGTERM raise :class:`Terminated` in the main thread (like Ctrl-C does). Returns None."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_terminated)


class StopRequest:
    """Holds the first stop signal received while deferred (None until one arrives)."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def handle(self, signum, frame) -> None:
        if self.signum is not None:  # a second signal: the user insists
            raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()
        self.signum = signum


@contextmanager
def deferred_stop() -> Iterator[StopRequest]:
    """Yields a StopRequest that records SIGINT/SIGTERM instead of raising, until the block ends.

    Off the main thread (where Python cannot install handlers) the request never fires.
    The previous handlers are restored on exit.
    """
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return
    previous = {sig: signal.signal(sig, request.handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield request
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
