"""How long training will take: the estimate every run prints, and the epochs a ``--time-budget`` buys.

Both come from timing the first steps (:class:`StepTimer`). The first :data:`UNTIMED_STEPS`
steps are left out (memory allocation, caches warming up); then steps are timed for about
:data:`TIMING_SECONDS` (a twentieth of a smaller budget), at most one epoch. A budget is
planned from the steps of the method's robust phase (timed on a scratch copy, see
:func:`lnlclean.engine.time_steps`), the dearest per step, plus :data:`EPOCH_OVERHEAD` for the
work at the end of each epoch, so the training fits in it; decoding the images before and the
final pass after are not counted.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace

from .durations import format_duration
from .errors import UserError

UNTIMED_STEPS = 2
TIMING_SECONDS = 3.0
EPOCH_OVERHEAD = 0.05  # end-of-epoch work and the checkpoint, as a share of the epoch's steps


def timing_seconds(time_budget: float | None) -> float:
    """Returns how long to time steps for: :data:`TIMING_SECONDS`, or a twentieth of a smaller `time_budget`."""
    return TIMING_SECONDS if time_budget is None else min(TIMING_SECONDS, time_budget / 20)


def epochs_within(config, seconds_per_epoch: float, spent: float, reporter) -> int:
    """Returns the epochs of `config.method` that fit in what is left of
    ``config.time_budget`` after `spent` seconds, at most `config.epochs`.

    Says the choice in one line. Raises UserError naming ``--time-budget`` when not even one
    epoch fits, or when the method cannot train the epochs that fit (for example a fixed
    warm-up as long).
    """
    per_epoch = seconds_per_epoch * (1 + EPOCH_OVERHEAD)
    left = config.time_budget - spent
    fitting = math.floor(left / per_epoch) if left > 0 else 0
    option = f"--time-budget {format_duration(config.time_budget)}"
    if fitting < 1:
        raise UserError(
            f"{option}: one epoch of {config.method} takes ≈ {format_duration(per_epoch)} here; "
            f"give at least {format_duration(spent + per_epoch)}, or train on fewer or smaller images"
        )
    epochs = min(fitting, config.epochs)
    try:
        replace(config, epochs=epochs).validate()
    except UserError as problem:
        raise UserError(
            f"{option} fits {epochs} epoch(s) of {config.method} (≈ {format_duration(per_epoch)} each): {problem}"
        ) from None
    capped = f" (all of --epochs {config.epochs}; more would fit)" if fitting > config.epochs else ""
    reporter.log(
        f"time budget {format_duration(config.time_budget)}: ≈ {format_duration(per_epoch)} per epoch, "
        f"training {epochs} epochs ≈ {format_duration(epochs * per_epoch)}{capped}"
    )
    return epochs


class StepTimer:
    """Times training steps after the first few, for about `seconds` or one epoch of `steps_per_epoch` steps."""

    def __init__(self, steps_per_epoch: int, seconds: float = TIMING_SECONDS):
        self.untimed = min(UNTIMED_STEPS, max(steps_per_epoch - 1, 1))
        self.steps_per_epoch, self.seconds = steps_per_epoch, seconds
        self.done, self.started = 0, None

    def step_done(self) -> bool:
        """Counts one finished step. Returns True once enough steps are timed."""
        self.done += 1
        if self.done == self.untimed:
            self.started = time.perf_counter()
            return False
        if self.started is None:
            return False
        return time.perf_counter() - self.started >= self.seconds or self.done - self.untimed >= self.steps_per_epoch

    def per_step(self) -> float:
        """Returns the mean seconds of the steps timed so far."""
        return (time.perf_counter() - self.started) / (self.done - self.untimed)


class EpochEstimate:
    """Prints, once, how long an epoch and the whole run will take, from the first steps of training."""

    def __init__(self, steps_per_epoch: int, epochs_left: int, reporter, quiet: bool = False):
        self.steps_per_epoch, self.epochs_left, self.reporter = steps_per_epoch, epochs_left, reporter
        self.timer = StepTimer(steps_per_epoch)
        self.finished = quiet or epochs_left < 1

    def step_done(self) -> None:
        """Counts one training step; prints the estimate when enough steps are timed. Returns None."""
        if not self.finished and self.timer.step_done():
            self.finished = True
            self.reporter.log(self.line(self.timer.per_step() * self.steps_per_epoch))

    def line(self, seconds_per_epoch: float) -> str:
        """Returns e.g. ``≈ 1.3 s per epoch, 100 epochs ≈ 2 min 10 s``."""
        return (
            f"≈ {format_duration(seconds_per_epoch)} per epoch, {self.epochs_left} epochs ≈ "
            f"{format_duration(seconds_per_epoch * self.epochs_left)}"
        )
