"""Per-epoch diagnostics against the true labels: the figures
on hand-built probabilities, and a benchmark that logs them.
"""

import numpy as np
import pytest

from lnlclean.config import RunConfig
from lnlclean.data.noise import parse_noise_spec
from lnlclean.jobs.benchmark import run_benchmark_one
from lnlclean.report.diagnostics import describe, epoch_diagnostics
from lnlclean.report.html import statistic_groups


def confident(classes: list[int], n_classes: int = 3, sure: float = 0.9) -> np.ndarray:
    probs = np.full((len(classes), n_classes), (1 - sure) / (n_classes - 1))
    probs[np.arange(len(classes)), classes] = sure
    return probs


TRUE = np.array([0, 1, 2] * 20)
GIVEN = TRUE.copy()
GIVEN[:12] = (TRUE[:12] + 1) % 3  # 12 wrong labels of 60
NOISY = GIVEN != TRUE


def test_a_network_that_predicts_the_truth_corrects_every_wrong_label_and_memorises_none():
    figures = epoch_diagnostics(confident(TRUE), GIVEN, TRUE, NOISY, threshold=0.5)
    assert figures["truth_accuracy"] == 1.0 and figures["truth_corrected"] == 1.0 and figures["truth_memorised"] == 0.0
    assert figures["truth_verdict_f1"] == 1.0 and figures["truth_verdict_auroc"] == 1.0
    assert figures["truth_estimated_noise_rate"] == pytest.approx(0.2, abs=0.02)


def test_a_network_that_memorised_the_given_labels_finds_nothing():
    figures = epoch_diagnostics(confident(GIVEN), GIVEN, TRUE, NOISY, threshold=0.5)
    assert (
        figures["truth_accuracy"] == pytest.approx(0.8)
        and figures["truth_memorised"] == 1.0
        and figures["truth_corrected"] == 0.0
    )
    assert figures["truth_verdict_f1"] == 0.0


def test_shares_over_no_wrong_label_are_none_and_left_out_of_the_line():
    figures = epoch_diagnostics(confident(TRUE), TRUE, TRUE, np.zeros(len(TRUE), dtype=bool), threshold=0.5)
    assert figures["truth_memorised"] is None and figures["truth_verdict_auroc"] is None
    line = describe(3, figures)
    assert line.startswith("epoch 3 against the truth: accuracy 1.000") and "memorised" not in line


def test_the_report_draws_the_diagnostics_in_one_chart_and_the_estimate_in_another():
    history = [
        {
            "epoch": 1,
            "loss": 1.0,
            "fit_given": 0.3,
            "prediction_changes": None,
            "warmup_over": 0.0,
            "lambda": 0.3,
            "truth_accuracy": 0.5,
            "truth_memorised": 0.1,
            "truth_estimated_noise_rate": 0.4,
            "diagnose_seconds": 0.2,
        },
        {"epoch": 2, "loss": 0.9, "fit_given": 0.4, "prediction_changes": 0.2, "warmup_over": 1.0, "lambda": 0.3},
    ]
    assert statistic_groups(history) == [
        (
            "predictions settling (the warm-up ends when the changes stop falling)",
            ["fit_given", "warmup_over", "prediction_changes"],
        ),
        ("lambda (λ)", ["lambda"]),
        ("against the true labels", ["truth_accuracy", "truth_memorised"]),
        ("noise rate estimated after each epoch", ["truth_estimated_noise_rate"]),
    ]


@pytest.mark.parametrize(
    "method, own",
    [
        ("alr", "target_accuracy"),
        ("pmnar", "weight_of_wrong_labels"),
        ("promix", "selected_recall"),
        ("flywheel", "selection_recall"),
    ],
)
def test_a_diagnosed_benchmark_logs_every_epoch_against_the_truth(method, own, capsys):
    # A fixed one-epoch warm-up: three epochs are too few for the predictions
    # to settle, and the method's own figures come from its robust phase.
    config = RunConfig(
        method=method, epochs=3, batch_size=64, device="cpu", flip=False, seed=1, method_params={"warmup": 1}
    )
    run = run_benchmark_one("digits", parse_noise_spec("sym40"), config, train_size=300, diagnose=True)
    history = run["history"]
    assert [entry["epoch"] for entry in history] == [1, 2, 3]
    last = history[-1]
    for key in (
        "truth_accuracy",
        "truth_memorised",
        "truth_corrected",
        "truth_verdict_f1",
        "truth_estimated_noise_rate",
    ):
        assert 0.0 <= last[key] <= 1.0
    assert last["diagnose_seconds"] > 0 and own in last
    assert last["truth_verdict_f1"] == pytest.approx(run["f1"], abs=1e-9)  # the last epoch's verdict is the audit's
    if method == "pmnar":
        assert last["weight_of_right_labels"] > last["weight_of_wrong_labels"]
