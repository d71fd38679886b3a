"""Read and validate the user's labels: a ``path,label`` CSV or an ImageFolder layout.

A :class:`Manifest` is the one description of a dataset that everything downstream uses:
sample ``i`` is row ``i`` of the manifest, its image is ``root / paths[i]`` and its given
label is ``class_names[labels[i]]``. Every problem a user can fix raises
:class:`~lnlclean.errors.UserError` naming the file and row.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from ..errors import UserError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
REQUIRED_COLUMNS = ("path", "label")


@dataclass
class Manifest:
    """Validated samples of one dataset.

    Attributes:
        root: the image folder; every path is relative to it.
        paths: relative POSIX path of each sample, in input order.
        labels: given label of each sample as an index into `class_names` (int64, shape N).
        class_names: the classes, sorted (numerically when every label is an integer).
        extra: the input's other columns, one row per sample, carried to the outputs.
        source: the labels CSV, or None for an ImageFolder layout.
    """

    root: Path
    paths: list[str]
    labels: np.ndarray
    class_names: list[str]
    extra: pd.DataFrame = field(default_factory=pd.DataFrame)
    source: Path | None = None

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def n_classes(self) -> int:
        """Returns the number of classes."""
        return len(self.class_names)

    def subset(self, keep: np.ndarray) -> "Manifest":
        """Returns a manifest with only the rows where boolean mask `keep` is true (class map unchanged)."""
        rows = np.flatnonzero(keep)
        return Manifest(
            root=self.root,
            paths=[self.paths[i] for i in rows],
            labels=self.labels[rows],
            class_names=self.class_names,
            extra=self.extra.iloc[rows].reset_index(drop=True),
            source=self.source,
        )


def read_manifest(images: str | os.PathLike, labels_csv: str | os.PathLike | None = None) -> Manifest:
    """Returns the validated manifest for image folder `images`.

    With `labels_csv`, rows come from its ``path`` and ``label`` columns (other columns are
    kept in ``extra``); without it, from the ImageFolder layout ``images/<class>/<file>``.
    Raises UserError for any problem the user can fix, naming the file and row.
    """
    root = Path(images)
    if not root.is_dir():
        raise UserError(f"{root}: image folder not found; pass the folder that holds your images")
    if labels_csv is None:
        return _from_image_folder(root)
    return _from_csv(root, Path(labels_csv))


def _from_image_folder(root: Path) -> Manifest:
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    paths, names = [], []
    for class_dir in class_dirs:
        for file in sorted(class_dir.rglob("*")):
            if file.is_file() and file.suffix.lower() in IMAGE_EXTENSIONS:
                paths.append(file.relative_to(root).as_posix())
                names.append(class_dir.name)
    if not paths:
        raise UserError(
            f"{root}: no images in <class>/<image> subfolders; pass a labels CSV or use the layout {root}/<class>/<image>"
        )
    frame = pd.DataFrame({"path": paths, "label": names})
    return _build(root, frame, source=None)


def _from_csv(root: Path, csv_path: Path) -> Manifest:
    frame = _read_csv(csv_path)
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        found = ", ".join(map(str, frame.columns)) or "none"
        raise UserError(f"{csv_path}: missing column(s) {', '.join(missing)} (found: {found}); the header must name path,label")
    if frame.empty:
        raise UserError(f"{csv_path}: no rows under the header; add one row per image")
    return _build(root, frame, source=csv_path)


def _read_csv(csv_path: Path) -> pd.DataFrame:
    if not csv_path.is_file():
        raise UserError(f"{csv_path}: labels CSV not found")
    try:
        frame = pd.read_csv(
            csv_path, dtype=str, keep_default_na=False, skipinitialspace=True, encoding="utf-8-sig",
            skip_blank_lines=False,
        )
    except pd.errors.EmptyDataError:
        raise UserError(f"{csv_path}: the file is empty; it needs a header path,label and one row per image")
    except UnicodeDecodeError:
        raise UserError(f"{csv_path}: not UTF-8 text; save it as UTF-8 CSV")
    except (pd.errors.ParserError, OSError) as err:
        raise UserError(f"{csv_path}: cannot be read as CSV ({str(err).splitlines()[0]})")
    frame.columns = [str(c).strip() for c in frame.columns]
    frame = frame.apply(lambda column: column.str.strip())
    # Blank lines are dropped but the index keeps each row's position, so messages cite the real line.
    return frame[(frame != "").any(axis=1)]


def _build(root: Path, frame: pd.DataFrame, source: Path | None) -> Manifest:
    where = source if source is not None else root
    lines = _line_numbers(frame, source)
    frame = frame.reset_index(drop=True)
    paths = [_checked_path(root, raw, where, line) for raw, line in zip(frame["path"], lines)]
    _reject_duplicates(paths, where, lines)
    for raw, line in zip(frame["label"], lines):
        if raw == "":
            raise UserError(f"{where}: row {line}: empty label; give every image a label")
    class_names = _sorted_classes(frame["label"].unique())
    if len(class_names) < 2:
        raise UserError(f"{where}: every label is {class_names[0]!r}; label noise needs at least two classes")
    index_of = {name: i for i, name in enumerate(class_names)}
    labels = frame["label"].map(index_of).to_numpy(dtype=np.int64)
    extra = frame.drop(columns=list(REQUIRED_COLUMNS)).reset_index(drop=True)
    return Manifest(root=root, paths=paths, labels=labels, class_names=class_names, extra=extra, source=source)


def _line_numbers(frame: pd.DataFrame, source: Path | None) -> list[int]:
    """Returns the number the user sees for each row: its line in the CSV (header = line 1), or its position."""
    if source is None:
        return list(range(1, len(frame) + 1))
    return [int(i) + 2 for i in frame.index]


def _checked_path(root: Path, raw: str, where: Path, line: int) -> str:
    if raw == "":
        raise UserError(f"{where}: row {line}: empty path")
    posix = PurePosixPath(raw.replace("\\", "/"))
    if posix.is_absolute() or ".." in posix.parts:
        raise UserError(f"{where}: row {line}: path {raw!r} leaves the image folder; give paths relative to {root}")
    full = root / posix
    if not _inside(full.resolve(), root.resolve()):
        raise UserError(f"{where}: row {line}: {raw!r} is a link pointing outside {root}")
    if not full.is_file():
        raise UserError(f"{where}: row {line}: image {full} not found")
    if not os.access(full, os.R_OK):
        raise UserError(f"{where}: row {line}: image {full} is not readable (check its permissions)")
    return posix.as_posix()


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _reject_duplicates(paths: list[str], where: Path, lines: list[int]) -> None:
    first_line: dict[str, int] = {}
    for path, line in zip(paths, lines):
        if path in first_line:
            raise UserError(f"{where}: row {line}: duplicate path {path!r} (also row {first_line[path]}); keep one row per image")
        first_line[path] = line


def _sorted_classes(names) -> list[str]:
    names = [str(n) for n in names]
    try:
        return sorted(names, key=int)
    except ValueError:
        return sorted(names)
