"""Instance-dependent noise (idnNN): the flipping rule on hand-built tables, and the cached classifier on digits."""

from __future__ import annotations

import numpy as np
import pytest

from lnlclean.data.datasets import load_benchmark
from lnlclean.data.noise import NoiseSpec, instance_dependent_noise, parse_noise_spec
from lnlclean.idn import classifier_probs, idn_labels
from lnlclean.progress import Reporter


def confusion_table(true_labels: np.ndarray, n_classes: int, seed: int = 0) -> np.ndarray:
    """Averaged-softmax stand-in: every class is confused with the next one, some images much more than others."""
    rng = np.random.default_rng(seed)
    probs = np.full((len(true_labels), n_classes), 0.01)
    confusion = rng.uniform(0.0, 0.6, size=len(true_labels))
    probs[np.arange(len(true_labels)), (true_labels + 1) % n_classes] = confusion
    probs[np.arange(len(true_labels)), true_labels] = 1.0 - confusion
    return probs / probs.sum(axis=1, keepdims=True)


def test_parse_idn_spec():
    assert parse_noise_spec("idn40") == NoiseSpec("idn", pytest.approx(0.40))
    assert str(parse_noise_spec("IDN20")) == "idn20"


@pytest.mark.parametrize("rate", [0.0, 0.2, 0.4])
def test_rate_is_exact_in_every_class(rate):
    true_labels = np.repeat(np.arange(4), [50, 80, 30, 41])
    noisy = instance_dependent_noise(true_labels, confusion_table(true_labels, 4), rate, np.random.default_rng(0))
    for k in range(4):
        members = true_labels == k
        assert (noisy[members] != k).sum() == round(rate * members.sum())


def test_flips_follow_the_confusion():
    true_labels = np.repeat(np.arange(5), 200)
    probs = confusion_table(true_labels, 5)
    noisy = instance_dependent_noise(true_labels, probs, 0.3, np.random.default_rng(1))
    flipped = noisy != true_labels
    # every flip goes to the class the image is confused with, never elsewhere
    assert (noisy[flipped] == (true_labels[flipped] + 1) % 5).all()
    confusion = probs[np.arange(len(true_labels)), (true_labels + 1) % 5]
    assert confusion[flipped].mean() > confusion[~flipped].mean() + 0.1
    assert (noisy == true_labels)[confusion < 0.02].mean() > 0.9  # images with almost no confusion rarely flip


def test_deterministic_for_a_seed_and_seed_dependent():
    true_labels = np.repeat(np.arange(3), 100)
    probs = confusion_table(true_labels, 3)
    first = instance_dependent_noise(true_labels, probs, 0.4, np.random.default_rng(7))
    again = instance_dependent_noise(true_labels, probs, 0.4, np.random.default_rng(7))
    other = instance_dependent_noise(true_labels, probs, 0.4, np.random.default_rng(8))
    np.testing.assert_array_equal(first, again)
    assert (first != other).any()


def test_digits_classifier_is_cached_and_its_flips_concentrate(tmp_path):
    bench = load_benchmark("digits")
    reporter = Reporter(quiet=True)
    probs = classifier_probs(bench, seed=0, device="cpu", cache_dir=tmp_path, reporter=reporter)
    cached = list((tmp_path / "idn").glob("digits-*.npy"))
    assert len(cached) == 1 and probs.shape == (len(bench.train_labels), 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-4)
    stamp = cached[0].stat().st_mtime_ns
    noisy = idn_labels(bench, 0.4, seed=0, device="cpu", cache_dir=tmp_path, reporter=reporter)
    assert cached[0].stat().st_mtime_ns == stamp  # reused, not trained again
    flipped = noisy != bench.train_labels
    assert flipped.mean() == pytest.approx(0.4, abs=0.01)
    counts = np.zeros((10, 10))
    np.add.at(counts, (bench.train_labels[flipped], noisy[flipped]), 1)
    # symmetric noise would spread a class's flips over 9 classes (top share ≈ 0.2); these follow the confusion
    top_share = counts.max(axis=1).sum() / counts.sum()
    assert top_share > 0.4
    again = idn_labels(bench, 0.4, seed=0, device="cpu", cache_dir=tmp_path, reporter=reporter)
    np.testing.assert_array_equal(noisy, again)
