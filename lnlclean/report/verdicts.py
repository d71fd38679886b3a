"""A method's verdict on every sample: how likely its label is right, whether it is an issue, what it should be,
and whether to change it.

The verdict is computed after training, from the method's audit columns and its final
probabilities, so it is a setting of the audit, not of the run: ``--threshold`` can change
on ``--resume`` and on ``relabel --from-audit`` without training again.

- ``label_score``: the method's own signal that the given label is right (higher is more
  likely right), as the method defines it (the network's probability of the given label, ALR's
  refined target, ALIM's r / (r + λ), …). It ranks samples; it is not a probability.
- ``clean_prob``: the calibrated probability that the given label is right: the mixture
  posterior of :mod:`lnlclean.calibration` on the method's final probabilities, the same rule
  for every method. A sample whose belief prefers its given
  label over every other (log margin ≥ 0) never gets a clean_prob below 0.5: a label the
  network itself would choose is at least as likely right as wrong. When the mixture's low
  component is not below zero (``separated`` False) it gathered hard but right labels, not
  wrong ones, and such a sample gets clean_prob 1: only labels the network argues against can
  be doubted.
- ``is_label_issue``: ``clean_prob < threshold``.
- ``suggested_label``: the label to use if the given one is wrong. It is never the given label:
  the method's own suggestion where it differs from the given label, else the most probable
  other label of the belief. (With candidate-label sets it is the method's choice, inside or
  outside the set.)
- ``suggested_prob``: the probability that the suggested label is right, (1 − clean_prob) × the
  suggestion's share of the belief outside the given label.

:func:`relabels` decides which labels ``relabel`` changes: a flagged label is replaced only when
its suggestion is more likely right than wrong (``suggested_prob > 0.5``) and is what the
network predicts, so on calibrated verdicts every change is expected to fix a label; the other
flagged rows are marked for review. (A method may suggest a label its network does not
predict, such as LNL-flywheel's refurbisher; such a row is reviewed.)
Changing every flagged label whose suggestion merely beats the given label raised label
accuracy more under symmetric noise but lowered it under instance-dependent noise for two
methods (CIFAR-10, 5,000 images, 20 epochs; see docs/calibration.md). An audit with a warning
that its verdicts cannot be told from the network's doubt changes none (see
:mod:`lnlclean.report.trust`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..calibration import debiased, log_margins, mixture_fit


@dataclass
class VerdictFit:
    """How the clean probabilities were obtained: the noise rate the mixture estimated, its
    components' means and whether they separate (see :class:`~lnlclean.calibration.MixtureFit`).
    """

    noise_rate: float
    separated: bool
    low_mean: float
    high_mean: float


def method_verdicts(
    columns: dict[str, np.ndarray],
    belief: np.ndarray,
    given_labels: np.ndarray,
    threshold: float,
    candidates: np.ndarray | None = None,
) -> tuple[dict[str, np.ndarray], VerdictFit]:
    """Returns the method's audit `columns` with the verdict columns of the module docs set, and how clean_prob was
    fitted.

    `columns` is the method's ``audit()`` output (its ``clean_prob`` becomes ``label_score``);
    `belief` (N×K) is what the method believes of each sample's class; with `candidates`
    (candidate-label sets the method trained on) a label is right when the true class is in its set.
    """
    given = np.asarray(given_labels, dtype=np.int64)
    columns = dict(columns)
    score = np.asarray(columns.pop("clean_prob"), dtype=np.float64)
    margins = log_margins(belief, given, candidates)
    mixture = mixture_fit(margins)
    fit = VerdictFit(mixture.noise_rate, mixture.separated, mixture.low_mean, mixture.high_mean)
    clean = mixture.clean_prob
    prefers_given = margins >= 0
    clean = np.where(prefers_given, 1.0 if not mixture.separated else np.maximum(clean, 0.5), clean)
    suggested = np.asarray(columns.pop("suggested_label"), dtype=np.int64)
    if candidates is None:  # a candidate set has no one given label to differ from; the method's choice stands
        suggested = suggested_labels(suggested, belief, given)
    columns.pop("suggested_prob", None)
    columns.pop("is_label_issue", None)
    verdict = {
        "label_score": score,
        "clean_prob": clean,
        "is_label_issue": clean < threshold,
        "suggested_label": suggested,
        "suggested_prob": (1.0 - clean) * suggestion_share(belief, given, suggested),
    }
    return {**verdict, **columns}, fit


def suggested_labels(suggested: np.ndarray, belief: np.ndarray, given_labels: np.ndarray) -> np.ndarray:
    """Returns `suggested` with every suggestion equal to the given
    label replaced by the most probable other label of `belief`.
    """
    others = np.array(belief, dtype=np.float64)
    rows = np.arange(len(others))
    others[rows, given_labels] = -np.inf
    return np.where(suggested == given_labels, others.argmax(axis=1), suggested)


def suggestion_share(belief: np.ndarray, given_labels: np.ndarray, suggested: np.ndarray) -> np.ndarray:
    """Returns the share of each sample's debiased belief outside
    its given label that sits on its suggested label (float, N).
    """
    belief = debiased(belief)
    rows = np.arange(len(belief))
    outside = np.clip(1.0 - belief[rows, given_labels], 1e-12, None)
    return np.clip(belief[rows, suggested] / outside, 0.0, 1.0)


def relabels(
    flagged: np.ndarray,
    clean_prob: np.ndarray,
    suggested_prob: np.ndarray,
    network_agrees: np.ndarray,
    trusted: bool = True,
) -> np.ndarray:
    """Returns which labels ``relabel`` replaces by their suggestion (bool, N; see the module docs).

    A flagged label is replaced when its suggestion is more likely right than wrong
    (``suggested_prob > 0.5``, so also more likely right than the given label) and the network
    predicts it (`network_agrees`: the suggestion is the audit's ``predicted_label``); none is
    replaced when the audit is not `trusted` (see :func:`lnlclean.report.trust.trusted`).
    """
    if not trusted:
        return np.zeros(len(clean_prob), dtype=bool)
    suggested_prob = np.asarray(suggested_prob, dtype=np.float64)
    likely = (suggested_prob > 0.5) & (suggested_prob > np.asarray(clean_prob, dtype=np.float64))
    return np.asarray(flagged, dtype=bool) & likely & np.asarray(network_agrees, dtype=bool)


def flags(clean_prob: np.ndarray, threshold: float) -> np.ndarray:
    """Returns which samples are label issues (bool, N): ``clean_prob < threshold``."""
    return np.asarray(clean_prob, dtype=np.float64) < threshold
