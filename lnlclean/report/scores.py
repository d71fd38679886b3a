"""Scores of a benchmark run: how well an audit's verdicts find and fix labels known to be wrong.

A benchmark injects noise, so the true labels are known: :func:`score_verdicts` scores a
method's verdicts against them, :func:`score_consensus` the consensus of several runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import __version__
from . import metrics
from .consensus import CONSENSUS, Verdicts, combine
from .trust import trusted
from .verdicts import relabels


@dataclass
class NoisyLabels:
    """The labels of a benchmark run: given (noise injected), true, candidate
    sets (or None), which given labels are wrong, and the number of classes.
    """

    given: np.ndarray
    true_labels: np.ndarray
    candidates: np.ndarray | None
    is_noisy: np.ndarray
    n_classes: int


@dataclass
class BenchmarkRun:
    """A scored benchmark run: its JSON entry (`scores`), the method's
    per-sample verdicts, and the labels they are scored against.
    """

    scores: dict
    verdicts: Verdicts
    labels: NoisyLabels


def score_verdicts(verdicts: Verdicts, labels: NoisyLabels, threshold: float, trusted: bool = True) -> dict:
    """Returns how well `verdicts` find and fix the wrong labels of `labels`.

    Holds true and estimated noise rate (the mean of 1 − clean_prob) and the flagged share,
    detection precision/recall/F1/AUROC, relabel accuracy on flagged noisy samples, label
    accuracy before and after ``relabel`` (which changes nothing when the audit is not
    `trusted`; with candidate sets: of a random candidate before, of every suggestion after),
    how many labels it changed and the share of wrong labels it fixed.
    """
    given, true_labels, candidates, is_noisy = labels.given, labels.true_labels, labels.candidates, labels.is_noisy
    changed = relabels(
        verdicts.flagged,
        verdicts.clean_prob,
        verdicts.suggested_prob,
        verdicts.suggested == verdicts.predicted,
        trusted,
    )
    if candidates is None:
        before = metrics.label_accuracy(given, true_labels)
        after = metrics.corrected_labels(given, verdicts.suggested, changed)
    else:
        rows = np.arange(len(given))
        before = float(np.mean(candidates[rows, true_labels] / candidates.sum(axis=1)))
        after = verdicts.suggested  # the method's choice within or outside each set, for every sample
    return {
        "true_noise_rate": float(is_noisy.mean()),
        "estimated_noise_rate": float(1.0 - np.mean(verdicts.clean_prob)),
        "flagged_rate": float(np.mean(verdicts.flagged)),
        **metrics.detection_metrics(is_noisy, verdicts.clean_prob, threshold, verdicts.flagged),
        "relabel_accuracy": metrics.relabel_accuracy(
            true_labels, given, verdicts.suggested, verdicts.flagged, is_noisy
        ),
        "label_accuracy_before": before,
        "label_accuracy_after": metrics.label_accuracy(after, true_labels),
        "relabelled": int(changed.sum()),
        "wrong_labels_fixed": metrics.fixed_share(given, after, true_labels),
    }


def disagreement_scores(probs: np.ndarray, labels: NoisyLabels) -> dict:
    """Returns the flagged share, precision, recall and F1 of the argmax-disagreement rule (flag
    where the network's argmax is not the given label) on the same probabilities, for comparison.
    """
    flagged = np.asarray(probs).argmax(axis=1) != labels.given
    scores = metrics.detection_metrics(labels.is_noisy, (~flagged).astype(np.float64), 0.5, flagged)
    return {"flagged_rate": float(flagged.mean()), **{key: scores[key] for key in ("precision", "recall", "f1")}}


def score_consensus(runs: list[BenchmarkRun], threshold: float = 0.5) -> dict:
    """Returns the benchmark entry of the consensus of `runs` (same dataset, noise and seed; see
    :mod:`lnlclean.report.consensus`).

    Scored like a method; ``method`` is ``consensus(<member>+<member>…)``, ``seconds`` the sum of
    the members', ``test_accuracy`` None (no network of its own), and ``members`` each member's F1.
    Its relabel changes nothing unless every member's audit is trusted.
    """
    combined = combine([run.verdicts for run in runs], runs[0].labels.n_classes, threshold)
    names = "+".join(run.scores["method"] for run in runs)
    verdicts = Verdicts(
        CONSENSUS,
        combined["clean_prob"],
        combined["is_label_issue"],
        combined["suggested_label"],
        combined["suggested_prob"],
        combined["predicted_label"],
    )
    first = runs[0].scores
    return {
        **{key: first[key] for key in ("dataset", "noise", "partial_rate", "seed", "epochs", "backbone", "n_train")},
        "method": f"{CONSENSUS}({names})",
        **score_verdicts(verdicts, runs[0].labels, threshold, all(trusted(run.scores["warnings"]) for run in runs)),
        "test_accuracy": None,
        "seconds": sum(run.scores["seconds"] for run in runs),
        "seconds_per_epoch": None,
        "device": first["device"],
        "lnlclean_version": __version__,
        "members": {run.scores["method"]: run.scores["f1"] for run in runs},
    }
