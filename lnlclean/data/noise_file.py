"""Real noisy label sets for a benchmark's training images (``--noise-file FILE [--noise-key KEY]``).

Two formats:

- a CSV with the columns ``index`` and ``label``: ``index`` is the image's position in the
  dataset's whole training split as lnlclean loads it (torchvision's order from torchvision's
  files; from ``train/<class>/*`` folders: class folders, then file names, both sorted), and
  ``label`` a class name or a class index;
- the CIFAR-N files ``CIFAR-10_human.pt`` and ``CIFAR-100_human.pt`` (Wei et al., ICLR 2022): a
  torch-saved dict of label arrays in torchvision's training order, such as ``clean_label``,
  ``worse_label``, ``aggre_label``, ``random_label1`` … (CIFAR-10) or ``noisy_label``
  (CIFAR-100). ``--noise-key`` picks the array; it may be left out when the file holds one noisy
  array. When the images come from folders, the file's ``clean_label`` array places them: the
  k-th file of a class folder is the k-th image of that class in torchvision's order.

Where the file holds the clean labels, they must match the benchmark's true labels, so a file
of another dataset or order is refused rather than scored.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import UserError
from .datasets import BenchmarkData

CLEAN_KEY = "clean_label"
OPTION = "--noise-file"


@dataclass
class NoiseFileLabels:
    """Labels read from a noise file, by position in the whole training split.

    Attributes:
        labels: the noisy label of each position (int64), −1 where the file gives none.
        clean: the file's clean labels by position, or None.
        torchvision_order: whether positions follow torchvision's order (CIFAR-N) rather than
            the order lnlclean loads the split in (CSV).
    """

    labels: np.ndarray
    clean: np.ndarray | None
    torchvision_order: bool


def read_noise_file(path: Path, key: str | None, class_names: list[str]) -> NoiseFileLabels:
    """Returns the labels of the noise file at `path` (label set `key` of a CIFAR-N file).

    Raises UserError naming the file, row or key for anything that cannot be used.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{OPTION} {path}: no such file")
    if path.suffix.lower() == ".csv":
        if key is not None:
            raise UserError(
                f"--noise-key {key}: a CSV noise file holds one label set (columns index,label); drop --noise-key"
            )
        return read_csv_labels(path, class_names)
    return read_torch_labels(path, key, len(class_names))


def read_csv_labels(path: Path, class_names: list[str]) -> NoiseFileLabels:
    """Returns the labels of a CSV with columns ``index`` and ``label`` (class names or indices)."""
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, skip_blank_lines=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise UserError(
            f"{OPTION} {path}: not a readable CSV ({type(err).__name__}); expected the columns index,label"
        ) from None
    frame.columns = [str(name).strip().lower() for name in frame.columns]
    missing = [name for name in ("index", "label") if name not in frame.columns]
    if missing:
        raise UserError(f"{OPTION} {path}: missing column(s) {', '.join(missing)}; expected the columns index,label")
    index_of = {name: k for k, name in enumerate(class_names)}
    positions, labels = [], []
    for row, (index_text, label_text) in enumerate(zip(frame["index"], frame["label"]), start=2):
        index_text, label_text = index_text.strip(), label_text.strip()
        if not index_text.isdigit():
            raise UserError(f"{OPTION} {path}: row {row}: index {index_text!r} is not a whole number")
        positions.append(int(index_text))
        labels.append(class_index(label_text, index_of, f"{OPTION} {path}: row {row}"))
    positions = np.asarray(positions, dtype=np.int64)
    if len(positions) == 0:
        raise UserError(f"{OPTION} {path}: holds no rows")
    values, counts = np.unique(positions, return_counts=True)
    if (counts > 1).any():
        raise UserError(f"{OPTION} {path}: index {values[counts > 1][0]} appears more than once")
    by_position = np.full(positions.max() + 1, -1, dtype=np.int64)
    by_position[positions] = labels
    return NoiseFileLabels(by_position, None, torchvision_order=False)


def class_index(text: str, index_of: dict[str, int], where: str) -> int:
    """Returns the class of a label written as a class name or a class index. Raises UserError naming `where`."""
    if text in index_of:
        return index_of[text]
    if text.isdigit() and int(text) < len(index_of):
        return int(text)
    raise UserError(f"{where}: label {text!r} is neither a class name nor a class index below {len(index_of)}")


def read_torch_labels(path: Path, key: str | None, n_classes: int) -> NoiseFileLabels:
    """Returns label set `key` of a torch-saved dict of label arrays
    (a CIFAR-N file), with its clean labels when it has them.
    """
    content = load_label_dict(path)
    arrays = {name: label_array(value) for name, value in content.items()}
    arrays = {name: value for name, value in arrays.items() if value is not None}
    clean = arrays.get(CLEAN_KEY)
    noisy_keys = sorted(name for name in arrays if name != CLEAN_KEY and "coarse" not in name)
    if key is None:
        if len(noisy_keys) != 1:
            raise UserError(
                f"{OPTION} {path}: holds the label sets {', '.join(noisy_keys) or 'none'}; choose one with --noise-key"
            )
        key = noisy_keys[0]
    if key not in arrays:
        raise UserError(f"--noise-key {key}: not in {path} (it holds {', '.join(sorted(arrays)) or 'no label arrays'})")
    labels = arrays[key]
    if labels.min() < 0 or labels.max() >= n_classes:
        raise UserError(
            f"--noise-key {key}: labels range from {labels.min()} to {labels.max()}, "
            f"but the dataset has {n_classes} classes"
        )
    if clean is not None and len(clean) != len(labels):
        raise UserError(f"{OPTION} {path}: {CLEAN_KEY} has {len(clean)} labels and {key} {len(labels)}")
    return NoiseFileLabels(labels, clean, torchvision_order=True)


def load_label_dict(path: Path) -> dict:
    """Returns the dict saved in `path` by torch.save, loaded
    without running code from the file (numpy arrays allowed).
    """
    import torch
    from torch.serialization import safe_globals

    reconstruct = np._core.multiarray._reconstruct
    integer_dtypes = [
        type(np.dtype(kind))
        for kind in (np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64)
    ]
    allowed = [reconstruct, (reconstruct, "numpy.core.multiarray._reconstruct"), np.ndarray, np.dtype, *integer_dtypes]
    try:
        with safe_globals(allowed):
            content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a foreign or truncated file fails in many ways; all mean "unusable"
        raise UserError(
            f"{OPTION} {path}: not a CSV nor a readable torch file of label arrays ({type(err).__name__})"
        ) from err
    if not isinstance(content, dict):
        raise UserError(
            f"{OPTION} {path}: holds a {type(content).__name__}, not a dict of label arrays such as CIFAR-N's"
        )
    return content


def label_array(value) -> np.ndarray | None:
    """Returns `value` as an int64 label array when it is a 1-D array, tensor or list of whole numbers, else None."""
    try:
        array = np.asarray(value.numpy() if hasattr(value, "numpy") else value)
    except (TypeError, ValueError):
        return None
    if array.ndim != 1 or len(array) == 0 or not np.issubdtype(array.dtype, np.integer):
        return None
    return array.astype(np.int64)


def noisy_training_labels(bench: BenchmarkData, noise: NoiseFileLabels, path: Path) -> np.ndarray:
    """Returns the file's label of each of the benchmark's training images (int64, N).

    Raises UserError when the file does not cover them or its clean labels disagree with the
    benchmark's true labels.
    """
    positions = bench.positions()
    if noise.torchvision_order and bench.from_folders:
        positions = folder_to_torchvision(bench, noise, path)[positions]
    covered = positions < len(noise.labels)
    covered[covered] = noise.labels[positions[covered]] >= 0
    if not covered.all():
        raise UserError(
            f"{OPTION} {path}: gives no label for training image {positions[~covered][0]} of {bench.name}; "
            "it must cover the whole training split"
        )
    if noise.clean is not None:
        differ = int((noise.clean[positions] != bench.train_labels).sum())
        if differ:
            raise UserError(
                f"{OPTION} {path}: its {CLEAN_KEY} disagrees with {bench.name}'s true labels on {differ} of "
                f"{len(positions)} images; is it the file of this dataset?"
            )
    return noise.labels[positions]


def folder_to_torchvision(bench: BenchmarkData, noise: NoiseFileLabels, path: Path) -> np.ndarray:
    """Returns, for each position of a folder-loaded split, its
    position in torchvision's order (from the file's clean labels).
    """
    if noise.clean is None:
        raise UserError(
            f"{OPTION} {path}: has no {CLEAN_KEY} to place images read from folders; "
            "use torchvision's CIFAR files as --data-dir"
        )
    folder_labels = bench.whole_split_labels()
    mapping = np.empty(len(folder_labels), dtype=np.int64)
    for k in range(len(bench.class_names)):
        in_folders, in_file = np.flatnonzero(folder_labels == k), np.flatnonzero(noise.clean == k)
        if len(in_folders) != len(in_file):
            raise UserError(
                f"{OPTION} {path}: class {bench.class_names[k]!r} has {len(in_file)} images in the file and "
                f"{len(in_folders)} in the folders; is it the file of this dataset?"
            )
        mapping[in_folders] = in_file
    return mapping
