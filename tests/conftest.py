"""Shared fixtures: a small image folder written from scikit-learn's bundled digits."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import pytest
from PIL import Image

N_DIGITS = 60
JPEG_EVERY = 5  # every 5th image (index % 5 == 4) is written as JPEG, the rest as PNG


class DigitsFolder(NamedTuple):
    """A written digits dataset.

    root: the image folder (flat: ``root/img_0000.png`` ...).
    csv: the labels CSV (columns path, label, annotator; paths relative to `root`).
    labels: the digit of each row (int64, N).
    pixels: the uint8 8×8 grayscale pixels of each row as written (N×8×8).
    paths: the relative path of each row.
    """

    root: Path
    csv: Path
    labels: np.ndarray
    pixels: np.ndarray
    paths: list


@pytest.fixture(autouse=True)
def run_in_empty_directory(tmp_path_factory, monkeypatch):
    """Runs every test in a fresh working directory, so default output paths never land in the checkout."""
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))


@lru_cache(maxsize=1)
def digits_pixels() -> tuple[np.ndarray, np.ndarray]:
    """Returns (uint8 images N×8×8 scaled to 0..255, int64 labels) for the first N_DIGITS digits."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = np.round(digits.images[:N_DIGITS] * 255.0 / 16.0).astype(np.uint8)
    return pixels, digits.target[:N_DIGITS].astype(np.int64)


def is_jpeg_row(i: int) -> bool:
    return i % JPEG_EVERY == JPEG_EVERY - 1


@pytest.fixture
def digits_folder(tmp_path) -> DigitsFolder:
    """60 digits as 8×8 grayscale PNG files (every 5th as JPEG) plus ``labels.csv``."""
    pixels, labels = digits_pixels()
    root = tmp_path / "images"
    root.mkdir()
    rows, paths = [], []
    for i in range(len(pixels)):
        name = f"img_{i:04d}.{'jpg' if is_jpeg_row(i) else 'png'}"
        Image.fromarray(pixels[i]).save(root / name)
        paths.append(name)
        rows.append({"path": name, "label": str(int(labels[i])), "annotator": f"ann{i % 3}"})
    csv = tmp_path / "labels.csv"
    pd.DataFrame(rows, columns=["path", "label", "annotator"]).to_csv(csv, index=False)
    return DigitsFolder(root=root, csv=csv, labels=labels.copy(), pixels=pixels.copy(), paths=paths)


def write_noisy_digits(
    root: Path, n_images: int, n_wrong: int, seed: int, side: int = 16, jpeg_every: int = 3, true_column: bool = False,
) -> dict:
    """Writes the first `n_images` digits under ``root/images`` and ``root/labels.csv`` with `n_wrong` labels moved to another digit.

    Images are `side` px (nearest-neighbour), every `jpeg_every`-th as JPEG (from the first),
    the rest PNG (0: all PNG). The CSV has path, label, annotator and, with `true_column`, the
    true digit in ``true_label``. Returns root, images, csv, true, given and wrong (the moved rows).
    """
    from sklearn.datasets import load_digits

    images = root / "images"
    images.mkdir()
    digits = load_digits()
    rng = np.random.default_rng(seed)
    true_labels = digits.target[:n_images]
    given = true_labels.copy()
    wrong = rng.choice(n_images, size=n_wrong, replace=False)
    given[wrong] = (given[wrong] + rng.integers(1, 10, size=n_wrong)) % 10
    rows = []
    for i in range(n_images):
        pixels = np.round(digits.images[i] * 255 / 16).astype(np.uint8)
        name = f"d{i:04d}.{'jpg' if jpeg_every and i % jpeg_every == 0 else 'png'}"
        Image.fromarray(pixels, mode="L").resize((side, side), Image.NEAREST).save(images / name)
        rows.append({"path": name, "label": str(given[i]), "annotator": f"a{i % 4}", **({"true_label": str(true_labels[i])} if true_column else {})})
    csv = root / "labels.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    return {"root": root, "images": images, "csv": csv, "true": true_labels, "given": given, "wrong": wrong}


@pytest.fixture(scope="module")
def noisy_folder_small(tmp_path_factory) -> dict:
    """120 digits (16 px PNG/JPEG) with a labels CSV in which 24 labels are wrong (see write_noisy_digits)."""
    return write_noisy_digits(tmp_path_factory.mktemp("noisy-small"), 120, 24, seed=2)


@pytest.fixture
def cache_dir(tmp_path) -> Path:
    """An (as yet non-existent) cache directory inside tmp_path."""
    return tmp_path / "cache"


BENCH_TRAIN_SIZE = 600  # a stratified digits subset: small enough for seconds per run
BENCH_EPOCHS = 60  # long enough that plain cross-entropy memorises much of the noise


@lru_cache(maxsize=None)
def _digits_benchmark(method: str, noise: str, partial_rate: float | None, params: tuple) -> dict:
    from lnlclean.config import RunConfig
    from lnlclean.data.noise import parse_noise_spec
    from lnlclean.pipeline import run_benchmark_one

    config = RunConfig(method=method, epochs=BENCH_EPOCHS, device="cpu", method_params=dict(params))
    return run_benchmark_one("digits", parse_noise_spec(noise), config, train_size=BENCH_TRAIN_SIZE, partial_rate=partial_rate)


@pytest.fixture(scope="session")
def digits_benchmark():
    """Returns run(method, noise="sym40", partial_rate=None, **params) → the benchmark dict of that run on a 600-digit subset.

    Runs are cached for the session, so every method's test compares with the same CE run.
    """

    def run(method: str, noise: str = "sym40", partial_rate: float | None = None, **params) -> dict:
        return _digits_benchmark(method, noise, partial_rate, tuple(sorted(params.items())))

    return run


def make_method(
    method_cls, given: list[int], n_classes: int = 3, epochs: int = 10, candidates=None, noise_rate=None, **params
):
    """Returns `method_cls` set up on a tiny CPU run: given labels `given`, 1-channel small-cnn networks.

    `candidates` (nested lists, N×K of 0/1) and `noise_rate` are passed to the method's Setup.
    """
    import torch

    from lnlclean.config import method_hparams
    from lnlclean.methods.base import Setup
    from lnlclean.models import build_backbone

    setup = Setup(
        n_samples=len(given), n_classes=n_classes, given_labels=torch.tensor(given),
        candidates=None if candidates is None else torch.tensor(candidates, dtype=torch.bool),
        epochs=epochs, device=torch.device("cpu"),
        build_network=lambda: build_backbone("small-cnn", n_classes, 1), noise_rate=noise_rate,
    )
    return method_cls(method_hparams(method_cls, params), setup)


class FixedAugmenter:
    """Views that are the raw images as floats (no randomness, no normalisation)."""

    def weak(self, raw, generator):
        return raw.permute(0, 3, 1, 2).float()

    strong = weak


def batch_of(method, index: list[int]):
    """Returns a Batch of the samples `index` of `method`'s setup, with fixed 8×8 one-channel images."""
    import torch

    from lnlclean.methods.base import Batch

    rows = torch.tensor(index)
    raw = torch.arange(len(index) * 64, dtype=torch.uint8).reshape(len(index), 8, 8, 1)
    return Batch(rows, method.setup.given_labels[rows], raw, FixedAugmenter(), torch.Generator())
