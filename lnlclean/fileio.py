"""Atomic file writes: a reader never sees a half-written output."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import UserError

TEMPORARY_SUFFIX = ".tmp"


def _temporary_prefix(name: str) -> str:
    """Returns how the temporary files of an atomic write of `name` start (they end in TEMPORARY_SUFFIX)."""
    return f".{name}."


@contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `target`; on success it replaces `target` atomically.

    Returns (yields) the temporary path to write to. If the body raises, the temporary
    file is removed and `target` is left as it was; an OSError about the temporary file is
    re-raised naming `target`.
    """
    target = Path(target)
    fd, tmp_name = tempfile.mkstemp(prefix=_temporary_prefix(target.name), suffix=TEMPORARY_SUFFIX, dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.chmod(0o666 & ~_umask())  # mkstemp makes the file private; the result should read like any file the user writes
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, target)
        _sync_directory(target.parent)
    except OSError as err:
        if err.filename is not None and Path(err.filename) == tmp:  # name the file the user asked for
            raise OSError(err.errno, err.strerror, str(target)) from err
        raise
    finally:
        if tmp.exists():
            tmp.unlink()


def _umask() -> int:
    """Returns the process's file-creation mask (reading it means setting it, so it is set back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _sync_directory(directory: Path) -> None:
    """Flushes a rename in `directory` to disk where the platform allows it."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def probe_writable(directory: Path) -> None:
    """Creates and removes a temporary file in `directory`. Returns None; raises OSError when it cannot be written.

    Unlike ``os.access`` this also holds for root and for read-only file systems.
    """
    with tempfile.TemporaryFile(dir=directory):
        pass


def remove_stale_temporaries(directory: Path, names: tuple[str, ...]) -> list[Path]:
    """Deletes temporary files that an interrupted atomic write of one of `names` left in `directory`.

    Returns the paths removed. (A process killed with SIGKILL cannot clean up after itself.)
    """
    removed = []
    for name in names:
        for leftover in directory.glob(f"{_temporary_prefix(name)}*{TEMPORARY_SUFFIX}"):
            leftover.unlink(missing_ok=True)
            removed.append(leftover)
    return removed


def write_json(target: str | os.PathLike, payload: Any) -> None:
    """Write `payload` as indented JSON to `target` atomically. Returns None."""
    with atomic_path(target) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, default=_json_default) + "\n")


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def check_output_dir(out_dir: str | os.PathLike, option: str = "--out") -> Path:
    """Checks, without creating anything, that `out_dir` is or can become a writable directory.

    Returns the directory as a Path. Raises UserError naming `option` otherwise.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"{option} {out_dir}: is a file, not a directory; choose another {option}")
    existing = out_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{option} {out_dir}: {existing} is not a writable directory; choose another {option}")
    return out_dir


def prepare_output_dir(out_dir: str | os.PathLike, option: str = "--out") -> Path:
    """Create `out_dir` if needed and check it is a writable directory.

    Returns the directory as a Path. Raises UserError naming `option` when it is a file
    or cannot be written.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"{option} {out_dir}: is a file, not a directory; choose another {option}")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"{option} {out_dir}: cannot create it ({err.strerror}); choose another {option}") from None
    try:
        probe_writable(out_dir)
    except OSError as err:
        raise UserError(f"{option} {out_dir}: cannot write there ({err.strerror}); choose another {option}") from None
    return out_dir


def refuse_earlier_output(out_dir: Path, names: tuple[str, ...], overwrite: bool, option: str = "--out") -> None:
    """Raises UserError naming `option` when `out_dir` already holds
    one of the files `names` and not `overwrite`. Returns None.
    """
    if overwrite:
        return
    for name in names:
        if (out_dir / name).exists():
            raise UserError(
                f"{option} {out_dir}: already holds {name} from an earlier run; "
                f"pass --overwrite to replace it, or choose another {option}"
            )


@contextmanager
def output_directory(out_dir: str | os.PathLike, option: str = "--out", create: bool = True) -> Iterator[Path]:
    """Yields `out_dir`, created if needed and checked writable (see `prepare_output_dir`).

    When the body raises, the directories created here are removed again if they are still
    empty, so a failed run leaves nothing behind. Raises UserError naming `option`. With
    `create` False (a process that writes nothing) it only yields the path.
    """
    out_dir = Path(out_dir)
    if not create:
        yield out_dir
        return
    created = []
    missing = out_dir
    while not missing.exists() and missing != missing.parent:
        created.append(missing)
        missing = missing.parent
    prepare_output_dir(out_dir, option)
    try:
        yield out_dir
    except BaseException:
        for directory in created:
            try:
                directory.rmdir()
            except OSError:  # not empty: keep what the run wrote (a checkpoint to resume from)
                break
        raise


def check_output_file(
    target: str | os.PathLike,
    option: str = "--out",
    overwrite: bool = False,
    inputs: list | None = None,
    example_name: str = "fixed.csv",
) -> Path:
    """Checks, without creating anything, that `target` can be written as a file.

    Returns the target as a Path. Raises UserError naming `option` when it is a directory,
    one of the `inputs` (never overwritten, even with `overwrite`), an existing file and
    `overwrite` is false, or in a directory that cannot be written.
    """
    target = Path(target)
    if target.is_dir():
        raise UserError(f"{option} {target}: is a directory; give a file name such as {target / example_name}")
    for source in inputs or []:
        if source is not None and target.exists() and Path(source).exists() and target.samefile(source):
            raise UserError(
                f"{option} {target}: is an input of this run; inputs are never modified, so choose another {option}"
            )
    if target.exists() and not overwrite:
        raise UserError(
            f"{option} {target}: already exists; pass --overwrite to replace it, or choose another {option}"
        )
    check_output_dir(target.parent, option)
    return target
