"""Shared fixtures: a small image folder written from scikit-learn's
bundled digits (plain helpers are in ``helpers.py``).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import pytest
from helpers import digits_pixels, is_jpeg_row, write_noisy_digits
from PIL import Image


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


@cache
def _digits_benchmark(method: str, noise: str, partial_rate: float | None, params: tuple) -> dict:
    from lnlclean.config import RunConfig
    from lnlclean.data.noise import parse_noise_spec
    from lnlclean.jobs.benchmark import run_benchmark_one

    config = RunConfig(method=method, epochs=BENCH_EPOCHS, device="cpu", method_params=dict(params))
    return run_benchmark_one(
        "digits", parse_noise_spec(noise), config, train_size=BENCH_TRAIN_SIZE, partial_rate=partial_rate
    )


@pytest.fixture(scope="session")
def digits_benchmark():
    """Returns run(method, noise="sym40", partial_rate=None, **params) → the benchmark dict of that run on a
    600-digit subset.

    Runs are cached for the session, so every method's test compares with the same CE run.
    """

    def run(method: str, noise: str = "sym40", partial_rate: float | None = None, **params) -> dict:
        return _digits_benchmark(method, noise, partial_rate, tuple(sorted(params.items())))

    return run
