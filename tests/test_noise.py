"""Synthetic label noise: spec parsing, symmetric and asymmetric flips, class maps, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from lnlclean.data.noise import (
    ASYMMETRIC_MAPS,
    CIFAR100_SUPERCLASSES,
    NoiseSpec,
    class_transition_map,
    inject_noise,
    parse_noise_spec,
)
from lnlclean.errors import UserError

DIGITS = [str(d) for d in range(10)]
CIFAR10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CIFAR100 = sorted(name for group in CIFAR100_SUPERCLASSES for name in group)


def balanced(n_classes: int, per_class: int, seed: int = 0) -> np.ndarray:
    labels = np.repeat(np.arange(n_classes), per_class)
    return np.random.default_rng(seed).permutation(labels)


# ---------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    "text, kind, rate",
    [
        ("clean", "clean", 0.0),
        ("sym40", "sym", 0.40),
        ("asym20", "asym", 0.20),
        ("sym0", "sym", 0.0),
        ("sym5", "sym", 0.05),
        ("asym99", "asym", 0.99),
        (" SYM40 ", "sym", 0.40),
        ("Clean", "clean", 0.0),
    ],
)
def test_parse_valid(text, kind, rate):
    spec = parse_noise_spec(text)
    assert spec == NoiseSpec(kind, pytest.approx(rate))
    assert spec.kind == kind and spec.rate == pytest.approx(rate)


@pytest.mark.parametrize(
    "text", ["sym", "asym", "sym100", "asym100", "foo", "clean5", "clean0", "", "sym-5", "sym4.5", "40sym", "symm40"]
)
def test_parse_invalid(text):
    with pytest.raises(UserError, match="--noise"):
        parse_noise_spec(text)


@pytest.mark.parametrize("text", ["clean", "sym40", "asym20", "sym5"])
def test_spec_str_round_trip(text):
    assert str(parse_noise_spec(text)) == text


# ---------------------------------------------------------------- clean


def test_clean_returns_copy():
    labels = np.array([0, 1, 2, 1, 0])
    noisy = inject_noise(labels, parse_noise_spec("clean"), ["a", "b", "c"], "whatever", seed=0)
    np.testing.assert_array_equal(noisy, labels)
    assert noisy.dtype == np.int64
    assert not np.shares_memory(noisy, labels)
    noisy[0] = 2
    assert labels[0] == 0


def test_noise_does_not_modify_input():
    labels = balanced(10, 30)
    before = labels.copy()
    inject_noise(labels, parse_noise_spec("sym60"), DIGITS, "digits", seed=1)
    inject_noise(labels, parse_noise_spec("asym40"), DIGITS, "digits", seed=1)
    np.testing.assert_array_equal(labels, before)


# ---------------------------------------------------------------- symmetric


@pytest.mark.parametrize("rate_pct, n", [(40, 1000), (20, 37), (50, 5), (1, 99), (0, 50), (80, 123)])
def test_symmetric_exact_count_never_same(rate_pct, n):
    true = np.random.default_rng(n).integers(0, 10, size=n)
    noisy = inject_noise(true, parse_noise_spec(f"sym{rate_pct}"), DIGITS, "digits", seed=3)
    assert noisy.shape == true.shape and noisy.dtype == np.int64
    assert int(np.sum(noisy != true)) == round(rate_pct / 100 * n)
    assert noisy.min() >= 0 and noisy.max() < 10


def test_symmetric_two_classes_always_swaps():
    true = np.array([0, 1] * 50)
    noisy = inject_noise(true, parse_noise_spec("sym30"), ["x", "y"], "none", seed=0)
    changed = noisy != true
    assert changed.sum() == 30
    np.testing.assert_array_equal(noisy[changed], 1 - true[changed])


def test_symmetric_targets_uniform_over_other_classes():
    n_classes = 5
    true = balanced(n_classes, 4000)
    noisy = inject_noise(true, parse_noise_spec("sym50"), [str(k) for k in range(n_classes)], "x", seed=7)
    changed = noisy != true
    assert changed.sum() == 10000
    # offsets to the new class, 1..K-1, are uniform: each expected 2500 of 10000
    offsets = (noisy[changed] - true[changed]) % n_classes
    counts = np.bincount(offsets, minlength=n_classes)
    assert counts[0] == 0
    assert np.all(np.abs(counts[1:] - 2500) < 250)
    # and per true class the targets are spread over all other classes
    for k in range(n_classes):
        targets = noisy[changed & (true == k)]
        assert set(targets) == set(range(n_classes)) - {k}
    # the flipped samples are spread over the true classes too
    per_class = np.bincount(true[changed], minlength=n_classes)
    assert np.all(np.abs(per_class - 2000) < 250)


# ---------------------------------------------------------------- asymmetric


DIGIT_MAP = {2: 7, 3: 8, 5: 6, 6: 5, 7: 1}


@pytest.mark.parametrize("rate_pct", [20, 40, 45])
def test_asymmetric_digits(rate_pct):
    true = np.random.default_rng(0).integers(0, 10, size=777)
    noisy = inject_noise(true, parse_noise_spec(f"asym{rate_pct}"), DIGITS, "digits", seed=11)
    changed = noisy != true
    assert set(true[changed]) <= set(DIGIT_MAP)
    for source in range(10):
        members = true == source
        if source not in DIGIT_MAP:
            assert not changed[members].any()
            continue
        flipped = changed & members
        assert flipped.sum() == round(rate_pct / 100 * members.sum())
        assert set(noisy[flipped]) == {DIGIT_MAP[source]}
    # overall rate is below the nominal rate
    assert changed.mean() < rate_pct / 100


def test_asymmetric_digits_respects_class_order():
    # classes listed in another order: the map is by name, not by index
    names = ["9", "8", "7", "6", "5", "4", "3", "2", "1", "0"]
    true = np.repeat(np.arange(10), 20)
    noisy = inject_noise(true, parse_noise_spec("asym50"), names, "digits", seed=0)
    changed = noisy != true
    mapping = {names[s]: {names[t] for t in noisy[changed & (true == s)]} for s in set(true[changed])}
    assert mapping == {"2": {"7"}, "3": {"8"}, "5": {"6"}, "6": {"5"}, "7": {"1"}}


def test_asymmetric_cifar10_by_name():
    true = balanced(10, 50)
    noisy = inject_noise(true, parse_noise_spec("asym40"), CIFAR10, "cifar10", seed=2)
    changed = noisy != true
    pairs = {}
    for source in set(true[changed]):
        pairs[CIFAR10[source]] = {CIFAR10[t] for t in noisy[changed & (true == source)]}
        assert (changed & (true == source)).sum() == 20
    assert pairs == {
        "truck": {"automobile"},
        "bird": {"airplane"},
        "deer": {"horse"},
        "cat": {"dog"},
        "dog": {"cat"},
    }
    assert changed.sum() == 5 * 20


def test_cifar100_map_cycles_within_superclass():
    mapping = ASYMMETRIC_MAPS["cifar100"]
    assert len(CIFAR100) == 100 and len(set(CIFAR100)) == 100
    assert set(mapping) == set(CIFAR100)
    assert sorted(mapping.values()) == sorted(CIFAR100)  # a permutation
    group_of = {name: g for g, group in enumerate(CIFAR100_SUPERCLASSES) for name in group}
    for src, dst in mapping.items():
        assert dst != src
        assert group_of[dst] == group_of[src]
    # following the map from any class visits its whole superclass and comes back in 5 steps
    for group in CIFAR100_SUPERCLASSES:
        seen, name = [], group[0]
        for _ in range(len(group)):
            seen.append(name)
            name = mapping[name]
        assert name == group[0] and set(seen) == set(group)


def test_asymmetric_cifar100():
    true = balanced(100, 10)
    noisy = inject_noise(true, parse_noise_spec("asym30"), CIFAR100, "cifar100", seed=5)
    changed = noisy != true
    assert changed.sum() == 100 * 3
    mapping = ASYMMETRIC_MAPS["cifar100"]
    for k in range(100):
        flipped = changed & (true == k)
        assert flipped.sum() == 3
        assert {CIFAR100[t] for t in noisy[flipped]} == {mapping[CIFAR100[k]]}


def test_asymmetric_unknown_dataset():
    with pytest.raises(UserError, match="asymmetric"):
        inject_noise(np.array([0, 1]), parse_noise_spec("asym20"), ["a", "b"], "imagenet", seed=0)


def test_asymmetric_map_missing_source_classes():
    with pytest.raises(UserError, match="lacks: airplane, automobile, bird, deer, dog, horse"):
        inject_noise(np.array([0, 1]), parse_noise_spec("asym20"), ["truck", "cat"], "cifar10", seed=0)


def test_asymmetric_map_missing_target_class():
    names = [n for n in CIFAR10 if n != "automobile"]  # every source class present, one target missing
    true = np.arange(len(names)).repeat(5)
    with pytest.raises(UserError, match="automobile"):
        inject_noise(true, parse_noise_spec("asym20"), names, "cifar10", seed=0)


def test_class_transition_map():
    assert class_transition_map({"b": "a", "c": "b"}, ["a", "b", "c"]) == {1: 0, 2: 1}
    with pytest.raises(UserError, match="z"):
        class_transition_map({"z": "a"}, ["a", "b"])


# ---------------------------------------------------------------- determinism


@pytest.mark.parametrize("spec, dataset", [("sym40", "digits"), ("asym40", "digits"), ("asym40", "cifar10")])
def test_deterministic_in_seed(spec, dataset):
    names = DIGITS if dataset == "digits" else CIFAR10
    true = balanced(10, 40)
    parsed = parse_noise_spec(spec)
    a = inject_noise(true, parsed, names, dataset, seed=123)
    b = inject_noise(true, parsed, names, dataset, seed=123)
    c = inject_noise(true, parsed, names, dataset, seed=124)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
