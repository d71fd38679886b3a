"""Calibrated clean probabilities and noise-rate estimates from what a network believes.

A network's probability of the given label is not the probability that the label is right: a
network that is still learning spreads its probability over several classes (on CIFAR-10 after
20 epochs most labels get less than 0.5, so "probability below 0.5" flags most of them), and a
class that noise makes rarer among the labels gets less probability everywhere. What separates
wrong labels from right ones is whether the network prefers *another* label, and by how much.

For each sample, with belief p (K probabilities: the network's, or the method's soft label):

1. the class prior that the given labels baked into p is divided out, p̃_k ∝ p_k / p̄_k with p̄_k
   the mean of p_k over all samples (as ProMix debiases its pseudo labels);
2. the log margin z = log p̃[given] − log max_{k ≠ given} p̃_k measures how strongly the given
   label beats the best other one (ALIM's log r);
3. a two-component Gaussian mixture is fitted to z over all samples; the posterior of the
   component with the higher mean is ``clean_prob``, and the other component's weight is the
   estimated noise rate. A wrong label is a sample whose network clearly prefers another class;
   a hard but right one sits near z = 0, with the right labels.

:func:`mixture_fit` also says whether the components fall on either side of zero; when they
do not (``separated`` False), the network cannot tell wrong labels from hard images yet, and
the audit warns (see :mod:`lnlclean.report.trust`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

EPSILON = 1e-6  # probabilities are clipped here before the log, so a 0 does not dominate the fit
TAIL = 0.005  # the share of margins at each end clipped before the fit, so a few outliers do not take a component


def debiased(belief: np.ndarray) -> np.ndarray:
    """Returns `belief` (N×K rows summing to 1) with the mean
    of each class divided out and the rows normalised again.
    """
    belief = np.clip(np.asarray(belief, dtype=np.float64), EPSILON, None)
    belief = belief / belief.mean(axis=0, keepdims=True)
    return belief / belief.sum(axis=1, keepdims=True)


def log_margins(belief: np.ndarray, given_labels: np.ndarray, candidates: np.ndarray | None = None) -> np.ndarray:
    """Returns z = log p[given] − log max_{k≠given} p_k of each row of `belief` (N), after :func:`debiased`.

    With `candidates` (N×K {0,1} candidate-label sets) the given label is the set:
    z = log max_{k∈S} p_k − log max_{k∉S} p_k (+inf when the set holds every label).
    """
    belief = debiased(belief)
    if candidates is None:
        inside = np.zeros(belief.shape, dtype=bool)
        inside[np.arange(len(belief)), np.asarray(given_labels, dtype=np.int64)] = True
    else:
        inside = np.asarray(candidates, dtype=bool)
    best_inside = np.where(inside, belief, -np.inf).max(axis=1)
    best_outside = np.where(inside, 0.0, belief).max(axis=1)  # 0 (log −inf) when the set holds every label
    with np.errstate(divide="ignore"):
        return np.log(best_inside) - np.log(best_outside)


@dataclass
class MixtureFit:
    """A two-component fit to the log margins.

    Attributes:
        clean_prob: posterior of the higher component for each sample (float, N).
        noise_rate: the estimated share of wrong labels: the mean of 1 − clean_prob.
        low_mean, high_mean: the components' means (log margins).
        separated: whether the components lie on either side of zero: the low one gathers
            samples whose network prefers another label, the high one samples whose network
            prefers their own. When False the fit split sure from unsure samples (both above
            zero) or the network argues against most labels (both below), not right from wrong.
    """

    clean_prob: np.ndarray
    noise_rate: float
    low_mean: float
    high_mean: float
    separated: bool


def mixture_fit(margins: np.ndarray) -> MixtureFit:
    """Returns the two-component Gaussian fit to `margins` (see the module docs); all clean when they do not vary."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import GaussianMixture

    margins = np.nan_to_num(np.asarray(margins, dtype=np.float64), posinf=np.log(1 / EPSILON), neginf=np.log(EPSILON))
    low, high = np.quantile(margins, [TAIL, 1 - TAIL]) if len(margins) else (0.0, 0.0)
    clipped = np.clip(margins, low, high)[:, None]
    if len(margins) < 4 or high - low < 1e-9:
        return MixtureFit(np.ones(len(margins)), 0.0, float(low), float(high), False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        mixture = GaussianMixture(2, max_iter=200, tol=1e-4, reg_covar=1e-3, random_state=0).fit(clipped)
    means = mixture.means_.ravel()
    clean = mixture.predict_proba(clipped)[:, means.argmax()]
    return MixtureFit(
        clean, float(1.0 - clean.mean()), float(means.min()), float(means.max()), bool(means.min() < 0.0 < means.max())
    )


def clean_probability(belief: np.ndarray, given_labels: np.ndarray, candidates: np.ndarray | None = None) -> MixtureFit:
    """Returns the mixture fit of the log margins of `belief` (N×K) for
    `given_labels` (or `candidates`): clean_prob and the noise rate.
    """
    return mixture_fit(log_margins(belief, given_labels, candidates))
