"""Read and validate the user's labels: a ``path,label`` CSV or an ImageFolder layout.

A :class:`Manifest` is the one description of a dataset that everything downstream uses:
sample ``i`` is row ``i`` of the manifest, its image is ``root / paths[i]`` and its given
label is ``class_names[labels[i]]``. Every problem a user can fix raises
:class:`~lnlclean.errors.UserError` naming the file and row.

Partial labels: a ``candidates`` column lists each image's candidate labels joined by ``|``
(``cat|dog``). With a ``label`` column too, the label must be one of the row's candidates (an
empty cell means just the label) and candidates must be classes that occur as labels. Without
a ``label`` column the classes are those the candidates name, and the first candidate of each
row stands in as its label wherever one label is needed (for methods that read candidate sets,
only the set matters).
"""

from __future__ import annotations

import codecs
import csv
import difflib
import errno
import io
import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from ..errors import UserError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
REQUIRED_COLUMNS = ("path", "label")
CANDIDATES_COLUMN = "candidates"
CANDIDATE_SEPARATOR = "|"
DELIMITERS = (",", ";", "\t")
RESERVED = (*REQUIRED_COLUMNS, CANDIDATES_COLUMN)
MAX_EXTRA_COLUMNS = (
    1_000  # other columns are carried to every output; a header with more is most likely a wrong separator
)
LINE_BREAK = re.compile(
    r"\r\n|\r|\n"
)  # where the CSV reader ends a line (not at \x1e, \x85 or \u2028, which str.splitlines() also splits)
NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


@dataclass
class Manifest:
    """Validated samples of one dataset.

    Attributes:
        root: the image folder; every path is relative to it.
        paths: POSIX path of each sample relative to `root` (absolute or with ``..`` only when
            read with `allow_outside_root`), in input order.
        labels: given label of each sample as an index into `class_names` (int64, shape N).
        class_names: the classes, sorted (numerically when every label is an integer).
        extra: the input's other columns, one row per sample, carried to the outputs.
        source: the labels CSV, or None for an ImageFolder layout.
        candidates: candidate-label sets, bool N×K, when the CSV has a ``candidates`` column.
        has_label_column: False when the CSV gives candidate sets only (`labels` then holds
            each row's first candidate).
    """

    root: Path
    paths: list[str]
    labels: np.ndarray
    class_names: list[str]
    extra: pd.DataFrame = field(default_factory=pd.DataFrame)
    source: Path | None = None
    candidates: np.ndarray | None = None
    has_label_column: bool = True

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def n_classes(self) -> int:
        """Returns the number of classes."""
        return len(self.class_names)

    def subset(self, keep: np.ndarray) -> Manifest:
        """Returns a manifest with only the rows where boolean mask `keep` is true (class map unchanged)."""
        rows = np.flatnonzero(keep)
        return Manifest(
            root=self.root,
            paths=[self.paths[i] for i in rows],
            labels=self.labels[rows],
            class_names=self.class_names,
            extra=self.extra.iloc[rows].reset_index(drop=True),
            source=self.source,
            candidates=None if self.candidates is None else self.candidates[rows],
            has_label_column=self.has_label_column,
        )


def read_manifest(
    images: str | os.PathLike,
    labels_csv: str | os.PathLike | None = None,
    allow_outside_root: bool = False,
    skip_missing: bool = False,
) -> Manifest:
    """Returns the validated manifest for image folder `images`.

    With `labels_csv`, rows come from its ``path`` and ``label`` columns (other columns are
    kept in ``extra``); without it, from the ImageFolder layout ``images/<class>/<file>``.
    The CSV may be UTF-8 (with or without BOM) or UTF-16 with BOM, separated by commas,
    semicolons or tabs; header names are matched without regard to case.
    Paths must stay inside `images` (no absolute paths, ``..`` or links pointing out) unless
    `allow_outside_root`. With `skip_missing` (``--on-bad-image skip``) a row whose file is
    missing or unreadable is kept, for the image cache to list as skipped. Raises UserError for
    any problem the user can fix, naming the file and row.
    """
    root = Path(images)
    if not root.is_dir():
        raise UserError(f"{root}: image folder not found; pass the folder that holds your images")
    if labels_csv is None:
        return _from_image_folder(root)
    return _from_csv(root, Path(labels_csv), allow_outside_root, skip_missing)


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
            f"{root}: no images in <class>/<image> subfolders; "
            f"pass a labels CSV or use the layout {root}/<class>/<image>"
        )
    frame = pd.DataFrame({"path": paths, "label": names})
    return _build(root, frame, source=None, allow_outside_root=False)


def _from_csv(root: Path, csv_path: Path, allow_outside_root: bool, skip_missing: bool) -> Manifest:
    frame = _read_csv(csv_path)
    required = ("path",) if CANDIDATES_COLUMN in frame.columns else REQUIRED_COLUMNS
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise UserError(f"{csv_path}: {_missing_columns_hint(missing, list(frame.columns))}")
    if frame.empty:
        raise UserError(f"{csv_path}: no rows under the header; add one row per image")
    return _build(root, frame, source=csv_path, allow_outside_root=allow_outside_root, skip_missing=skip_missing)


def _missing_columns_hint(missing: list[str], found: list[str]) -> str:
    """Returns what to say about missing header columns: a
    misspelling, a data row in place of the header, or what was found.
    """
    if found and any(name.lower().endswith(IMAGE_EXTENSIONS) for name in found):
        return f"the first line ({','.join(found)}) looks like a data row; add the header line path,label above it"
    for name in missing:
        close = difflib.get_close_matches(name, [f.lower() for f in found], n=1, cutoff=0.6)
        if close:
            return (
                f"no {name!r} column, but there is {close[0]!r}; "
                "rename it: the header must name path,label (or path,candidates)"
            )
    return (
        f"missing column(s) {', '.join(missing)} (found: {', '.join(found) or 'none'}); "
        "the header must name path,label (or path,candidates)"
    )


def _read_csv(csv_path: Path) -> pd.DataFrame:
    """Returns the CSV's rows as strings, one column per header name, indexed by each row's line in the file.

    This is the one place where CSV text becomes rows (see :func:`csv_rows`). Blank lines
    (anywhere, before the header too) are skipped; cells are stripped; empty fields at the end
    of a row (a trailing separator) are ignored; a row with fewer fields than the header gets
    empty cells. Raises UserError for text that is not CSV, a row with more non-empty fields
    than the header names, or a header of more than ``MAX_EXTRA_COLUMNS`` extra columns.
    """
    text = _read_text(csv_path)
    records = csv_rows(text, _delimiter(text), csv_path)
    if not records:
        raise UserError(f"{csv_path}: the file is empty; it needs a header path,label and one row per image")
    (_, header_cells), body = records[0], records[1:]
    names = _column_names(header_cells, csv_path)
    columns: list[list[str]] = [[] for _ in names]
    for line, cells in body:
        if len(cells) > len(names):
            if any(cells[len(names) :]):
                raise UserError(
                    f"{csv_path}: row {line}: {len(cells)} fields but the header names {len(names)} columns; "
                    "quote cells that contain the separator, or add the missing column names to the header"
                )
            cells = cells[: len(names)]
        for column, cell in zip(columns, cells):
            column.append(cell)
        for column in columns[len(cells) :]:
            column.append("")
    return pd.DataFrame(
        dict(zip(names, columns)), index=pd.Index([line for line, _ in body], dtype=np.int64), dtype=object
    )


def csv_rows(text: str, delimiter: str, csv_path: Path) -> list[tuple[int, list[str]]]:
    """Returns (line number of the row's first line, stripped cells) for every non-blank row of CSV `text`.

    A quoted cell may span lines. Raises UserError naming the line for text the CSV reader rejects.
    """
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, skipinitialspace=True)
    records, first_line = [], 1
    try:
        for record in reader:
            cells = [cell.strip() for cell in record]
            if any(cells):
                records.append((first_line, cells))
            first_line = reader.line_num + 1
    except csv.Error as err:
        raise UserError(
            f"{csv_path}: line {reader.line_num}: cannot be read as CSV ({err}); quote cells that contain the separator"
        ) from None
    return records


def _column_names(cells: list[str], csv_path: Path) -> list[str]:
    """Returns the header's column names: reserved names lower-cased, empty trailing names dropped, others made unique.

    An empty name inside the header becomes ``column N``; a repeated name gets ``.1``, ``.2``, …
    (names are compared after stripping). Raises UserError when a reserved name (path, label,
    candidates) appears twice, or for more than ``MAX_EXTRA_COLUMNS`` extra columns.
    """
    end = len(cells)
    while end and cells[end - 1] == "":
        end -= 1
    cells = cells[:end]  # one slice: a header of many trailing separators stays linear
    extra = len(cells) - sum(_header_name(cell) in RESERVED for cell in cells)
    if extra > MAX_EXTRA_COLUMNS:
        raise UserError(
            f"{csv_path}: the header has {len(cells):,} columns; "
            f"at most {MAX_EXTRA_COLUMNS:,} besides path, label and candidates are carried to the outputs: "
            "drop the others (or check the separator)"
        )
    names, seen = [], set()
    for position, cell in enumerate(cells, start=1):
        name = _header_name(cell) or f"column {position}"
        if name in RESERVED and name in seen:
            raise UserError(f"{csv_path}: the header names {name!r} twice; keep one {name} column")
        unique, copy = name, 0
        while unique in seen:
            copy += 1
            unique = f"{name}.{copy}"
        seen.add(unique)
        names.append(unique)
    return names


def _read_text(csv_path: Path) -> str:
    """Returns the CSV's text: UTF-8 (BOM optional) or UTF-16 with a BOM. Raises UserError otherwise."""
    if not csv_path.is_file():
        raise UserError(f"{csv_path}: labels CSV not found")
    try:
        raw = csv_path.read_bytes()
    except OSError as err:
        raise UserError(f"{csv_path}: cannot be read ({err.strerror})") from None
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return raw.decode("utf-16")
        except UnicodeDecodeError as err:
            raise UserError(
                f"{csv_path}: not UTF-16 text ({err.reason} at byte {err.start}); save the file as UTF-8 CSV"
            ) from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise UserError(
            f"{csv_path}: line {line}: not UTF-8 text (byte 0x{raw[err.start]:02x}); save the file as UTF-8 CSV"
        ) from None


def _delimiter(text: str) -> str:
    """Returns the separator of the header line: the first of comma, semicolon, tab that splits off a path column."""
    header = next((line for line in LINE_BREAK.split(text) if line.strip()), "")
    for sep in DELIMITERS:
        if "path" in (part.strip().strip('"').lower() for part in header.split(sep)):
            return sep
    return ","


def _header_name(raw) -> str:
    """Returns a header cell stripped; the reserved names (path, label, candidates) are matched without case."""
    name = str(raw).strip()
    return name.lower() if name.lower() in RESERVED else name


def _build(
    root: Path, frame: pd.DataFrame, source: Path | None, allow_outside_root: bool, skip_missing: bool = False
) -> Manifest:
    where = source if source is not None else root
    lines = _line_numbers(frame, source)
    frame = frame.reset_index(drop=True)
    paths = [
        _checked_path(root, raw, where, line, allow_outside_root, skip_missing)
        for raw, line in zip(frame["path"], lines)
    ]
    _reject_duplicates(paths, where, lines)
    has_label_column = "label" in frame.columns
    sets = _candidate_sets(frame, where, lines) if CANDIDATES_COLUMN in frame.columns else None
    label_texts = list(frame["label"]) if has_label_column else [""] * len(frame)
    if sets is None:
        for raw, line in zip(label_texts, lines):
            if raw == "":
                raise UserError(f"{where}: row {line}: empty label; give every image a label")
    if has_label_column:
        _reject_numeric_labels(label_texts, where, lines)
    named = [t for t in label_texts if t] if has_label_column else [n for names in sets for n in names]
    class_names = _sorted_classes(pd.unique(pd.Series(named, dtype=object)))
    if len(class_names) < 2:
        raise UserError(f"{where}: every label is {class_names[0]!r}; label noise needs at least two classes")
    index_of = {name: i for i, name in enumerate(class_names)}
    candidates = None if sets is None else _candidate_matrix(sets, label_texts, index_of, where, lines)
    given = [text or names[0] for text, names in zip(label_texts, sets)] if sets is not None else label_texts
    labels = np.array([index_of[name] for name in given], dtype=np.int64)
    extra = frame.drop(columns=[c for c in REQUIRED_COLUMNS if c in frame.columns]).reset_index(drop=True)
    return Manifest(
        root=root,
        paths=paths,
        labels=labels,
        class_names=class_names,
        extra=extra,
        source=source,
        candidates=candidates,
        has_label_column=has_label_column,
    )


def _candidate_sets(frame: pd.DataFrame, where: Path, lines: list[int]) -> list[list[str]]:
    """Returns each row's candidate names in the order given; an empty cell gives the row's label alone."""
    sets = []
    has_label = "label" in frame.columns
    for row, (raw, line) in enumerate(zip(frame[CANDIDATES_COLUMN], lines)):
        label = frame["label"].iat[row] if has_label else ""
        if raw == "":
            if label == "":
                raise UserError(f"{where}: row {line}: no label and no candidates; give at least one")
            sets.append([label])
            continue
        names = [name.strip() for name in raw.split(CANDIDATE_SEPARATOR)]
        if "" in names:
            raise UserError(
                f"{where}: row {line}: empty name in candidates {raw!r}; join class names with '|', e.g. cat|dog"
            )
        sets.append(list(dict.fromkeys(names)))
    return sets


def _candidate_matrix(
    sets: list[list[str]], given: list[str], index_of: dict[str, int], where: Path, lines: list[int]
) -> np.ndarray:
    """Returns the bool N×K candidate matrix; raises UserError for an unknown class or a label outside its set."""
    matrix = np.zeros((len(sets), len(index_of)), dtype=bool)
    for row, (names, label, line) in enumerate(zip(sets, given, lines)):
        unknown = [name for name in names if name not in index_of]
        if unknown:
            raise UserError(
                f"{where}: row {line}: unknown class {unknown[0]!r} in candidates; no row has it as its label"
            )
        if label != "" and label not in names:
            raise UserError(f"{where}: row {line}: label {label!r} is not among its candidates {'|'.join(names)}")
        matrix[row, [index_of[name] for name in names]] = True
    return matrix


def _line_numbers(frame: pd.DataFrame, source: Path | None) -> list[int]:
    """Returns the number the user sees for each row: its line in
    the CSV (header = line 1, the frame's index), or its position.
    """
    if source is None:
        return list(range(1, len(frame) + 1))
    return [int(i) for i in frame.index]


def _reject_numeric_labels(label_texts: list[str], where: Path, lines: list[int]) -> None:
    """Raises UserError when every label is a number and some are not
    integers (``3.0``, ``0.5``): a float column, not class names.
    """
    if not all(NUMBER.fullmatch(text) for text in label_texts if text):
        return
    for text, line in zip(label_texts, lines):
        if text and not text.lstrip("+-").isdigit():
            raise UserError(
                f"{where}: row {line}: label {text!r} is a decimal number; "
                "labels must be class names or integer class ids (e.g. 3, not 3.0)"
            )


def _checked_path(
    root: Path, raw: str, where: Path, line: int, allow_outside_root: bool, skip_missing: bool = False
) -> str:
    """Returns the CSV path `raw` as a POSIX path relative to `root` once it names a readable file inside `root`.

    This is the one place where a path from the CSV meets the file system: every way it can
    fail (empty, NUL, outside the folder, a link loop, a name too long, missing, unreadable,
    any other OSError) raises UserError naming the row. With `skip_missing`, a path that is
    valid but names no readable file is returned all the same (the image cache then lists it
    as skipped).
    """
    if raw == "":
        raise UserError(f"{where}: row {line}: empty path; give the image's path relative to {root}, or remove the row")
    if "\x00" in raw:
        raise UserError(f"{where}: row {line}: path {raw!r} holds a NUL character; fix the path or remove the row")
    posix = PurePosixPath(raw.replace("\\", "/"))
    full = root / posix
    if not allow_outside_root and (posix.is_absolute() or ".." in posix.parts):
        raise UserError(
            f"{where}: row {line}: path {raw!r} leaves the image folder; "
            f"give paths relative to {root}, or pass --allow-outside-root"
        )
    try:
        if not allow_outside_root and not _inside(full.resolve(), root.resolve()):
            raise UserError(
                f"{where}: row {line}: {raw!r} is a link pointing outside {root}; "
                "pass --allow-outside-root to accept it"
            )
        problem = (
            None if full.is_file() else "not found" if not full.exists() and not full.is_symlink() else "not a file"
        )
        if problem is None and not os.access(full, os.R_OK):
            problem = "not readable (check its permissions)"
    except RuntimeError:  # Path.resolve before Python 3.13 on a link loop
        problem = "a symbolic link loop"
    except OSError as err:
        problem = "a symbolic link loop" if err.errno == errno.ELOOP else (err.strerror or str(err)).lower()
    if problem is not None and not skip_missing:
        raise UserError(
            f"{where}: row {line}: image {full}: {problem}; fix the path or remove the row, or pass --on-bad-image skip"
        )
    return posix.as_posix()


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _reject_duplicates(paths: list[str], where: Path, lines: list[int]) -> None:
    first_line: dict[str, int] = {}
    for path, line in zip(paths, lines):
        if path in first_line:
            raise UserError(
                f"{where}: row {line}: duplicate path {path!r} (also row {first_line[path]}); keep one row per image"
            )
        first_line[path] = line


def _sorted_classes(names) -> list[str]:
    names = [str(n) for n in names]
    try:
        return sorted(names, key=int)
    except ValueError:
        return sorted(names)
