"""The classifier behind instance-dependent benchmark noise (``--noise idnNN``).

Chen et al. (AAAI 2021) train a network on the true labels and average its softmax on every
training image over the epochs of training; :func:`~lnlclean.data.noise.instance_dependent_noise`
then flips the images that network found most like another class. Here the network is the
default backbone trained with cross-entropy for ``CLASSIFIER_EPOCHS`` epochs on the benchmark's
own training images (the subset, with ``--train-size``), and the softmax is that of the clean,
eval-mode pass after each epoch. Its seed is derived from the run's ``--seed`` but differs from
it (``SEED_OFFSET``), so the audited network does not start from the classifier's weights and
find its confusion ready-made.

The averaged table is cached in ``<cache>/idn/`` under a key of the images, the true labels,
the seed, the recipe and the device type, so every method of a benchmark (and every later
benchmark) flips the same labels without training the classifier again.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from .config import RunConfig
from .data.datasets import BenchmarkData
from .data.noise import instance_dependent_noise
from .engine import TrainData, fit, resolve_device
from .fileio import atomic_path
from .methods.ce import CrossEntropy
from .progress import Reporter

CLASSIFIER_EPOCHS = 20
SEED_OFFSET = 7_919
RECIPE = "chen2021-v1"  # changes whenever the classifier's training changes, so old caches are not reused


class SoftmaxAverage(CrossEntropy):
    """Cross-entropy that adds up its eval-mode softmax on every training image after each epoch."""

    def __init__(self, hparams, setup):
        super().__init__(hparams, setup)
        self.total = torch.zeros(setup.n_samples, setup.n_classes, dtype=torch.float64)

    def end_epoch(self, epoch, evaluate):
        self.total += evaluate().double()
        return {}

    def mean_probs(self) -> np.ndarray:
        """Returns the softmax averaged over the epochs so far (float64 N×K)."""
        return (self.total / max(len(self.history), 1)).numpy()


def idn_labels(
    bench: BenchmarkData, rate: float, seed: int, device: str, cache_dir: Path, reporter: Reporter
) -> np.ndarray:
    """Returns the benchmark's training labels with instance-dependent noise at `rate` (see the module docs)."""
    mean_probs = classifier_probs(bench, seed, device, cache_dir, reporter)
    return instance_dependent_noise(bench.train_labels, mean_probs, rate, np.random.default_rng(seed))


def classifier_probs(bench: BenchmarkData, seed: int, device: str, cache_dir: Path, reporter: Reporter) -> np.ndarray:
    """Returns the classifier's epoch-averaged softmax on the training images (N×K), from the cache or trained now."""
    device_type = resolve_device(device).type
    path = Path(cache_dir) / "idn" / f"{bench.name}-{len(bench.train_labels)}-{cache_key(bench, seed, device_type)}.npy"
    if path.is_file():
        reporter.log(f"idn: reusing the classifier's softmax from {path}")
        return np.load(path)
    reporter.log(
        f"idn: training the classifier that decides which labels flip ({CLASSIFIER_EPOCHS} epochs, once; "
        f"cached in {path.parent})"
    )
    config = RunConfig(method="ce", epochs=CLASSIFIER_EPOCHS, device=device, seed=seed + SEED_OFFSET).validate()
    data = TrainData(
        images=bench.train_images,
        labels=bench.train_labels,
        n_classes=len(bench.class_names),
        flip=bench.flip,
        fingerprint=f"idn:{bench.name}",
    )
    method = fit(data, config, reporter, method_cls=SoftmaxAverage).method
    mean_probs = method.mean_probs()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, mean_probs)
    return mean_probs


def cache_key(bench: BenchmarkData, seed: int, device_type: str) -> str:
    """Returns the hex key of a classifier table: images, true labels, class names, seed, recipe and device type."""
    digest = hashlib.sha256(
        f"{RECIPE}|{CLASSIFIER_EPOCHS}|{seed + SEED_OFFSET}|{device_type}|{'|'.join(bench.class_names)}".encode()
    )
    digest.update(np.ascontiguousarray(bench.train_labels, dtype=np.int64).tobytes())
    digest.update(np.ascontiguousarray(bench.train_images).tobytes())
    return digest.hexdigest()[:16]
