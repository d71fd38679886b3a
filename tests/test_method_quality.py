"""Every noise-robust method beats plain cross-entropy on noisy digits (600-digit subset, 60 epochs)."""

from __future__ import annotations

import pytest

from lnlclean.methods import METHODS

ROBUST_METHODS = sorted(name for name in METHODS if name != "ce")


@pytest.mark.parametrize("method", ROBUST_METHODS)
def test_method_beats_cross_entropy_on_symmetric_noise(digits_benchmark, method):
    ce, robust = digits_benchmark("ce"), digits_benchmark(method)
    assert robust["f1"] >= 0.9 and robust["test_accuracy"] >= 0.9
    assert robust["f1"] >= ce["f1"] + 0.1
