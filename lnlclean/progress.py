"""Progress and status lines on stderr (Rich), so stdout stays clean for data.

On a terminal a task is a progress bar. Elsewhere (a CI log, a file) it is plain lines: the
task's name when it starts, then a line with the progress, elapsed time and ETA at most every
:data:`LINE_SECONDS` (for training: at the end of an epoch, when that much time has passed),
and one when it ends.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from .distributed import current as current_world
from .durations import format_duration

LINE_SECONDS = 30.0


def format_fields(fields: dict) -> str:
    """Returns ``key value`` pairs joined by two spaces, floats to 4 significant digits."""
    return "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in fields.items())


class Task:
    """The progress of one task of `total` steps: call it to advance, `milestone` to report figures.

    Subclasses show it; this base shows nothing (quiet runs).
    """

    def __call__(self, n: int = 1, **fields) -> None:
        """Moves the task `n` steps on; `fields` (e.g. ``loss=0.41``) are shown beside it. Returns None."""

    def milestone(self, **fields) -> None:
        """Reports `fields` at a natural point (the end of an epoch). Returns None."""


class BarTask(Task):
    """A Rich progress bar."""

    def __init__(self, bar: Progress, task_id):
        self.bar, self.task_id = bar, task_id

    def __call__(self, n: int = 1, **fields) -> None:
        self.bar.update(self.task_id, advance=n, **({"status": format_fields(fields)} if fields else {}))

    def milestone(self, **fields) -> None:
        self(0, **fields)


class LineTask(Task):
    """Plain progress lines for a stderr that is not a terminal.

    With `by_milestone`, lines come only from :meth:`milestone` (training: once per epoch at
    most every LINE_SECONDS); otherwise from the steps themselves, every LINE_SECONDS.
    """

    def __init__(self, reporter: Reporter, description: str, total: int, by_milestone: bool):
        self.reporter, self.description, self.total, self.by_milestone = reporter, description, total, by_milestone
        self.done = 0
        self.started = self.last_line = time.monotonic()

    def __call__(self, n: int = 1, **fields) -> None:
        self.done += n
        if not self.by_milestone and (self._due() or self.done >= self.total):
            self._line(fields)

    def milestone(self, **fields) -> None:
        if self._due() or self.done >= self.total:
            self._line(fields)

    def _due(self) -> bool:
        return time.monotonic() - self.last_line >= LINE_SECONDS

    def _line(self, fields: dict) -> None:
        now = time.monotonic()
        self.last_line = now
        elapsed = now - self.started
        left = self.total - self.done
        eta = elapsed / self.done * left if self.done else None
        timing = f"elapsed {format_duration(elapsed)}" + (f", ETA {format_duration(eta)}" if left else "")
        figures = format_fields(fields)
        self.reporter.log(f"{self.description}: {self.done}/{self.total}  {figures + '  ' if figures else ''}{timing}")


class Reporter:
    """Shows progress bars and one-line messages on stderr; silent when `quiet` and in every process but rank 0."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet or not current_world().is_main
        self.console = Console(stderr=True, highlight=False)

    def log(self, message: str) -> None:
        """Prints one status line on stderr unless quiet. Returns None."""
        if not self.quiet:
            self.console.print(message, soft_wrap=True, markup=False)

    @contextmanager
    def task(self, description: str, total: int, by_milestone: bool = False) -> Iterator[Task]:
        """Yields the :class:`Task` of `total` steps: a bar on a terminal, lines elsewhere, nothing when quiet.

        `by_milestone`: off a terminal, print lines only at milestones (see :class:`LineTask`).
        """
        if self.quiet or total <= 0:
            yield Task()
            return
        if not self.console.is_terminal:
            self.log(f"{description} ({total} steps)")
            yield LineTask(self, description, total, by_milestone)
            return
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[status]}"),
        )
        with Progress(*columns, console=self.console) as bar:
            yield BarTask(bar, bar.add_task(description, total=total, status=""))
