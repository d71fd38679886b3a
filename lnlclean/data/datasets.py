"""Benchmark datasets with their true labels: digits (offline), CIFAR-10 and CIFAR-100.

- ``digits``: scikit-learn's bundled 8×8 handwritten digits (1,797 images, 1 channel),
  split 75/25 into train and test, stratified, with a fixed split seed. No download.
- ``cifar10`` / ``cifar100``: from ``data_dir`` when given — either torchvision's files
  (``cifar-10-batches-py`` / ``cifar-100-python`` inside it) or an image-folder layout
  ``train/<class>/*`` and ``test/<class>/*`` — else downloaded by torchvision into the cache.

``train_size`` keeps a stratified random subset of the training split (fixed seed), for quick
checks on CPU. Every dataset remembers where each kept training image sits in its whole
training split (``split_index``), so label sets published for the whole split (a noise file)
can be matched to a subset.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UserError
from .cache import default_cache_dir, load_or_build
from .manifest import read_manifest

DATASETS = ("digits", "cifar10", "cifar100")
SPLIT_SEED = 20240601


@dataclass
class BenchmarkData:
    """A dataset with known labels.

    Attributes:
        name: digits, cifar10 or cifar100.
        train_images, test_images: uint8 N×H×W×C.
        train_labels, test_labels: true labels, int64.
        class_names: names in label order.
        flip: whether a horizontal flip keeps the label (False for digits).
        split_index: position of each training image in the whole training split as loaded
            (torchvision's order, or for folders: class folders, then file names, both sorted);
            None means 0…N−1.
        split_labels: the true labels of the whole training split, or None when it is not subsampled.
        from_folders: whether the split was read from train/<class>/* folders.
    """

    name: str
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    class_names: list[str]
    flip: bool = True
    split_index: np.ndarray | None = None
    split_labels: np.ndarray | None = None
    from_folders: bool = False

    def positions(self) -> np.ndarray:
        """Returns the position of each training image in the whole training split (int64, N)."""
        return np.arange(len(self.train_labels)) if self.split_index is None else self.split_index

    def whole_split_labels(self) -> np.ndarray:
        """Returns the true labels of the whole training split, subsampled or not."""
        return self.train_labels if self.split_labels is None else self.split_labels


def load_benchmark(
    name: str,
    data_dir: Path | None = None,
    train_size: int | None = None,
    cache_dir: Path | None = None,
    advance: Callable[[int], None] | None = None,
) -> BenchmarkData:
    """Returns dataset `name` with its true labels, optionally subsampled to `train_size` training images.

    Raises UserError for an unknown name, a bad `data_dir`, or a failed download.
    """
    if name not in DATASETS:
        raise UserError(f"dataset {name!r}: unknown; choose one of {', '.join(DATASETS)}")
    if name == "digits":
        data = load_digits()
    else:
        data = load_cifar(name, data_dir, cache_dir or default_cache_dir(), advance)
    if train_size is not None:
        data = _subsample(data, train_size)
    return data


def load_digits() -> BenchmarkData:
    """Returns scikit-learn's 8×8 digits as uint8 images (0–16 scaled to 0–255), split 75/25."""
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split

    bunch = sklearn_digits()
    images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    labels = bunch.target.astype(np.int64)
    train_x, test_x, train_y, test_y = train_test_split(
        images, labels, test_size=0.25, stratify=labels, random_state=SPLIT_SEED
    )
    return BenchmarkData("digits", train_x, train_y, test_x, test_y, [str(d) for d in range(10)], flip=False)


def load_cifar(name: str, data_dir: Path | None, cache_dir: Path, advance=None) -> BenchmarkData:
    """Returns CIFAR-10/100 from `data_dir` (torchvision files or train/ test/ folders) or a download."""
    if data_dir is not None and (Path(data_dir) / "train").is_dir():
        return _cifar_from_folders(name, Path(data_dir), cache_dir, advance)
    import torchvision

    cls = torchvision.datasets.CIFAR10 if name == "cifar10" else torchvision.datasets.CIFAR100
    root = Path(data_dir) if data_dir is not None else cache_dir / "datasets"
    try:
        train = cls(root=str(root), train=True, download=data_dir is None)
        test = cls(root=str(root), train=False, download=data_dir is None)
    except RuntimeError as err:  # torchvision: files missing or corrupt
        raise UserError(
            f"--data-dir {root}: no usable {name} files ({err}); give torchvision's files or train/ test/ folders"
        ) from None
    except OSError as err:  # the download could not reach the network
        raise UserError(f"{name}: download failed ({err}); pass --data-dir with a local copy") from None
    return BenchmarkData(
        name,
        np.asarray(train.data),
        np.asarray(train.targets, dtype=np.int64),
        np.asarray(test.data),
        np.asarray(test.targets, dtype=np.int64),
        list(train.classes),
    )


def _cifar_from_folders(name: str, root: Path, cache_dir: Path, advance) -> BenchmarkData:
    splits = {}
    for split in ("train", "test"):
        if not (root / split).is_dir():
            raise UserError(f"--data-dir {root}: missing {split}/ folder; expected train/<class>/* and test/<class>/*")
        manifest = read_manifest(root / split)
        cache = load_or_build(manifest, cache_dir, image_size=32, advance=advance)
        if cache.bad:
            index, reason = next(iter(cache.bad.items()))
            raise UserError(f"{root / split / manifest.paths[index]}: {reason}")
        splits[split] = (manifest, cache.images)
    train_manifest, test_manifest = splits["train"][0], splits["test"][0]
    if train_manifest.class_names != test_manifest.class_names:
        raise UserError(f"--data-dir {root}: train/ and test/ have different class folders")
    expected = 10 if name == "cifar10" else 100
    if train_manifest.n_classes != expected:
        raise UserError(f"--data-dir {root}: {train_manifest.n_classes} class folders, {name} has {expected}")
    return BenchmarkData(
        name,
        splits["train"][1],
        train_manifest.labels,
        splits["test"][1],
        test_manifest.labels,
        train_manifest.class_names,
        from_folders=True,
    )


def _subsample(data: BenchmarkData, train_size: int) -> BenchmarkData:
    if not 0 < train_size <= len(data.train_labels):
        raise UserError(f"--train-size {train_size}: must be between 1 and {len(data.train_labels)} for {data.name}")
    if train_size == len(data.train_labels):
        return data
    from sklearn.model_selection import train_test_split

    keep, _ = train_test_split(
        np.arange(len(data.train_labels)),
        train_size=train_size,
        stratify=data.train_labels,
        random_state=SPLIT_SEED,
    )
    keep = np.sort(keep)
    return BenchmarkData(
        data.name,
        np.asarray(data.train_images[keep]),
        data.train_labels[keep],
        data.test_images,
        data.test_labels,
        data.class_names,
        data.flip,
        split_index=keep,
        split_labels=data.train_labels,
        from_folders=data.from_folders,
    )
