"""The output directory of a command: checked before any work, created when writing starts, written by one process.

Every command that writes a directory (audit, consensus, benchmark) claims it first with
:func:`claim_output_dir`, before reading or training anything, so a bad ``--out`` fails at once;
then writes inside ``with claimed.open() as path``. Under torchrun only the main process
creates and writes it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .distributed import current as current_world
from .fileio import check_output_dir, output_directory, refuse_earlier_output, remove_stale_temporaries


@dataclass(frozen=True)
class OutputDir:
    """A claimed output directory.

    Attributes:
        path: the directory (it may not exist yet).
        option: the command-line option that names it, for messages.
        outputs: the file names the command writes there.
        writes: whether this process writes (False on torchrun's other ranks).
    """

    path: Path
    option: str
    outputs: tuple[str, ...]
    writes: bool

    @contextmanager
    def open(self) -> Iterator[Path]:
        """Yields the directory, created if needed, with temporaries of an interrupted earlier write removed.

        A directory created here is removed again when the body fails and left it empty.
        On a process that does not write it only yields the path.
        """
        with output_directory(self.path, self.option, create=self.writes) as path:
            if self.writes:
                remove_stale_temporaries(path, self.outputs)
            yield path


def claim_output_dir(path: str | Path, outputs: tuple[str, ...], overwrite: bool, option: str = "--out") -> OutputDir:
    """Returns `path` claimed for writing `outputs`, without creating anything.

    Raises UserError naming `option` when `path` is a file or not writable, or already holds
    one of `outputs` and not `overwrite`.
    """
    path = check_output_dir(path, option)
    refuse_earlier_output(path, outputs, overwrite, option)
    return OutputDir(path, option, tuple(outputs), current_world().is_main)
