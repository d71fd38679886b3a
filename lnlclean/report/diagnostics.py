"""Where a training run stands against the true labels after each epoch (benchmarks with ``--diagnose``).

A benchmark knows which labels are wrong, so it can show what a method's network believes at
every epoch, not only at the end. With ``--diagnose`` the engine runs a clean pass over the
training images after every epoch (or reuses the one the method ran) and logs, in the run's
``history`` and the report's "against the true labels" chart:

- ``truth_accuracy``: share of training images whose predicted class is their true label.
- ``truth_memorised``: share of the wrong labels the network predicts, i.e. has learned. It
  stays low during early learning and climbs when the network starts memorising the noise.
- ``truth_corrected``: share of the wrong labels whose predicted class is the true label.
- ``truth_verdict_f1`` and ``truth_verdict_auroc``: the calibrated verdict
  (:mod:`lnlclean.report.verdicts`) of the network as it is after the epoch, scored as a
  detector of the wrong labels: what the audit would say had training stopped there.
- ``truth_estimated_noise_rate``: that verdict's noise-rate estimate (the true rate is in the
  run's scores).

The pass costs a forward pass over the training images; its seconds are logged as
``diagnose_seconds`` and left out of the epoch's ``seconds``.
"""

from __future__ import annotations

import numpy as np

from .metrics import detection_metrics
from .verdicts import method_verdicts

PREFIX = "truth_"  # every key of :func:`epoch_diagnostics` starts with it


def epoch_diagnostics(
    probs: np.ndarray,
    given_labels: np.ndarray,
    true_labels: np.ndarray,
    is_noisy: np.ndarray,
    threshold: float,
    candidates: np.ndarray | None = None,
) -> dict[str, float | None]:
    """Returns the diagnostics of the module docs for the network's probabilities `probs` (N×K) after an epoch.

    `is_noisy` marks the samples whose given label (or candidate set, with `candidates`) is
    wrong; `threshold` is the run's ``--threshold``. Shares over an empty set are None.
    """
    given, true = np.asarray(given_labels, dtype=np.int64), np.asarray(true_labels, dtype=np.int64)
    noisy = np.asarray(is_noisy, dtype=bool)
    predicted = probs.argmax(axis=1)
    own = {"clean_prob": probs[np.arange(len(given)), given], "suggested_label": predicted}
    verdict, fit = method_verdicts(own, probs, given, threshold, candidates)
    detection = detection_metrics(noisy, verdict["clean_prob"], threshold)
    on_noisy = lambda hits: float(hits[noisy].mean()) if noisy.any() else None  # noqa: E731
    return {
        f"{PREFIX}accuracy": float((predicted == true).mean()),
        f"{PREFIX}memorised": on_noisy(predicted == given),
        f"{PREFIX}corrected": on_noisy(predicted == true),
        f"{PREFIX}verdict_f1": detection["f1"],
        f"{PREFIX}verdict_auroc": detection["auroc"],
        f"{PREFIX}estimated_noise_rate": fit.noise_rate,
    }


def describe(epoch: int, diagnostics: dict[str, float | None]) -> str:
    """Returns one log line of an epoch's diagnostics, e.g. ``epoch
    3 against the truth: accuracy 0.52, memorised 0.08, …``.
    """
    parts = [
        f"{key.removeprefix(PREFIX).replace('_', ' ')} {value:.3f}"
        for key, value in diagnostics.items()
        if value is not None
    ]
    return f"epoch {epoch} against the truth: " + ", ".join(parts)
