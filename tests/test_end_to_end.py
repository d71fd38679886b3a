"""End to end: the CLI on an image folder it writes, on digits, and resume after interruption."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from helpers import write_noisy_digits
from PIL import Image
from sklearn.datasets import load_digits

from lnlclean.cli import main
from lnlclean.config import RunConfig
from lnlclean.jobs.audit import run_audit
from lnlclean.methods import get_method
from lnlclean.report.audit import CORE_COLUMNS, read_audit

N_IMAGES = 240
FLIPPED = 30


@pytest.fixture(scope="module")
def noisy_folder(tmp_path_factory):
    """240 digits as PNG/JPEG files with a labels CSV in which 30 labels are wrong."""
    return write_noisy_digits(tmp_path_factory.mktemp("noisy"), N_IMAGES, FLIPPED, seed=0)


def cli(*args: str) -> int:
    return main([*map(str, args), "--quiet"]) if args[0] != "methods" else main(list(args))


FAST = ("--method", "ce", "--epochs", "30", "--device", "cpu", "--no-flip", "--lr", "0.05")
CALIBRATED = (
    "--method",
    "ce",
    "--epochs",
    "16",
    "--device",
    "cpu",
    "--no-flip",
    "--lr",
    "0.05",
)  # before the network memorises the wrong labels


def test_audit_then_relabel_round_trip(noisy_folder, tmp_path):
    out, cache = tmp_path / "audit", tmp_path / "cache"
    assert (
        cli("audit", noisy_folder["images"], noisy_folder["csv"], "--out", out, "--cache-dir", cache, *CALIBRATED) == 0
    )
    frame, meta = read_audit(out / "audit.parquet")
    assert list(frame.columns[: len(CORE_COLUMNS)]) == list(CORE_COLUMNS)
    assert "annotator" in frame.columns and len(frame) == N_IMAGES
    assert meta["method"] == "ce" and meta["class_names"] == [str(d) for d in range(10)]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_samples"] == N_IMAGES and len(summary["history"]) == 16
    assert abs(summary["noise_rate"] - (1 - frame["clean_prob"]).mean()) < 1e-9
    assert summary["noise_rate"] == pytest.approx(FLIPPED / N_IMAGES, abs=0.04)  # the estimate follows the truth
    assert summary["n_label_issues"] == frame["is_label_issue"].sum() and summary["warnings"] == []
    assert (frame["suggested_label"] != frame["given_label"]).all()
    # the wrong labels are ranked as less clean than the right ones
    is_wrong = np.zeros(N_IMAGES, dtype=bool)
    is_wrong[noisy_folder["wrong"]] = True
    assert frame["clean_prob"][is_wrong].mean() < frame["clean_prob"][~is_wrong].mean() - 0.2

    fixed = tmp_path / "fixed.csv"
    before = noisy_folder["csv"].read_bytes()
    assert (
        cli(
            "relabel",
            noisy_folder["images"],
            noisy_folder["csv"],
            "--from-audit",
            out / "audit.parquet",
            "--out",
            fixed,
        )
        == 0
    )
    assert noisy_folder["csv"].read_bytes() == before
    corrected = pd.read_csv(fixed, dtype=str)
    assert list(corrected.columns) == ["path", "label", "annotator", "original_label", "action", "confidence"]
    assert (corrected["original_label"] == pd.Series(noisy_folder["given"]).astype(str)).all()
    relabeled = corrected["action"] == "relabel"
    assert relabeled.sum() > 0
    accuracy_before = np.mean(noisy_folder["given"] == noisy_folder["true"])
    accuracy_after = np.mean(corrected["label"].astype(int).to_numpy() == noisy_folder["true"])
    assert accuracy_after > accuracy_before


def test_an_audit_of_memorised_labels_warns_and_relabel_changes_none(noisy_folder, tmp_path):
    # 30 epochs on 240 images: the network has fitted most wrong labels and can no longer argue against them
    out = tmp_path / "audit"
    assert (
        cli(
            "audit", noisy_folder["images"], noisy_folder["csv"], "--out", out, "--cache-dir", tmp_path / "cache", *FAST
        )
        == 0
    )
    summary = json.loads((out / "summary.json").read_text())
    assert [warning["code"] for warning in summary["warnings"]] == ["not-separated"]
    assert "train fewer epochs" in summary["warnings"][0]["message"]
    assert (
        read_audit(out / "audit.parquet")[1]["calibration"]["separated"] is False
    )  # relabel --from-audit reads it here
    assert (
        cli(
            "relabel",
            noisy_folder["images"],
            noisy_folder["csv"],
            "--from-audit",
            out / "audit.parquet",
            "--out",
            tmp_path / "fixed.csv",
        )
        == 0
    )
    corrected = pd.read_csv(tmp_path / "fixed.csv", dtype=str)
    assert (corrected["label"] == corrected["original_label"]).all() and (corrected["action"] != "relabel").all()


def test_relabel_trains_when_no_audit_given(noisy_folder, tmp_path):
    fixed = tmp_path / "fixed.csv"
    code = cli(
        "relabel",
        noisy_folder["images"],
        noisy_folder["csv"],
        "--out",
        fixed,
        "--policy",
        "drop",
        "--audit-dir",
        tmp_path / "audit",
        "--cache-dir",
        tmp_path / "cache",
        *FAST,
    )
    assert code == 0
    corrected = pd.read_csv(fixed, dtype=str)
    flagged = read_audit(tmp_path / "audit" / "audit.parquet")[0]["is_label_issue"]
    assert len(corrected) == N_IMAGES - flagged.sum()


def test_image_folder_layout_without_csv(tmp_path):
    digits = load_digits()
    for i in range(60):
        folder = tmp_path / "images" / ("even" if digits.target[i] % 2 == 0 else "odd")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.round(digits.images[i] * 255 / 16).astype(np.uint8)).save(folder / f"{i}.png")
    out = tmp_path / "out"
    assert cli("audit", tmp_path / "images", "--out", out, "--cache-dir", tmp_path / "cache", "--epochs", "2") == 0
    frame, meta = read_audit(out / "audit.parquet")
    assert meta["class_names"] == ["even", "odd"]
    assert set(frame["given_label"]) == {"even", "odd"} and frame["path"].str.contains("/").all()


@pytest.mark.parametrize(
    "method, params",
    [
        ("ce", {}),
        ("pmnar", {"warmup": 1}),
        ("alr", {"warmup": 1}),
        ("alim", {"warmup": 1}),
        ("promix", {"warmup": 1}),
        ("flywheel", {"warmup": 1}),
    ],
)
def test_resume_after_interruption_gives_the_same_audit(noisy_folder, tmp_path, monkeypatch, method, params):
    config = dict(method=method, method_params=params, epochs=5, device="cpu", flip=False, seed=3)
    reference = run_audit(
        noisy_folder["images"], noisy_folder["csv"], RunConfig(**config), tmp_path / "a", tmp_path / "cache"
    )
    method_cls = get_method(method)
    original_end_epoch = method_cls.end_epoch

    def interrupt_at_third(self, epoch, evaluate):
        if epoch == 2:
            raise KeyboardInterrupt
        return original_end_epoch(self, epoch, evaluate)

    monkeypatch.setattr(method_cls, "end_epoch", interrupt_at_third)
    with pytest.raises(KeyboardInterrupt):
        run_audit(noisy_folder["images"], noisy_folder["csv"], RunConfig(**config), tmp_path / "b", tmp_path / "cache")
    assert not (tmp_path / "b" / "audit.parquet").exists()
    monkeypatch.setattr(method_cls, "end_epoch", original_end_epoch)
    resumed = run_audit(
        noisy_folder["images"],
        noisy_folder["csv"],
        RunConfig(**config),
        tmp_path / "b",
        tmp_path / "cache",
        resume=True,
    )
    assert resumed.summary["resumed_from_epoch"] == 2
    pd.testing.assert_frame_equal(resumed.audit, reference.audit)


def test_benchmark_digits_writes_every_field(tmp_path):
    out = tmp_path / "bench"
    assert cli("benchmark", "digits", "--noise", "sym40", "--noise", "asym40", "--epochs", "3", "--out", out) == 0
    runs = json.loads((out / "benchmark.json").read_text())["runs"]
    assert [r["noise"] for r in runs] == ["sym40", "asym40"]
    fields = {
        "dataset",
        "noise",
        "method",
        "seed",
        "epochs",
        "true_noise_rate",
        "estimated_noise_rate",
        "precision",
        "recall",
        "f1",
        "auroc",
        "test_accuracy",
        "relabel_accuracy",
        "label_accuracy_before",
        "label_accuracy_after",
        "seconds",
        "seconds_per_epoch",
        "device",
    }
    assert fields <= set(runs[0])
    assert runs[0]["true_noise_rate"] == pytest.approx(0.4, abs=0.001)
    assert 0.0 < runs[1]["true_noise_rate"] < 0.4
    assert runs[0]["label_accuracy_before"] == pytest.approx(1 - runs[0]["true_noise_rate"])
    for noise in ("sym40", "asym40"):  # one report per run, its histogram split by the injected noise
        assert 'aria-label="clean_prob by truth"' in (out / f"digits-{noise}-ce.html").read_text(encoding="utf-8")


def test_benchmark_fail_under_exits_1(tmp_path):
    args = ("benchmark", "digits", "--epochs", "1", "--out", tmp_path)
    assert cli(*args, "--fail-under", "f1=0.0") == 0
    assert cli(*args, "--fail-under", "f1=1.01", "--overwrite") == 1


def test_unreadable_image_fails_by_default_and_is_skipped_on_request(noisy_folder, tmp_path, capsys):
    import shutil

    images = tmp_path / "images"
    shutil.copytree(noisy_folder["images"], images)
    broken = images / "d0001.png"
    broken.write_bytes(broken.read_bytes()[:40])
    common = ("audit", images, noisy_folder["csv"], "--cache-dir", tmp_path / "cache", "--epochs", "1")
    assert cli(*common, "--out", tmp_path / "fail") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "d0001.png" in err[0] and "--on-bad-image skip" in err[0]
    assert not (tmp_path / "fail").exists()

    assert cli(*common, "--out", tmp_path / "skip", "--on-bad-image", "skip") == 0
    frame, _ = read_audit(tmp_path / "skip" / "audit.parquet")
    summary = json.loads((tmp_path / "skip" / "summary.json").read_text())
    assert len(frame) == N_IMAGES - 1 and "d0001.png" not in set(frame["path"])
    assert summary["n_skipped"] == 1 and summary["skipped"][0]["path"] == "d0001.png"
    fixed = tmp_path / "fixed.csv"
    assert (
        cli("relabel", images, noisy_folder["csv"], "--from-audit", tmp_path / "skip" / "audit.parquet", "--out", fixed)
        == 0
    )
    corrected = pd.read_csv(fixed, dtype=str)
    assert len(corrected) == N_IMAGES
    assert corrected.loc[corrected["path"] == "d0001.png", "action"].item() == "review"


def method_audit(noisy_folder, tmp_path, epochs: int, *options: str):
    """Audits the noisy folder on CPU with `options` for `epochs`
    epochs. Returns (audit frame, metadata, method_summary).
    """
    out = tmp_path / "audit"
    code = cli(
        "audit",
        noisy_folder["images"],
        noisy_folder["csv"],
        *options,
        "--out",
        out,
        "--cache-dir",
        tmp_path / "cache",
        "--epochs",
        str(epochs),
        "--device",
        "cpu",
        "--no-flip",
    )
    assert code == 0
    frame, meta = read_audit(out / "audit.parquet")
    return frame, meta, json.loads((out / "summary.json").read_text())["method_summary"]


def test_pmnar_audit_writes_its_columns_and_f_min_per_epoch(noisy_folder, tmp_path):
    frame, meta, summary = method_audit(noisy_folder, tmp_path, 10, "--method", "pmnar", "--pmnar-warmup", "3")
    assert meta["settings"]["method_params"] == {"warmup": 3}
    assert {"pmnar_weight", "pmnar_weight_peer", "pmnar_complement_size"} <= set(frame.columns)
    assert frame["pmnar_weight"].min() == 0.0 and frame["pmnar_weight_peer"].min() == 0.0
    assert frame["pmnar_complement_size"].between(0, 9).all() and frame["pmnar_complement_size"].max() == 9
    assert summary["warmup"] == 3 and summary["beta"] == 1.0
    assert len(summary["f_min_per_epoch"]["f"]) == len(summary["f_min_per_epoch"]["f_peer"]) == 10


def test_alr_audit_takes_lambda_by_its_option_name_and_writes_its_columns(noisy_folder, tmp_path):
    frame, meta, summary = method_audit(
        noisy_folder, tmp_path, 6, "--method", "alr", "--alr-lambda", "0.1", "--alr-warmup", "3"
    )
    assert meta["settings"]["method_params"] == {"lambda_": 0.1, "warmup": 3}
    assert frame["alr_target_max"].between(1 / 10, 1).all() and (frame["alr_target_entropy"] > 0).all()
    assert (
        frame["label_score"].lt(1).all() and frame["label_score"].gt(0.9**3 - 1e-6).all()
    )  # t[given] after 3 refinement epochs
    assert summary["lambda"] == 0.1 and summary["warmup"] == 3
    entropies = summary["mean_target_entropy_per_epoch"]
    assert entropies[:3] == [0.0, 0.0, 0.0] and entropies[3] > 0


def test_alim_audit_writes_its_columns_and_lambda_per_epoch(noisy_folder, tmp_path):
    frame, meta, summary = method_audit(
        noisy_folder, tmp_path, 6, "--method", "alim", "--alim-warmup", "2", "--noise-rate", "0.125"
    )
    assert meta["settings"]["noise_rate"] == 0.125
    assert summary["eta"] == 0.125 and summary["eta_source"] == "--noise-rate"
    lambdas = summary["lambda_per_epoch"]
    assert len(lambdas) == 6 and lambdas[0] == 0.0 and 0 < lambdas[-1] <= 1
    assert (frame["alim_lambda"] == lambdas[-1]).all()
    assert frame["alim_margin_quantile"].between(0, 1).all() and frame["alim_margin"].gt(0).all()
    assert (frame["label_score"] < 0.5).equals(frame["alim_margin"] < lambdas[-1])


def write_candidates_csv(noisy_folder, path, with_label: bool) -> list[str]:
    """Writes a candidates CSV for the noisy folder: each row's true digit and the next one. Returns the sets."""
    true = noisy_folder["true"]
    sets = [f"{t}|{(t + 1) % 10}" for t in true]
    frame = pd.read_csv(noisy_folder["csv"], dtype=str)
    frame["candidates"] = sets
    if with_label:
        frame["label"] = [str(t) for t in true]
    else:
        frame = frame.drop(columns=["label"])
    frame.to_csv(path, index=False)
    return sets


def test_alim_audits_a_candidates_only_csv_and_other_methods_refuse_it(noisy_folder, tmp_path, capsys):
    csv = tmp_path / "candidates.csv"
    sets = write_candidates_csv(noisy_folder, csv, with_label=False)
    common = (
        noisy_folder["images"],
        csv,
        "--cache-dir",
        tmp_path / "cache",
        "--epochs",
        "4",
        "--device",
        "cpu",
        "--no-flip",
    )
    assert cli("audit", *common, "--method", "alim", "--out", tmp_path / "a") == 0
    frame, _ = read_audit(tmp_path / "a" / "audit.parquet")
    assert frame["candidates"].tolist() == sets
    inside = [label in s.split("|") for label, s in zip(frame["suggested_label"], frame["candidates"])]
    assert np.array_equal(inside, ~frame["alim_outside_candidates"].to_numpy())
    assert cli("audit", *common, "--method", "ce", "--out", tmp_path / "b") == 2
    assert cli("relabel", *common, "--method", "alim", "--out", tmp_path / "fixed.csv") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "--method ce needs labels" in err[0] and "no label column" in err[1]
    assert not (tmp_path / "b").exists() and not (tmp_path / "fixed.csv").exists()


def test_promix_audit_writes_its_columns_and_selection_per_epoch(noisy_folder, tmp_path):
    frame, _, summary = method_audit(noisy_folder, tmp_path, 6, "--method", "promix", "--promix-warmup", "2")
    flags = ["promix_selected", "promix_css", "promix_mhcs", "promix_lga", "promix_agree"]
    assert frame[flags].dtypes.eq(bool).all()
    assert (frame["promix_selected"] >= frame["promix_css"]).all() and frame["promix_css"].any()
    assert frame["clean_prob"].between(0, 1).all() and frame["promix_selection_frequency"].between(0, 1).all()
    fractions = summary["selected_fraction_per_epoch"]
    assert summary["warmup"] == 2 and fractions[:2] == [None, None] and all(0 < f <= 1 for f in fractions[2:])
    assert summary["selected_precision_per_epoch"] == [None] * 6  # no truth outside benchmarks


def test_flywheel_audit_writes_its_columns_gamma_and_corruption_matrix(noisy_folder, tmp_path):
    frame, _, summary = method_audit(noisy_folder, tmp_path, 6, "--method", "flywheel", "--flywheel-warmup", "2")
    assert frame["flywheel_corruption_prob"].between(0, 1).all() and frame["flywheel_corruption_prob"].gt(0).any()
    assert frame["flywheel_refurbished_prob"].between(0.1, 1).all()
    assert (frame["suggested_label"] != frame["given_label"]).all()
    gammas = summary["gamma_per_epoch"]
    assert gammas[0] is None and all(0.01 <= g <= 0.99 for g in gammas[1:]) and summary["gamma"] == gammas[-1]
    matrix = np.array(summary["corruption_matrix"])
    assert matrix.shape == (10, 10) and (np.diag(matrix) == 0).all() and np.allclose(matrix.sum(axis=1), 1, atol=1e-4)


def test_relabel_with_flywheel_writes_a_corrected_manifest(noisy_folder, tmp_path):
    fixed = tmp_path / "fixed.csv"
    code = cli(
        "relabel",
        noisy_folder["images"],
        noisy_folder["csv"],
        "--method",
        "flywheel",
        "--out",
        fixed,
        "--cache-dir",
        tmp_path / "cache",
        "--epochs",
        "4",
        "--device",
        "cpu",
    )
    assert code == 0
    corrected = pd.read_csv(fixed, dtype=str)
    original = pd.read_csv(noisy_folder["csv"], dtype=str)
    assert len(corrected) == len(original) and (corrected["original_label"] == original["label"]).all()
    assert set(corrected["action"]) <= {"keep", "relabel", "drop", "review"}
