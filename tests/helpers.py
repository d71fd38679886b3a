"""Plain helpers the tests import (``from helpers import ...``): digits images and labels, and tiny method runs.

Fixtures built on them live in ``conftest.py``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

N_DIGITS = 60
JPEG_EVERY = 5  # every 5th image (index % 5 == 4) is written as JPEG, the rest as PNG


@lru_cache(maxsize=1)
def digits_pixels() -> tuple[np.ndarray, np.ndarray]:
    """Returns (uint8 images N×8×8 scaled to 0..255, int64 labels) for the first N_DIGITS digits."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = np.round(digits.images[:N_DIGITS] * 255.0 / 16.0).astype(np.uint8)
    return pixels, digits.target[:N_DIGITS].astype(np.int64)


def is_jpeg_row(i: int) -> bool:
    """Returns whether row `i` of the digits folder (the `digits_folder` fixture) is written as JPEG."""
    return i % JPEG_EVERY == JPEG_EVERY - 1


def write_noisy_digits(
    root: Path,
    n_images: int,
    n_wrong: int,
    seed: int,
    side: int = 16,
    jpeg_every: int = 3,
    true_column: bool = False,
) -> dict:
    """Writes the first `n_images` digits under ``root/images`` and ``root/labels.csv`` with `n_wrong` labels moved to
    another digit.

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
        rows.append(
            {
                "path": name,
                "label": str(given[i]),
                "annotator": f"a{i % 4}",
                **({"true_label": str(true_labels[i])} if true_column else {}),
            }
        )
    csv = root / "labels.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    return {"root": root, "images": images, "csv": csv, "true": true_labels, "given": given, "wrong": wrong}


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
        n_samples=len(given),
        n_classes=n_classes,
        given_labels=torch.tensor(given),
        candidates=None if candidates is None else torch.tensor(candidates, dtype=torch.bool),
        epochs=epochs,
        device=torch.device("cpu"),
        build_network=lambda: build_backbone("small-cnn", n_classes, 1),
        noise_rate=noise_rate,
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
