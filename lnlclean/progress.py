"""Progress and status lines on stderr (Rich), so stdout stays clean for data."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from .distributed import current as current_world


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
    def task(self, description: str, total: int) -> Iterator[Callable[..., None]]:
        """Yields `advance(n=1, **fields)` that moves a progress bar of `total` steps.

        Keyword fields (for example ``loss=0.41``) are shown beside the bar.
        """
        if self.quiet or total <= 0:
            yield lambda n=1, **fields: None
            return
        if not self.console.is_terminal:
            self.log(f"{description} ({total} steps)")
            yield lambda n=1, **fields: None
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
            task_id = bar.add_task(description, total=total, status="")

            def advance(n: int = 1, **fields) -> None:
                status = "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in fields.items())
                bar.update(task_id, advance=n, **({"status": status} if fields else {}))

            yield advance
