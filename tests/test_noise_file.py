"""Real noisy label sets (--noise-file): CSV and CIFAR-N files written by the tests, subsets, folder order, errors."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from lnlclean.cli import main
from lnlclean.data.datasets import BenchmarkData, load_benchmark
from lnlclean.data.noise_file import noisy_training_labels, read_noise_file
from lnlclean.errors import UserError

DIGITS = [str(d) for d in range(10)]


@pytest.fixture(scope="module")
def digits():
    return load_benchmark("digits")


def flipped_labels(true_labels: np.ndarray, share: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noisy = true_labels.copy()
    rows = rng.choice(len(noisy), size=round(share * len(noisy)), replace=False)
    noisy[rows] = (noisy[rows] + 1) % 10
    return noisy


def write_cifar_n(path, clean: np.ndarray, **noisy: np.ndarray) -> None:
    """Writes a file shaped like CIFAR-10_human.pt: a torch-saved dict of numpy label arrays."""
    torch.save({"clean_label": clean, **noisy}, path)


def test_csv_with_class_names_and_indices(tmp_path, digits):
    noisy = flipped_labels(digits.train_labels, 0.3)
    path = tmp_path / "noise.csv"
    labels = [DIGITS[k] if i % 2 else k for i, k in enumerate(noisy)]  # names and indices mixed
    pd.DataFrame({"index": np.arange(len(noisy))[::-1], "label": labels[::-1]}).to_csv(path, index=False)
    read = read_noise_file(path, None, DIGITS)
    np.testing.assert_array_equal(noisy_training_labels(digits, read, path), noisy)


def test_cifar_n_file_needs_a_key_when_it_holds_several(tmp_path, digits):
    worse, aggre = flipped_labels(digits.train_labels, 0.4), flipped_labels(digits.train_labels, 0.1, seed=1)
    path = tmp_path / "CIFAR-10_human.pt"
    write_cifar_n(path, digits.train_labels, worse_label=worse, aggre_label=aggre)
    with pytest.raises(UserError, match="aggre_label, worse_label; choose one with --noise-key"):
        read_noise_file(path, None, DIGITS)
    read = read_noise_file(path, "worse_label", DIGITS)
    np.testing.assert_array_equal(noisy_training_labels(digits, read, path), worse)
    with pytest.raises(UserError, match="--noise-key random_label1: not in"):
        read_noise_file(path, "random_label1", DIGITS)


def test_subset_takes_the_rows_of_its_images(tmp_path):
    whole = load_benchmark("digits")
    subset = load_benchmark("digits", train_size=500)
    noisy = flipped_labels(whole.train_labels, 0.4)
    path = tmp_path / "CIFAR-10_human.pt"
    write_cifar_n(path, whole.train_labels, worse_label=noisy)
    read = read_noise_file(path, None, DIGITS)
    np.testing.assert_array_equal(noisy_training_labels(subset, read, path), noisy[subset.split_index])


def test_folder_order_is_placed_by_the_clean_labels(tmp_path):
    # torchvision order: interleaved classes; folder order: class-major, in torchvision order within a class
    torchvision_labels = np.array([2, 0, 1, 0, 2, 1, 0, 2])
    noisy = np.array([2, 1, 1, 0, 0, 1, 0, 2])
    folder_order = np.concatenate([np.flatnonzero(torchvision_labels == k) for k in range(3)])
    bench = BenchmarkData(
        "cifar10",
        np.zeros((8, 2, 2, 3), np.uint8),
        torchvision_labels[folder_order],
        np.zeros((0, 2, 2, 3), np.uint8),
        np.zeros(0, np.int64),
        ["a", "b", "c"],
        from_folders=True,
    )
    path = tmp_path / "labels.pt"
    write_cifar_n(path, torchvision_labels, noisy_label=noisy)
    read = read_noise_file(path, None, ["a", "b", "c"])
    np.testing.assert_array_equal(noisy_training_labels(bench, read, path), noisy[folder_order])


def test_clean_labels_of_another_dataset_are_refused(tmp_path, digits):
    path = tmp_path / "other.pt"
    write_cifar_n(path, (digits.train_labels + 1) % 10, worse_label=digits.train_labels)
    read = read_noise_file(path, None, DIGITS)
    with pytest.raises(UserError, match="disagrees with digits's true labels"):
        noisy_training_labels(digits, read, path)


@pytest.mark.parametrize(
    "content, message",
    [
        ("index,label\n0,3\n", "gives no label for training image 1"),
        ("index,label\n0,3\n0,4\n", "index 0 appears more than once"),
        ("index,label\n0,eleven\n", "row 2: label 'eleven' is neither a class name nor a class index"),
        ("idx,label\n0,3\n", "missing column\\(s\\) index"),
        ("index,label\n-1,3\n", "row 2: index '-1' is not a whole number"),
    ],
)
def test_bad_csv(tmp_path, digits, content, message):
    path = tmp_path / "noise.csv"
    path.write_text(content)
    with pytest.raises(UserError, match=message):
        noisy_training_labels(digits, read_noise_file(path, None, DIGITS), path)


def test_not_a_label_file(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save([1, 2, 3], path)
    with pytest.raises(UserError, match="holds a list, not a dict of label arrays"):
        read_noise_file(path, None, DIGITS)
    path.write_bytes(b"\x00garbage")
    with pytest.raises(UserError, match="not a CSV nor a readable torch file"):
        read_noise_file(path, None, DIGITS)


def test_benchmark_command_scores_a_noise_file(tmp_path, digits, capsys):
    noisy = flipped_labels(digits.train_labels, 0.25)
    path = tmp_path / "noise.csv"
    pd.DataFrame({"index": np.arange(len(noisy)), "label": noisy}).to_csv(path, index=False)
    out = tmp_path / "bench"
    assert (
        main(
            [
                "benchmark",
                "digits",
                "--noise-file",
                str(path),
                "--method",
                "ce",
                "--epochs",
                "2",
                "--out",
                str(out),
                "-q",
            ]
        )
        == 0
    )
    (run,) = json.loads((out / "benchmark.json").read_text())["runs"]
    assert run["noise"] == "file:noise.csv"
    assert run["true_noise_rate"] == pytest.approx(0.25, abs=0.001)
    assert main(["benchmark", "digits", "--noise-key", "worse_label", "--out", str(tmp_path / "b2")]) == 2
    assert "give --noise-file too" in capsys.readouterr().err
