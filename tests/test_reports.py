"""The audit table, its Parquet round trip, the summary, the corrected manifest and atomic writes."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from lnlclean.errors import UserError
from lnlclean.fileio import atomic_path, write_json
from lnlclean.jobs.relabel import run_relabel
from lnlclean.report.audit import CORE_COLUMNS, AuditInputs, build_audit_table, read_audit, summarize, write_audit
from lnlclean.report.manifest import corrected_manifest, write_manifest


def hand_inputs(**overrides) -> AuditInputs:
    values = dict(
        paths=["a.png", "b.png", "c.png"],
        given_labels=np.array([0, 1, 1]),
        class_names=["cat", "dog"],
        probs=np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7]], dtype=np.float32),
        method_columns={
            "label_score": np.array([0.95, 0.1, 0.6]),
            "clean_prob": np.array([0.9, 0.2, 0.7]),
            "is_label_issue": np.array([False, True, False]),
            "suggested_label": np.array([1, 0, 0]),
            "suggested_prob": np.array([0.1, 0.8, 0.3]),
            "ce_loss": np.array([0.1, 1.6, 0.35]),
        },
        extra=pd.DataFrame({"annotator": ["x", "y", "z"], "path": ["P", "Q", "R"], "site": ["s1", "s2", "s3"]}),
    )
    values.update(overrides)
    return AuditInputs(**values)


# ---------------------------------------------------------------- audit table


def test_build_audit_table_columns_and_values():
    frame = build_audit_table(hand_inputs())
    assert list(frame.columns) == [*CORE_COLUMNS, "ce_loss", "annotator", "site"]
    assert list(frame["index"]) == [0, 1, 2]
    assert list(frame["path"]) == ["a.png", "b.png", "c.png"]  # the extra 'path' column does not override
    assert list(frame["given_label"]) == ["cat", "dog", "dog"]
    assert list(frame["predicted_label"]) == ["cat", "cat", "dog"]
    np.testing.assert_allclose(frame["predicted_prob"], [0.9, 0.8, 0.7], rtol=1e-6)
    np.testing.assert_allclose(frame["given_label_prob"], [0.9, 0.2, 0.7], rtol=1e-6)
    np.testing.assert_allclose(frame["clean_prob"], [0.9, 0.2, 0.7])
    np.testing.assert_allclose(frame["label_score"], [0.95, 0.1, 0.6])
    assert frame["is_label_issue"].dtype == bool
    assert list(frame["is_label_issue"]) == [False, True, False]
    assert list(frame["suggested_label"]) == ["dog", "cat", "cat"]
    np.testing.assert_allclose(frame["suggested_prob"], [0.1, 0.8, 0.3])
    np.testing.assert_allclose(frame["ce_loss"], [0.1, 1.6, 0.35])
    assert list(frame["annotator"]) == ["x", "y", "z"]
    assert list(frame["site"]) == ["s1", "s2", "s3"]
    for column in ("predicted_prob", "given_label_prob", "clean_prob", "label_score", "suggested_prob"):
        assert frame[column].dtype == np.float64


def test_build_audit_table_does_not_mutate_method_columns():
    columns = dict(hand_inputs().method_columns)
    build_audit_table(hand_inputs(method_columns=columns))
    assert set(columns) == set(hand_inputs().method_columns)


def test_write_read_audit_round_trip(tmp_path):
    frame = build_audit_table(hand_inputs())
    metadata = {"method": "ce", "class_names": ["cat", "dog"], "seed": 7, "settings": {"epochs": 3, "lr": 0.1}}
    target = tmp_path / "audit.parquet"
    write_audit(frame, target, metadata)
    back, meta = read_audit(target)
    assert meta == metadata
    assert list(back.columns) == list(frame.columns)
    pd.testing.assert_frame_equal(back, frame, check_dtype=False)
    assert back["is_label_issue"].dtype == bool
    assert [p.name for p in tmp_path.iterdir()] == ["audit.parquet"]


def test_read_audit_without_metadata(tmp_path):
    target = tmp_path / "plain.parquet"
    pd.DataFrame({"a": [1, 2]}).to_parquet(target)
    frame, meta = read_audit(target)
    assert meta == {}
    assert list(frame["a"]) == [1, 2]


def test_write_audit_overwrites(tmp_path):
    target = tmp_path / "audit.parquet"
    write_audit(build_audit_table(hand_inputs()), target, {"run": 1})
    write_audit(build_audit_table(hand_inputs()).iloc[:2], target, {"run": 2})
    frame, meta = read_audit(target)
    assert meta == {"run": 2} and len(frame) == 2


# ---------------------------------------------------------------- summary


def summary_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "given_label": ["a", "a", "a", "b", "b", "c"],
            "clean_prob": [0.8, 0.4, 0.2, 1.0, 0.9, 0.3],
            "is_label_issue": [False, True, True, False, False, True],
            "suggested_label": ["b", "b", "c", "a", "a", "a"],
        }
    )


def test_summarize_counts_and_rates():
    summary = summarize(summary_frame(), ["a", "b", "c", "d"])
    assert summary["n_samples"] == 6
    assert summary["n_label_issues"] == 3
    # the noise rate is the expected share of wrong labels, not the share flagged
    assert summary["noise_rate"] == pytest.approx((0.2 + 0.6 + 0.8 + 0.0 + 0.1 + 0.7) / 6)
    assert summary["health_score"] == pytest.approx(1 - summary["noise_rate"])
    per_class = {row["class"]: row for row in summary["per_class"]}
    assert [row["class"] for row in summary["per_class"]] == ["a", "b", "c", "d"]
    assert (per_class["a"]["n_samples"], per_class["a"]["n_label_issues"]) == (3, 2)
    assert per_class["a"]["noise_rate"] == pytest.approx(1.6 / 3)
    assert (per_class["b"]["n_samples"], per_class["b"]["n_label_issues"]) == (2, 0)
    assert per_class["b"]["noise_rate"] == pytest.approx(0.05)
    assert (per_class["c"]["n_samples"], per_class["c"]["n_label_issues"]) == (1, 1)
    assert per_class["c"]["noise_rate"] == pytest.approx(0.7)
    assert (per_class["d"]["n_samples"], per_class["d"]["n_label_issues"], per_class["d"]["noise_rate"]) == (0, 0, 0.0)
    json.dumps(summary)  # serialisable as is


def test_summarize_transition_matrix():
    summary = summarize(summary_frame(), ["a", "b", "c", "d"])
    transition = summary["class_transition"]
    assert transition["classes"] == ["a", "b", "c", "d"]
    matrix = np.array(transition["matrix"])
    # each sample counts clean_prob for its given label and 1 − clean_prob for its suggestion
    expected = np.array(
        [
            [1.4 / 3, 0.8 / 3, 0.8 / 3, 0],
            [0.05, 0.95, 0, 0],
            [0.7, 0, 0.3, 0],
            [0, 0, 0, 0],  # no samples given 'd'
        ]
    )
    np.testing.assert_allclose(matrix, expected, atol=1e-6)
    np.testing.assert_allclose(matrix[:3].sum(axis=1), 1.0, atol=1e-5)


def test_summarize_top_confusions():
    summary = summarize(summary_frame(), ["a", "b", "c", "d"])
    confusions = summary["top_confusions"]
    assert {(c["given_label"], c["suggested_label"], c["count"]) for c in confusions} == {
        ("a", "b", 1),
        ("a", "c", 1),
        ("c", "a", 1),
    }
    assert len(summarize(summary_frame(), ["a", "b", "c", "d"], top=2)["top_confusions"]) == 2
    frame = pd.DataFrame(
        {
            "given_label": ["x"] * 3 + ["y"],
            "clean_prob": [0.1, 0.2, 0.9, 0.3],
            "is_label_issue": [True, True, False, True],
            "suggested_label": ["y", "y", "y", "x"],
        }
    )
    confusions = summarize(frame, ["x", "y"])["top_confusions"]
    assert confusions == [
        {"given_label": "x", "suggested_label": "y", "count": 2},
        {"given_label": "y", "suggested_label": "x", "count": 1},
    ]


def test_summarize_from_audit_table():
    summary = summarize(build_audit_table(hand_inputs()), ["cat", "dog"])
    assert summary["n_label_issues"] == 1
    np.testing.assert_allclose(summary["class_transition"]["matrix"], [[0.9, 0.1], [0.55, 0.45]])
    np.testing.assert_allclose(np.array(summary["class_transition"]["matrix"]).sum(axis=1), 1.0)


def test_summarize_empty():
    frame = pd.DataFrame(
        {"given_label": [], "clean_prob": [], "is_label_issue": np.array([], dtype=bool), "suggested_label": []}
    )
    summary = summarize(frame, ["a", "b"])
    assert summary["n_samples"] == 0 and summary["noise_rate"] == 0.0 and summary["health_score"] == 1.0


# ---------------------------------------------------------------- corrected manifest


def input_rows() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": ["0", "1", "2", "3", "4"],
            "path": ["p0.png", "p1.png", "p2.png", "p3.png", "p4.png"],
            "label": ["cat", "cat", "dog", "dog", "cat"],
            "note": ["n0", "n1", "n2", "n3", "n4"],
        }
    )


def hand_audit() -> pd.DataFrame:
    # p0 fine; p1 flagged, its suggestion likely right; p2 flagged,
    # suggesting its own label (an older audit); p3 fine; p4 not audited
    audit = pd.DataFrame(
        {
            "path": ["p0.png", "p1.png", "p2.png", "p3.png"],
            "given_label": ["cat", "cat", "dog", "dog"],
            "clean_prob": [0.9, 0.2, 0.3, 0.8],
            "is_label_issue": [False, True, True, False],
            "predicted_label": ["cat", "dog", "dog", "dog"],
            "suggested_label": ["dog", "dog", "dog", "cat"],
            "suggested_prob": [0.1, 0.7, 0.6, 0.2],
        }
    )
    return audit.iloc[[2, 0, 3, 1]].reset_index(drop=True)  # order does not matter


NEW_COLUMNS = ["original_label", "action", "confidence"]


def test_corrected_manifest_relabel():
    out = corrected_manifest(input_rows(), hand_audit(), "relabel")
    assert list(out.columns) == ["id", "path", "label", "note", *NEW_COLUMNS]
    assert list(out["path"]) == [f"p{i}.png" for i in range(5)]
    assert list(out["id"]) == ["0", "1", "2", "3", "4"]
    assert list(out["note"]) == ["n0", "n1", "n2", "n3", "n4"]
    assert list(out["label"]) == ["cat", "dog", "dog", "dog", "cat"]
    assert list(out["original_label"]) == ["cat", "cat", "dog", "dog", "cat"]
    assert list(out["action"]) == ["keep", "relabel", "review", "keep", "review"]
    np.testing.assert_allclose(out["confidence"][:4], [0.9, 0.7, 0.3, 0.8])
    assert np.isnan(out["confidence"][4])


def test_corrected_manifest_is_default_relabel():
    pd.testing.assert_frame_equal(
        corrected_manifest(input_rows(), hand_audit()), corrected_manifest(input_rows(), hand_audit(), "relabel")
    )


def test_corrected_manifest_flag():
    out = corrected_manifest(input_rows(), hand_audit(), "flag")
    assert list(out.columns) == ["id", "path", "label", "note", *NEW_COLUMNS]
    assert list(out["label"]) == ["cat", "cat", "dog", "dog", "cat"]  # nothing changed
    assert list(out["original_label"]) == list(out["label"])
    assert list(out["action"]) == ["keep", "review", "review", "keep", "review"]
    np.testing.assert_allclose(out["confidence"][:4], [0.9, 0.2, 0.3, 0.8])


def test_corrected_manifest_drop():
    out = corrected_manifest(input_rows(), hand_audit(), "drop")
    assert list(out.columns) == ["id", "path", "label", "note", *NEW_COLUMNS]
    assert list(out["path"]) == ["p0.png", "p3.png", "p4.png"]
    assert list(out["action"]) == ["keep", "keep", "review"]
    assert list(out["label"]) == ["cat", "dog", "cat"]
    assert list(out.index) == [0, 1, 2]


def test_corrected_manifest_does_not_modify_input():
    rows = input_rows()
    corrected_manifest(rows, hand_audit(), "relabel")
    pd.testing.assert_frame_equal(rows, input_rows())


def test_corrected_manifest_unknown_policy():
    with pytest.raises(UserError, match="--policy 'fix'"):
        corrected_manifest(input_rows(), hand_audit(), "fix")


def test_corrected_manifest_audit_of_other_labels():
    audit = hand_audit()
    audit.loc[0, "path"] = "elsewhere.png"
    with pytest.raises(UserError, match="elsewhere.png"):
        corrected_manifest(input_rows(), audit, "relabel")


def test_corrected_manifest_from_parquet_audit(tmp_path):
    inputs = AuditInputs(
        paths=["p0.png", "p1.png", "p2.png", "p3.png"],
        given_labels=np.array([0, 0, 1, 1]),
        class_names=["cat", "dog"],
        probs=np.array([[0.9, 0.1], [0.3, 0.7], [0.4, 0.6], [0.2, 0.8]]),
        method_columns={
            "label_score": np.array([0.9, 0.3, 0.6, 0.8]),
            "clean_prob": np.array([0.9, 0.2, 0.3, 0.8]),
            "is_label_issue": np.array([False, True, True, False]),
            "suggested_label": np.array([1, 1, 0, 0]),
            "suggested_prob": np.array([0.1, 0.7, 0.4, 0.2]),
        },
    )
    write_audit(build_audit_table(inputs), tmp_path / "audit.parquet", {})
    audit, _ = read_audit(tmp_path / "audit.parquet")
    out = corrected_manifest(input_rows(), audit, "relabel")
    # p2's suggestion (cat, 0.4) is not more likely right than wrong: reviewed, not changed
    assert list(out["action"]) == ["keep", "relabel", "review", "keep", "review"]
    assert list(out["label"]) == ["cat", "dog", "dog", "dog", "cat"]
    np.testing.assert_allclose(out["confidence"][:4], [0.9, 0.7, 0.3, 0.8])
    write_manifest(out, tmp_path / "fixed.csv")
    back = pd.read_csv(tmp_path / "fixed.csv", dtype=str, keep_default_na=False)
    assert list(back.columns) == list(out.columns)
    assert list(back["label"]) == list(out["label"])
    assert list(back["action"]) == list(out["action"])


# ---------------------------------------------------------------- atomic writes


def test_atomic_path_leaves_target_untouched_on_error(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_path(target) as tmp:
            assert tmp.parent == tmp_path and tmp != target
            tmp.write_text("half-written")
            raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_atomic_path_no_target_created_on_error(tmp_path):
    target = tmp_path / "new.txt"
    with pytest.raises(ValueError):
        with atomic_path(target) as tmp:
            tmp.write_text("x")
            raise ValueError
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_replaces_on_success(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with atomic_path(target) as tmp:
        tmp.write_text("new")
        assert target.read_text() == "old"  # not visible until the body ends
    assert target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_write_json(tmp_path):
    target = tmp_path / "s.json"
    write_json(target, {"a": np.array([1, 2]), "p": tmp_path, "x": np.float64(0.5)})
    assert json.loads(target.read_text()) == {"a": [1, 2], "p": str(tmp_path), "x": 0.5}
    with pytest.raises(TypeError):
        write_json(target, {"bad": object()})
    assert json.loads(target.read_text())["a"] == [1, 2]  # a failed write keeps the old file
    assert [p.name for p in tmp_path.iterdir()] == ["s.json"]


def test_corrected_manifest_threshold_recomputes_the_flags():
    out = corrected_manifest(input_rows(), hand_audit(), "flag", threshold=0.85)
    assert list(out["action"]) == ["keep", "review", "review", "review", "review"]  # p0 (0.9) stays above 0.85
    out = corrected_manifest(input_rows(), hand_audit(), "relabel", threshold=0.25)
    assert list(out["action"]) == ["keep", "relabel", "keep", "keep", "review"]


def test_corrected_manifest_changes_only_to_what_the_network_predicts():
    audit = hand_audit()
    audit.loc[audit["path"] == "p1.png", "predicted_label"] = "cat"  # a suggestion the network does not predict
    out = corrected_manifest(input_rows(), audit, "relabel")
    assert list(out["action"]) == ["keep", "review", "review", "keep", "review"]


def test_untrusted_audit_changes_no_label():
    out = corrected_manifest(input_rows(), hand_audit(), "relabel", trusted=False)
    assert (out["label"] == out["original_label"]).all()
    assert list(out["action"]) == ["keep", "review", "review", "keep", "review"]


def test_relabel_changes_nothing_when_most_labels_look_wrong(tmp_path):
    audit = hand_audit()
    audit["clean_prob"] = [0.3, 0.2, 0.4, 0.45]  # expected share wrong: 0.66
    audit["is_label_issue"] = True
    corrected, warnings = run_relabel(input_rows(), audit, tmp_path / "fixed.csv", "relabel")
    assert [warning["code"] for warning in warnings] == ["most-wrong"]
    assert (corrected["label"] == corrected["original_label"]).all()
    assert pd.read_csv(tmp_path / "fixed.csv")["action"].tolist() == ["review"] * 5


def test_relabel_warnings_give_the_advice_of_the_audits_features(tmp_path):
    audit = hand_audit()
    audit["clean_prob"] = [0.3, 0.2, 0.4, 0.45]
    audit["is_label_issue"] = True
    frozen = {"calibration": {"separated": True}, "settings": {"features": "frozen"}}
    _, warnings = run_relabel(input_rows(), audit, tmp_path / "fixed.csv", "relabel", described=frozen)
    assert "--image-size 224" in warnings[0]["message"] and "--epochs" not in warnings[0]["message"]
    _, warnings = run_relabel(input_rows(), audit, tmp_path / "pixels.csv", "relabel")
    assert "--epochs" in warnings[0]["message"]
