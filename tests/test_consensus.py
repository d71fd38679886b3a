"""Consensus of audits: the voting rules, the checks that audits
match, the command, audit --method a,b, benchmark --consensus.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from lnlclean.cli import main
from lnlclean.errors import UserError
from lnlclean.report.audit import read_audit
from lnlclean.report.consensus import Verdicts, check_same_samples, combine, member_names
from lnlclean.report.scores import BenchmarkRun, NoisyLabels, score_consensus


def verdicts(name, clean_prob, flagged, suggested, suggested_prob=0.9) -> Verdicts:
    clean_prob = np.array(clean_prob, dtype=float)
    suggested = np.array(suggested)  # the networks predict what they suggest
    return Verdicts(
        name, clean_prob, np.array(flagged, dtype=bool), suggested, np.full(len(clean_prob), suggested_prob), suggested
    )


def test_majority_flags_and_a_tie_is_decided_by_the_mean_clean_prob():
    two = [
        verdicts("a", [0.1, 0.2, 0.9, 0.3], [1, 1, 0, 1], [1, 1, 0, 0]),
        verdicts("b", [0.2, 0.9, 0.8, 0.9], [1, 0, 0, 0], [1, 0, 0, 0]),
    ]
    combined = combine(two, n_classes=2)
    assert combined["consensus_votes"].tolist() == [2, 1, 0, 1]
    assert combined["clean_prob"] == pytest.approx([0.15, 0.55, 0.85, 0.6])
    assert combined["is_label_issue"].tolist() == [
        True,
        False,
        False,
        False,
    ]  # ties: mean 0.55 and 0.6 are not below 0.5
    three = [*two, verdicts("c", [0.4, 0.1, 0.2, 0.1], [1, 1, 1, 1], [0, 1, 1, 1])]
    assert combine(three, n_classes=2)["is_label_issue"].tolist() == [True, True, False, True]


def test_suggestion_is_the_majority_and_a_tie_goes_to_the_most_doubtful_audit():
    runs = [
        verdicts("a", [0.1, 0.6], [1, 0], [2, 1]),
        verdicts("b", [0.3, 0.2], [1, 1], [2, 0]),
        verdicts("c", [0.2, 0.9], [1, 0], [1, 2]),
    ]
    combined = combine(runs, n_classes=3)
    assert combined["suggested_label"].tolist() == [2, 0]  # sample 1: three different suggestions, b doubts most
    assert combined["consensus_agreement"] == pytest.approx([2 / 3, 1 / 3])


def test_audits_of_other_samples_are_refused_naming_the_row():
    frame = pd.DataFrame({"path": ["a.png", "b.png"], "given_label": ["cat", "dog"]})
    check_same_samples({"x": frame, "y": frame.copy()})
    with pytest.raises(UserError, match="y: row 1 has given_label 'cat', but x has 'dog'"):
        check_same_samples({"x": frame, "y": frame.assign(given_label=["cat", "cat"])})
    with pytest.raises(UserError, match="y: 1 samples, but x has 2"):
        check_same_samples({"x": frame, "y": frame.head(1)})
    assert member_names(["alr", "pmnar", "alr"]) == ["alr", "pmnar", "alr_2"]


def test_benchmark_consensus_is_scored_like_a_method():
    given, true = np.array([0, 1, 1, 0, 1]), np.array([0, 0, 1, 1, 1])
    labels = NoisyLabels(given, true, None, given != true, n_classes=2)

    def run(name, flagged, suggested):
        scores = {
            "dataset": "d",
            "noise": "sym40",
            "partial_rate": None,
            "seed": 0,
            "epochs": 1,
            "backbone": "b",
            "n_train": 5,
            "method": name,
            "seconds": 1.0,
            "device": "cpu",
            "f1": 0.5,
            "warnings": [],
        }
        clean = np.where(flagged, 0.2, 0.8)
        return BenchmarkRun(scores, verdicts(name, clean, flagged, suggested), labels)

    # rows 1 and 3 are wrong; a and b flag both (a also row 4), c flags row 0 only
    runs = [
        run("a", [0, 1, 0, 1, 1], [0, 0, 1, 1, 0]),
        run("b", [0, 1, 0, 1, 0], [0, 0, 1, 1, 1]),
        run("c", [1, 0, 0, 0, 0], [1, 1, 1, 0, 0]),
    ]
    scored = score_consensus(runs)
    assert (
        scored["method"] == "consensus(a+b+c)"
        and scored["seconds"] == 3.0
        and scored["members"] == {"a": 0.5, "b": 0.5, "c": 0.5}
    )
    assert (scored["precision"], scored["recall"], scored["f1"]) == (1.0, 1.0, 1.0)
    # the estimate is the mean of 1 − the members' mean clean_prob, not the share flagged
    assert scored["estimated_noise_rate"] == pytest.approx(0.44) and scored["true_noise_rate"] == pytest.approx(2 / 5)
    assert scored["flagged_rate"] == pytest.approx(2 / 5)
    assert (
        scored["relabel_accuracy"] == 1.0 and scored["label_accuracy_after"] == 1.0 and scored["test_accuracy"] is None
    )


@pytest.fixture(scope="module")
def two_audits(noisy_folder_small, tmp_path_factory):
    """ce and alr audits of the same noisy folder, made by audit --method ce,alr (the consensus in the same run)."""
    root = tmp_path_factory.mktemp("consensus")
    code = main(
        [
            "audit",
            str(noisy_folder_small["images"]),
            str(noisy_folder_small["csv"]),
            "--method",
            "ce,alr",
            "--epochs",
            "12",
            "--device",
            "cpu",
            "--no-flip",
            "--out",
            str(root / "out"),
            "--cache-dir",
            str(root / "cache"),
            "--quiet",
        ]
    )
    assert code == 0
    return root / "out"


def test_audit_with_several_methods_writes_each_and_their_consensus(two_audits):
    assert {p.name for p in two_audits.iterdir()} >= {"ce", "alr", "audit.parquet", "summary.json", "report.html"}
    consensus, meta = read_audit(two_audits / "audit.parquet")
    ce, alr = (read_audit(two_audits / name / "audit.parquet")[0] for name in ("ce", "alr"))
    assert meta["method"] == "consensus" and len(consensus) == len(ce)
    votes = ce["is_label_issue"].astype(int) + alr["is_label_issue"].astype(int)
    assert (consensus["consensus_votes"] == votes).all()
    assert (consensus["clean_prob"] == (ce["clean_prob"] + alr["clean_prob"]) / 2).all()
    expected = (votes == 2) | ((votes == 1) & (consensus["clean_prob"] < 0.5))
    assert (consensus["is_label_issue"] == expected).all()
    assert (consensus["alr_suggested_label"] == alr["suggested_label"]).all()
    summary = json.loads((two_audits / "summary.json").read_text())
    assert [m["name"] for m in summary["consensus"]["members"]] == ["ce", "alr"]
    assert summary["consensus"]["flagged_by_all"] == int((votes == 2).sum())
    page = (two_audits / "report.html").read_text(
        encoding="utf-8"
    )  # gallery cards show the votes and each member's clean_prob
    assert '<dt title="consensus_votes">votes</dt>' in page and '<dt title="alr_clean_prob">alr_clean_prob</dt>' in page


def test_consensus_command_output_is_an_audit_relabel_can_use(two_audits, noisy_folder_small, tmp_path):
    out = tmp_path / "combined"
    assert (
        main(["consensus", str(two_audits / "ce"), str(two_audits / "alr" / "audit.parquet"), "--out", str(out)]) == 0
    )
    assert read_audit(out / "audit.parquet")[0].equals(read_audit(two_audits / "audit.parquet")[0])
    fixed = tmp_path / "fixed.csv"
    assert (
        main(
            [
                "relabel",
                str(noisy_folder_small["images"]),
                str(noisy_folder_small["csv"]),
                "--from-audit",
                str(out / "audit.parquet"),
                "--out",
                str(fixed),
            ]
        )
        == 0
    )
    corrected = pd.read_csv(fixed, dtype=str)
    flagged = read_audit(out / "audit.parquet")[0]["is_label_issue"]
    assert (corrected["action"] != "keep").sum() == flagged.sum()


@pytest.mark.parametrize(
    "case, expected",
    [
        ("one audit", "give at least two audit directories"),
        ("not an audit", "holds no audit.parquet"),
        ("other samples", "combine audits of the same images and labels"),
        ("out is a member", "is one of the audits being combined"),
        ("method twice", "name each method once"),
        ("consensus of one method", "--consensus: needs two or more"),
        ("relabel with several methods", "relabel trains one method"),
    ],
)
def test_consensus_bad_input_is_one_line_and_exit_2(two_audits, tmp_path, capsys, case, expected):
    ce, alr = two_audits / "ce", two_audits / "alr"
    args = {
        "one audit": ["consensus", str(ce), "--out", str(tmp_path / "c")],
        "not an audit": ["consensus", str(ce), str(tmp_path), "--out", str(tmp_path / "c")],
        "out is a member": ["consensus", str(ce), str(alr), "--out", str(alr), "--overwrite"],
        "method twice": ["audit", str(tmp_path), "--method", "ce,ce", "--out", str(tmp_path / "c")],
        "consensus of one method": [
            "benchmark",
            "digits",
            "--method",
            "ce",
            "--consensus",
            "--out",
            str(tmp_path / "c"),
        ],
        "relabel with several methods": ["relabel", str(tmp_path), "--method", "ce,alr", "--out", str(tmp_path / "c")],
    }.get(case)
    if case == "other samples":
        shorter = tmp_path / "shorter"
        shutil.copytree(alr, shorter)
        frame, _ = read_audit(alr / "audit.parquet")
        from lnlclean.report.audit import write_audit

        write_audit(frame.head(10), shorter / "audit.parquet", {"method": "alr"})
        args = ["consensus", str(ce), str(shorter), "--out", str(tmp_path / "c")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert expected in err and err.count("\n") == 1
    assert not (tmp_path / "c").exists()


def test_benchmark_consensus_row_follows_its_members(tmp_path):
    out = tmp_path / "bench"
    code = main(
        [
            "benchmark",
            "digits",
            "--method",
            "ce,alim",
            "--consensus",
            "--epochs",
            "3",
            "--train-size",
            "200",
            "--device",
            "cpu",
            "--out",
            str(out),
            "--quiet",
            "--fail-under",
            "acc=0.0",
        ]
    )
    assert code == 0
    runs = json.loads((out / "benchmark.json").read_text())["runs"]
    assert [r["method"] for r in runs] == ["ce", "alim", "consensus(ce+alim)"]
    assert runs[2]["members"] == {"ce": runs[0]["f1"], "alim": runs[1]["f1"]}
    assert runs[2]["seconds"] == pytest.approx(runs[0]["seconds"] + runs[1]["seconds"])


def test_resume_reuses_the_finished_audits_and_writes_the_consensus(two_audits, noisy_folder_small, tmp_path, capsys):
    out = tmp_path / "out"
    shutil.copytree(two_audits, out)
    for name in ("audit.parquet", "summary.json", "report.html"):  # stopped after the last method, before the consensus
        (out / name).unlink()
    before = (out / "alr" / "audit.parquet").stat().st_mtime_ns
    code = main(
        [
            "audit",
            str(noisy_folder_small["images"]),
            str(noisy_folder_small["csv"]),
            "--method",
            "ce,alr",
            "--epochs",
            "12",
            "--device",
            "cpu",
            "--no-flip",
            "--out",
            str(out),
            "--resume",
        ]
    )
    assert code == 0
    assert (out / "alr" / "audit.parquet").stat().st_mtime_ns == before
    assert read_audit(out / "audit.parquet")[0].equals(read_audit(two_audits / "audit.parquet")[0])
    assert "reusing the finished audit" in capsys.readouterr().err
