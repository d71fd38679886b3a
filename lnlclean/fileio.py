"""Atomic file writes: a reader never sees a half-written output."""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from .errors import UserError


@contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `target`; on success it replaces `target` atomically.

    Returns (yields) the temporary path to write to. If the body raises, the temporary
    file is removed and `target` is left as it was.
    """
    target = Path(target)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


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
        raise UserError(f"{option} {out_dir}: cannot create it ({err.strerror}); choose another {option}")
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise UserError(f"{option} {out_dir}: not writable; choose another {option}")
    return out_dir


def check_output_file(target: str | os.PathLike, option: str = "--out") -> Path:
    """Checks, without creating anything, that `target` can be written as a file.

    Returns the target as a Path. Raises UserError naming `option` otherwise.
    """
    target = Path(target)
    if target.is_dir():
        raise UserError(f"{option} {target}: is a directory; give a file name such as {target / 'fixed.csv'}")
    check_output_dir(target.parent, option)
    return target
