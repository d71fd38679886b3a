"""Detection and relabelling metrics on hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from lnlclean.report.metrics import corrected_labels, detection_metrics, label_accuracy, relabel_accuracy


def test_four_sample_case_by_hand():
    is_noisy = np.array([True, False, True, False])
    clean_prob = np.array([0.2, 0.3, 0.6, 0.9])
    m = detection_metrics(is_noisy, clean_prob, threshold=0.5)
    # flagged: samples 0 and 1; true positive: sample 0
    assert m["precision"] == pytest.approx(0.5)
    assert m["recall"] == pytest.approx(0.5)
    assert m["f1"] == pytest.approx(0.5)
    # scores 1 - p = [.8, .7, .4, .1]; noisy {.8, .4} vs clean {.7, .1}:
    # .8>.7, .8>.1, .4<.7, .4>.1 -> 3 of 4 pairs ranked right
    assert m["auroc"] == pytest.approx(0.75)
    assert all(isinstance(v, float) for v in m.values())


def test_other_threshold_by_hand():
    m = detection_metrics([1, 0, 1, 0], [0.2, 0.3, 0.6, 0.9], threshold=0.7)
    # flagged 0, 1, 2; true positives 0, 2
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(1.0)
    assert m["f1"] == pytest.approx(2 * (2 / 3) * 1 / (2 / 3 + 1))
    assert m["auroc"] == pytest.approx(0.75)  # AUROC does not depend on the threshold


def test_threshold_is_strict():
    m = detection_metrics([True, False], [0.5, 0.9], threshold=0.5)
    assert m["precision"] == 0.0 and m["recall"] == 0.0 and m["f1"] == 0.0
    assert m["auroc"] == pytest.approx(1.0)


def test_auroc_with_ties_by_hand():
    # scores [.6, .6, .2, .9]; noisy {.6, .9} vs clean {.6, .2}: tie counts one half
    m = detection_metrics([1, 0, 0, 1], [0.4, 0.4, 0.8, 0.1])
    assert m["auroc"] == pytest.approx(3.5 / 4)


def test_perfect_and_inverted_ranking():
    assert detection_metrics([1, 1, 0, 0], [0.1, 0.2, 0.8, 0.9])["auroc"] == pytest.approx(1.0)
    inverted = detection_metrics([1, 1, 0, 0], [0.8, 0.9, 0.1, 0.2])
    assert inverted["auroc"] == pytest.approx(0.0)
    # everything clean flagged, nothing noisy flagged
    assert inverted["precision"] == 0.0 and inverted["recall"] == 0.0 and inverted["f1"] == 0.0


def test_nothing_flagged():
    m = detection_metrics([True, False, True], [0.9, 0.8, 0.7], threshold=0.5)
    assert m["precision"] == 0.0
    assert m["recall"] == 0.0
    assert m["f1"] == 0.0
    # 1 - p: noisy {.1, .3} vs clean {.2}: .1<.2, .3>.2
    assert m["auroc"] == pytest.approx(0.5)


def test_nothing_noisy():
    m = detection_metrics([False, False, False], [0.1, 0.9, 0.3])
    assert m["precision"] == 0.0  # two flagged, none truly noisy
    assert m["recall"] == 0.0
    assert m["f1"] == 0.0
    assert m["auroc"] is None


def test_everything_noisy():
    m = detection_metrics([True, True], [0.1, 0.9])
    assert m["precision"] == pytest.approx(1.0)
    assert m["recall"] == pytest.approx(0.5)
    assert m["f1"] == pytest.approx(2 / 3)
    assert m["auroc"] is None


def test_relabel_accuracy_by_hand():
    true = np.array([0, 1, 2, 0, 1])
    given = np.array([1, 1, 0, 2, 1])  # noisy: 0, 2, 3
    suggested = np.array([0, 2, 1, 0, 0])
    flagged = np.array([True, True, True, False, False])
    # flagged and noisy: 0 (suggested right), 2 (wrong); 3 not flagged, 1 not noisy
    assert relabel_accuracy(true, given, suggested, flagged) == pytest.approx(0.5)
    flagged_all = np.ones(5, dtype=bool)
    # noisy 0 right, 2 wrong, 3 right
    assert relabel_accuracy(true, given, suggested, flagged_all) == pytest.approx(2 / 3)


def test_relabel_accuracy_none_when_no_flagged_noisy():
    true = np.array([0, 1, 2])
    given = np.array([0, 2, 2])  # noisy: 1
    suggested = np.array([1, 1, 1])
    assert relabel_accuracy(true, given, suggested, np.array([True, False, True])) is None
    assert relabel_accuracy(true, true, suggested, np.ones(3, dtype=bool)) is None


def test_corrected_labels():
    given = np.array([0, 1, 2, 3])
    suggested = np.array([9, 8, 7, 6])
    out = corrected_labels(given, suggested, np.array([1, 0, 1, 0]))
    np.testing.assert_array_equal(out, [9, 1, 7, 3])
    np.testing.assert_array_equal(corrected_labels(given, suggested, np.zeros(4, dtype=bool)), given)


def test_label_accuracy():
    assert label_accuracy(np.array([0, 1, 2, 2]), np.array([0, 1, 1, 2])) == pytest.approx(0.75)
    assert label_accuracy([3, 3], [3, 3]) == 1.0
    assert label_accuracy([0, 1], [1, 0]) == 0.0
    assert isinstance(label_accuracy([0], [0]), float)


def test_end_to_end_metric_chain():
    true = np.array([0, 0, 1, 1, 2, 2])
    given = np.array([0, 1, 1, 0, 2, 2])
    suggested = np.array([0, 0, 1, 1, 2, 1])
    clean_prob = np.array([0.9, 0.1, 0.8, 0.2, 0.95, 0.3])
    flagged = clean_prob < 0.5
    fixed = corrected_labels(given, suggested, flagged)
    np.testing.assert_array_equal(fixed, [0, 0, 1, 1, 2, 1])
    assert label_accuracy(given, true) == pytest.approx(4 / 6)
    assert label_accuracy(fixed, true) == pytest.approx(5 / 6)
    assert relabel_accuracy(true, given, suggested, flagged) == pytest.approx(1.0)
    m = detection_metrics(given != true, clean_prob)
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(1.0)
    assert m["auroc"] == pytest.approx(1.0)
