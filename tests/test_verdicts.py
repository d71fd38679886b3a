"""Verdicts: margins and the calibration mixture on hand-built tables,
suggestions, the relabel rule, warnings, threshold as a verdict setting.
"""

from __future__ import annotations

import json
import signal

import numpy as np
import pandas as pd
import pytest
from test_interruption import signal_at_step

from lnlclean.calibration import debiased, log_margins, mixture_fit
from lnlclean.cli import main
from lnlclean.config import RunConfig
from lnlclean.interrupt import Interrupted
from lnlclean.jobs.audit import run_audit
from lnlclean.report.audit import read_audit
from lnlclean.report.trust import audit_warnings, trusted
from lnlclean.report.verdicts import method_verdicts, relabels, suggested_labels, suggestion_share


def two_groups(n_wrong: int, n_right: int, seed: int = 0) -> np.ndarray:
    """Log margins of `n_wrong` samples whose network prefers another label and `n_right` that prefer their own."""
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.normal(-2.5, 0.7, n_wrong), rng.normal(2.0, 0.9, n_right)])


# ---------------------------------------------------------------- margins and the mixture


def test_log_margin_divides_out_the_class_prior():
    belief = np.array([[0.6, 0.3, 0.1], [0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.2, 0.2, 0.6]])
    prior = belief.mean(axis=0)
    expected = belief / prior
    expected /= expected.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(debiased(belief), expected)
    margins = log_margins(belief, np.array([0, 1, 1, 0]))
    assert margins[0] == pytest.approx(np.log(expected[0, 0] / expected[0, 1]))
    assert margins[2] == pytest.approx(np.log(expected[2, 1] / expected[2, 2]))
    assert margins[3] < 0  # the network prefers class 2 over the given 0


def test_log_margin_of_a_candidate_set_is_its_best_member_against_the_best_outsider():
    belief = np.array([[0.5, 0.3, 0.2], [0.2, 0.3, 0.5]])
    sets = np.array([[0, 1, 0], [1, 1, 1]])
    margins = log_margins(belief, np.array([1, 0]), sets)
    assert margins[0] < 0 and np.isposinf(margins[1])


@pytest.mark.parametrize("n_wrong", [40, 120, 300])
def test_mixture_estimates_the_share_that_prefers_another_label(n_wrong):
    fit = mixture_fit(two_groups(n_wrong, 1000 - n_wrong))
    assert fit.noise_rate == pytest.approx(n_wrong / 1000, abs=0.02)
    assert fit.separated and fit.low_mean < 0 < fit.high_mean
    assert (fit.clean_prob[:n_wrong] < 0.5).mean() > 0.95 and (fit.clean_prob[n_wrong:] > 0.5).mean() > 0.95


def test_mixture_of_sure_and_unsure_right_labels_is_not_separated():
    rng = np.random.default_rng(1)
    fit = mixture_fit(np.concatenate([rng.normal(0.5, 0.4, 500), rng.normal(3.0, 0.8, 500)]))
    assert not fit.separated


def test_mixture_of_constant_margins_calls_everything_clean():
    fit = mixture_fit(np.full(10, 1.5))
    assert fit.noise_rate == 0.0 and (fit.clean_prob == 1).all()


# ---------------------------------------------------------------- verdict columns


def hand_belief(n_wrong: int = 60, n_right: int = 240, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Returns (belief N×3, given labels, true labels): right labels
    get 0.8 on their class, wrong ones 0.8 on the true class.
    """
    rng = np.random.default_rng(seed)
    true = rng.integers(0, 3, n_wrong + n_right)
    given = true.copy()
    given[:n_wrong] = (true[:n_wrong] + 1) % 3
    belief = np.full((len(true), 3), 0.05)
    belief[np.arange(len(true)), true] = rng.uniform(0.6, 0.95, len(true))
    return belief / belief.sum(axis=1, keepdims=True), given, true


def test_verdicts_flag_the_wrong_labels_and_estimate_their_share():
    belief, given, true = hand_belief()
    columns = {
        "clean_prob": np.linspace(0, 1, len(given)),
        "suggested_label": given.copy(),
        "my_signal": np.arange(len(given)),
    }
    verdict, fit = method_verdicts(columns, belief, given, threshold=0.5)
    wrong = given != true
    assert fit.noise_rate == pytest.approx(wrong.mean(), abs=0.03)
    np.testing.assert_array_equal(verdict["is_label_issue"], wrong)
    np.testing.assert_array_equal(verdict["is_label_issue"], verdict["clean_prob"] < 0.5)
    np.testing.assert_allclose(verdict["label_score"], columns["clean_prob"])  # the method's own signal, kept
    assert (verdict["suggested_label"] != given).all()
    np.testing.assert_array_equal(verdict["suggested_label"][wrong], true[wrong])
    assert (verdict["suggested_prob"][wrong] > 0.5).all()
    np.testing.assert_array_equal(verdict["my_signal"], columns["my_signal"])


def test_a_label_the_network_prefers_is_never_below_one_half():
    belief, given, _ = hand_belief()
    columns = {"clean_prob": np.zeros(len(given)), "suggested_label": given.copy()}
    verdict, _ = method_verdicts(columns, belief, given, threshold=0.5)
    prefers_given = log_margins(belief, given) >= 0
    assert (verdict["clean_prob"][prefers_given] >= 0.5).all()


def test_suggestion_equal_to_the_given_label_becomes_the_best_other_label():
    belief = np.array([[0.5, 0.2, 0.3], [0.1, 0.6, 0.3]])
    np.testing.assert_array_equal(suggested_labels(np.array([0, 2]), belief, np.array([0, 1])), [2, 2])
    belief = np.array(
        [[0.2, 0.2, 0.6], [0.6, 0.2, 0.2], [0.2, 0.6, 0.2]]
    )  # equal class means: debiasing changes nothing
    share = suggestion_share(belief, np.array([0, 0, 0]), np.array([2, 1, 2]))
    np.testing.assert_allclose(share, [0.6 / 0.8, 0.2 / 0.4, 0.2 / 0.8])


def test_relabel_changes_only_likely_suggestions_the_network_predicts_of_a_trusted_audit():
    flagged = np.array([True, True, True, True, False])
    clean = np.array([0.1, 0.3, 0.1, 0.1, 0.9])
    suggested_prob = np.array([0.8, 0.45, 0.8, 0.8, 0.05])
    agrees = np.array([True, True, False, True, True])
    assert relabels(flagged, clean, suggested_prob, agrees).tolist() == [True, False, False, True, False]
    assert not relabels(flagged, clean, suggested_prob, agrees, trusted=False).any()


# ---------------------------------------------------------------- warnings


def audit_frame(flagged, predicted, given) -> pd.DataFrame:
    return pd.DataFrame({"is_label_issue": flagged, "predicted_label": predicted, "given_label": given})


def test_warnings_say_what_is_wrong_and_which_block_relabel():
    frame = audit_frame([True] * 6 + [False] * 4, ["a"] * 10, ["a"] * 10)
    codes = [w["code"] for w in audit_warnings(frame, {"noise_rate": 0.3, "calibration": {"separated": True}})]
    assert codes == ["most-wrong"]
    frame = audit_frame([True] + [False] * 9, ["b"] * 6 + ["a"] * 4, ["a"] * 10)
    warnings = audit_warnings(
        frame,
        {
            "noise_rate": 0.1,
            "calibration": {"separated": False},
            "method_summary": {"noise_rate_per_epoch": [None, 0.8, 0.3]},
        },
    )
    assert [w["code"] for w in warnings] == ["not-separated", "weak-fit", "early-estimate"]
    assert "0.80 after epoch 2" in warnings[2]["message"] and "--epochs" in warnings[0]["message"]
    assert not trusted(warnings) and trusted(warnings[1:])


def test_warnings_on_frozen_features_advise_a_sharper_embedding_not_longer_training():
    frame = audit_frame([True] + [False] * 9, ["b"] * 6 + ["a"] * 4, ["a"] * 10)
    summary = {"noise_rate": 0.1, "method_summary": {"noise_rate_per_epoch": [0.4, 0.3]}}
    frozen = audit_warnings(frame, {**summary, "settings": {"features": "frozen"}})
    pixels = audit_warnings(frame, {**summary, "settings": {"features": "finetune"}})
    assert [w["code"] for w in frozen] == [w["code"] for w in pixels] == ["weak-fit", "early-estimate"]
    assert all("--image-size 224" in w["message"] and "--epochs" not in w["message"] for w in frozen)
    assert all("--epochs" in w["message"] and "--image-size" not in w["message"] for w in pixels)


def test_a_method_that_never_left_its_warmup_says_it_trained_as_cross_entropy():
    frame = audit_frame([True] + [False] * 9, ["a"] * 10, ["a"] * 10)
    summary = {"noise_rate": 0.1, "calibration": {"separated": True}}
    still = audit_warnings(frame, {**summary, "method_summary": {"warmup": None}})
    assert [w["code"] for w in still] == ["still-learning"] and "--epochs" in still[0]["message"] and trusted(still)
    assert audit_warnings(frame, {**summary, "method_summary": {"warmup": 4}}) == []
    assert audit_warnings(frame, {**summary, "method_summary": {}}) == []  # ce and confident learning have no warm-up


def test_a_not_separated_audit_advises_fewer_epochs_only_when_the_network_predicts_most_labels():
    summary = {"noise_rate": 0.1, "calibration": {"separated": False}}
    memorised = audit_frame([False] * 10, ["a"] * 8 + ["b"] * 2, ["a"] * 10)  # predicts 80 % of the given labels
    under_trained = audit_frame([False] * 10, ["a"] * 7 + ["b"] * 3, ["a"] * 10)
    assert "train fewer epochs" in audit_warnings(memorised, summary)[0]["message"]
    assert "train longer" in audit_warnings(under_trained, summary)[0]["message"]


def test_an_under_trained_audit_warns(noisy_folder_small, tmp_path, capsys):
    out = tmp_path / "audit"
    assert (
        main(
            [
                "audit",
                str(noisy_folder_small["images"]),
                str(noisy_folder_small["csv"]),
                "--epochs",
                "1",
                "--device",
                "cpu",
                "--no-flip",
                "--out",
                str(out),
                "--cache-dir",
                str(tmp_path / "cache"),
                "--quiet",
            ]
        )
        == 0
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["warnings"] and not trusted(summary["warnings"])
    assert capsys.readouterr().out.count("warning: ") == len(summary["warnings"])
    assert 'class="warning"' in (out / "report.html").read_text()


# ---------------------------------------------------------------- the threshold is a verdict setting


def test_resume_with_another_threshold_flags_by_it(digits_folder, tmp_path, monkeypatch):
    config = dict(method="ce", epochs=3, batch_size=16, device="cpu", flip=False, seed=5)
    folder = (digits_folder.root, digits_folder.csv)
    with monkeypatch.context() as patch:
        signal_at_step(patch, "ce", signal.SIGTERM, at_call=6)
        with pytest.raises(Interrupted):
            run_audit(*folder, RunConfig(**config), tmp_path / "out", tmp_path / "cache")
    resumed = run_audit(*folder, RunConfig(**config, threshold=0.9), tmp_path / "out", tmp_path / "cache", resume=True)
    assert resumed.summary["resumed_from_epoch"] == 1 and resumed.summary["threshold"] == 0.9
    np.testing.assert_array_equal(resumed.audit["is_label_issue"], resumed.audit["clean_prob"] < 0.9)


def test_relabel_from_audit_honours_the_threshold(noisy_folder_small, tmp_path):
    images, csv = str(noisy_folder_small["images"]), str(noisy_folder_small["csv"])
    audit = tmp_path / "audit"
    assert (
        main(
            [
                "audit",
                images,
                csv,
                "--epochs",
                "12",
                "--device",
                "cpu",
                "--no-flip",
                "--out",
                str(audit),
                "--cache-dir",
                str(tmp_path / "cache"),
                "--quiet",
            ]
        )
        == 0
    )
    frame, _ = read_audit(audit / "audit.parquet")
    for threshold in ("0.99", "0.01"):
        out = tmp_path / f"fixed-{threshold}.csv"
        assert (
            main(
                [
                    "relabel",
                    images,
                    csv,
                    "--from-audit",
                    str(audit / "audit.parquet"),
                    "--policy",
                    "flag",
                    "--threshold",
                    threshold,
                    "--out",
                    str(out),
                ]
            )
            == 0
        )
        reviewed = pd.read_csv(out)["action"] == "review"
        assert reviewed.sum() == (frame["clean_prob"] < float(threshold)).sum()
    assert (
        main(
            [
                "relabel",
                images,
                csv,
                "--from-audit",
                str(audit / "audit.parquet"),
                "--threshold",
                "1.5",
                "--out",
                str(tmp_path / "x.csv"),
            ]
        )
        == 2
    )
