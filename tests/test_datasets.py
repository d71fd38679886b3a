"""Benchmark datasets: the offline digits split, subsets, and CIFAR from an image-folder layout."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from lnlclean.data.datasets import load_benchmark
from lnlclean.errors import UserError

CIFAR10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def test_digits_split_is_fixed_and_stratified():
    first, second = load_benchmark("digits"), load_benchmark("digits")
    assert first.train_images.shape == (1347, 8, 8, 1) and first.test_images.shape == (450, 8, 8, 1)
    assert first.train_images.dtype == np.uint8 and first.train_images.max() == 255
    np.testing.assert_array_equal(first.train_labels, second.train_labels)
    counts = np.bincount(first.train_labels, minlength=10)
    assert counts.min() >= 130 and counts.max() <= 140
    assert first.flip is False


def test_train_size_keeps_a_stratified_subset():
    data = load_benchmark("digits", train_size=500)
    assert len(data.train_labels) == 500 and len(data.test_labels) == 450
    assert np.bincount(data.train_labels, minlength=10).min() >= 48
    with pytest.raises(UserError, match="--train-size 5000"):
        load_benchmark("digits", train_size=5000)


def write_cifar_folder(root, classes, per_class=3):
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for name in classes:
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i:04d}.png")


def test_cifar10_reads_an_image_folder_layout(tmp_path):
    write_cifar_folder(tmp_path / "cifar", CIFAR10)
    data = load_benchmark("cifar10", data_dir=tmp_path / "cifar", cache_dir=tmp_path / "cache")
    assert data.class_names == CIFAR10
    assert data.train_images.shape == (30, 32, 32, 3) and data.test_images.shape == (30, 32, 32, 3)
    assert list(np.bincount(data.train_labels)) == [3] * 10
    pixels = np.asarray(Image.open(tmp_path / "cifar" / "train" / "cat" / "0001.png"))
    np.testing.assert_array_equal(data.train_images[3 * 3 + 1], pixels)


def test_cifar_folder_with_the_wrong_classes_is_a_user_error(tmp_path):
    write_cifar_folder(tmp_path / "cifar", CIFAR10[:4])
    with pytest.raises(UserError, match="4 class folders, cifar10 has 10"):
        load_benchmark("cifar10", data_dir=tmp_path / "cifar", cache_dir=tmp_path / "cache")


def test_unknown_dataset_is_a_user_error():
    with pytest.raises(UserError, match="dataset 'mnist'"):
        load_benchmark("mnist")
