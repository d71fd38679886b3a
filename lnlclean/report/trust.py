"""When an audit's verdicts should not be trusted: the warnings of summary.json, the console and the report.

Each check looks only at the audit itself (no true labels), and each warning says what is
wrong and what to do:

- ``most-wrong``: more than half of the labels are flagged, or estimated wrong. Either most
  labels are wrong, or the network has not learned enough to judge them. On CIFAR-10 with
  40 % class-pair flips (5,000 images, 20 epochs) every method estimated 0.6–0.7 against a true
  0.2, and following its suggestions lost 10–28 points of label accuracy.
- ``not-separated``: the calibration mixture (see :mod:`lnlclean.calibration`) did not split
  the samples into those whose network prefers another label and those whose network prefers
  their own; it split sure from unsure ones, so the noise rate and the flags measure the
  network's doubt, not wrong labels. When the network predicts most given labels (``MEMORISED``)
  it has memorised them, and the message says to train fewer epochs instead of more.

Under the first two (``BLOCKING``) ``relabel`` changes no label and marks the flagged rows for
review (:func:`trusted`).
- ``weak-fit``: among the labels the audit keeps, the network's own prediction agrees with
  fewer than ``KEPT_AGREEMENT`` of them; it cannot yet tell a wrong label from a hard image.
- ``early-estimate``: the method trained on a noise-rate estimate (ALIM's η, LNL-flywheel's
  1 − γ) whose first value is far from the audit's final estimate, so its early epochs were
  steered by a wrong prior.
- ``still-learning``: the network's predictions were still settling when training ended, so the
  method never left its warm-up (:mod:`lnlclean.methods.phase`) and trained as cross-entropy
  does: its audit is a cross-entropy audit. A 20-epoch run on 5,000 CIFAR-10 photos ends so.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

MOST_WRONG = 0.5
KEPT_AGREEMENT = 0.5
# A not-separated audit whose network predicts this share of all given labels has memorised
# them: 100-epoch `ce` audits of digits predicted 0.84-0.95, under-trained CIFAR-10 audits
# (20 epochs, 5,000 images) 0.21-0.66 (benchmarks/results/verdicts-*-cpu.json).
MEMORISED = 0.8
BLOCKING = ("most-wrong", "not-separated")  # warnings under which relabel changes no label
EARLY_GAP = 0.15  # absolute difference between a method's first noise-rate estimate and the audit's
REMEDY = "train longer (--epochs), on a GPU, or give --noise-rate if you know the share of wrong labels"
# Heads on frozen embeddings train to convergence in seconds: more epochs do not sharpen them, a
# larger input does (224 px raised the best F1 by 0.01-0.03 on CIFAR-10, docs/training.md).
FROZEN_REMEDY = (
    "embed larger images (--image-size 224), fine-tune the whole network on a GPU (--features finetune), "
    "or give --noise-rate if you know the share of wrong labels"
)


def audit_warnings(frame: pd.DataFrame, summary: dict) -> list[dict]:
    """Returns the warnings of an audit (see the module docs) as ``{"code", "message"}`` dicts, most serious first.

    `frame` is the audit table; `summary` holds at least ``noise_rate`` and, for a trained
    method, ``calibration`` and ``method_summary`` (see :func:`lnlclean.report.audit.summarize`).
    """
    found = []
    advice = remedy(summary)
    flagged = frame["is_label_issue"].to_numpy(dtype=bool)
    share = max(float(flagged.mean()) if len(flagged) else 0.0, summary["noise_rate"])
    if share > MOST_WRONG:
        found.append(
            (
                "most-wrong",
                f"the audit finds {share:.0%} of the labels wrong; either most labels are wrong or the network has not "
                f"learned enough to judge them, so relabel changes none: check some flagged images, or {advice}",
            )
        )
    calibration = summary.get("calibration") or {}
    if calibration.get("separated") is False:
        separation_advice = advice
        if "predicted_label" in frame.columns and agreement(frame, np.ones(len(frame), dtype=bool)) >= MEMORISED:
            separation_advice = (
                "the network predicts most given labels, wrong ones included: it has memorised them; train fewer "
                "epochs (--epochs) or use a noise-robust method (--method alim)"
            )
        found.append(
            (
                "not-separated",
                "the network does not clearly prefer another label for any group of samples: the noise rate and "
                "the flags measure its doubt rather than wrong labels, and relabel changes none; " + separation_advice,
            )
        )
    kept = ~flagged
    if kept.any() and "predicted_label" in frame.columns:
        kept_agreement = agreement(frame, kept)
        if kept_agreement < KEPT_AGREEMENT:
            found.append(
                (
                    "weak-fit",
                    f"the network predicts only {kept_agreement:.0%} of the labels the audit keeps, too few to tell a "
                    f"wrong label from a hard image; {advice}",
                )
            )
    early = early_estimate(summary.get("method_summary") or {})
    if early is not None and abs(early[1] - summary["noise_rate"]) > EARLY_GAP:
        epoch, value = early
        found.append(
            (
                "early-estimate",
                f"the method's first noise-rate estimate ({value:.2f} after epoch {epoch}) is far from the audit's "
                f"({summary['noise_rate']:.2f}), and it steered the early training; {advice}",
            )
        )
    if still_learning(summary.get("method_summary") or {}):
        found.append(
            (
                "still-learning",
                "the network's predictions were still settling when training ended, so the method never left its "
                "warm-up and trained as plain cross-entropy does; train longer (--epochs) for its noise-robust phase",
            )
        )
    return [{"code": code, "message": message} for code, message in found]


def remedy(summary: dict) -> str:
    """Returns what the warnings advise for the run `summary` describes: a sharper embedding for heads on
    frozen features (its ``settings``), else longer training."""
    return FROZEN_REMEDY if (summary.get("settings") or {}).get("features") == "frozen" else REMEDY


def still_learning(method_summary: dict) -> bool:
    """Returns True when a method with a warm-up (a ``warmup`` entry) never ended it (the entry is None)."""
    return "warmup" in method_summary and method_summary["warmup"] is None


def agreement(frame: pd.DataFrame, rows: np.ndarray) -> float:
    """Returns the share of the audit's `rows` (bool mask) whose predicted label is the given label."""
    predicted, given = frame["predicted_label"].to_numpy(dtype=object), frame["given_label"].to_numpy(dtype=object)
    return float((predicted[rows] == given[rows]).mean())


def trusted(warnings: list[dict]) -> bool:
    """Returns False when `warnings` (as :func:`audit_warnings`
    returns them) hold one under which relabel changes no label.
    """
    return not any(warning["code"] in BLOCKING for warning in warnings)


def early_estimate(method_summary: dict) -> tuple[int, float] | None:
    """Returns (epoch, value) of the first noise-rate estimate a
    method trained on (its ``noise_rate_per_epoch``), or None.
    """
    per_epoch = method_summary.get("noise_rate_per_epoch") or []
    for epoch, value in enumerate(per_epoch, start=1):
        if value is not None and np.isfinite(value):
            return epoch, float(value)
    return None
