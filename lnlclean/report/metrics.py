"""Detection and relabelling metrics against known true labels (benchmarks).

A sample is *noisy* when its given label differs from its true label, and *flagged* when its
``clean_prob`` is below the threshold. Noisy is the positive class throughout.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score


def detection_metrics(
    is_noisy: np.ndarray,
    clean_prob: np.ndarray,
    threshold: float = 0.5,
    flagged: np.ndarray | None = None,
) -> dict[str, float | None]:
    """Returns precision, recall and F1 of the flags as a detector of noisy labels, and AUROC.

    The flags are `flagged` when given (a method that decides them itself), else
    ``clean_prob < threshold``. AUROC ranks samples by ``1 − clean_prob``; it is None when only
    one kind of sample exists. Precision (recall) is 0.0 when nothing is flagged (nothing is noisy).
    """
    is_noisy = np.asarray(is_noisy, dtype=bool)
    flagged = np.asarray(clean_prob) < threshold if flagged is None else np.asarray(flagged, dtype=bool)
    true_positive = int(np.sum(flagged & is_noisy))
    precision = true_positive / flagged.sum() if flagged.any() else 0.0
    recall = true_positive / is_noisy.sum() if is_noisy.any() else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    auroc = None
    if 0 < is_noisy.sum() < len(is_noisy):
        auroc = float(roc_auc_score(is_noisy, 1.0 - np.asarray(clean_prob, dtype=np.float64)))
    return {"precision": float(precision), "recall": float(recall), "f1": float(f1), "auroc": auroc}


def relabel_accuracy(
    true_labels: np.ndarray,
    given_labels: np.ndarray,
    suggested: np.ndarray,
    flagged: np.ndarray,
    is_noisy: np.ndarray | None = None,
) -> float | None:
    """Returns the share of flagged, truly noisy samples whose suggested label is the true one (None if there are none).

    A sample is noisy when its given label differs from the true one, or where `is_noisy` says
    so when given (candidate sets: the true label is outside the set).
    """
    if is_noisy is None:
        is_noisy = np.asarray(given_labels) != np.asarray(true_labels)
    target = np.asarray(flagged, dtype=bool) & np.asarray(is_noisy, dtype=bool)
    if not target.any():
        return None
    return float(np.mean(np.asarray(suggested)[target] == np.asarray(true_labels)[target]))


def corrected_labels(given_labels: np.ndarray, suggested: np.ndarray, changed: np.ndarray) -> np.ndarray:
    """Returns the labels after ``relabel``: suggested where `changed`
    (see :func:`lnlclean.report.verdicts.relabels`), given elsewhere.
    """
    return np.where(np.asarray(changed, dtype=bool), suggested, given_labels)


def fixed_share(given_labels: np.ndarray, corrected: np.ndarray, true_labels: np.ndarray) -> float | None:
    """Returns the share of the wrong given labels that `corrected` makes right (None when no label is wrong)."""
    wrong = np.asarray(given_labels) != np.asarray(true_labels)
    if not wrong.any():
        return None
    return float(np.mean(np.asarray(corrected)[wrong] == np.asarray(true_labels)[wrong]))


def label_accuracy(labels: np.ndarray, true_labels: np.ndarray) -> float:
    """Returns the share of `labels` equal to `true_labels`."""
    return float(np.mean(np.asarray(labels) == np.asarray(true_labels)))
