"""The audit table (``audit.parquet``) and the run summary (``summary.json``).

Column order in ``audit.parquet``::

    index, path, given_label, predicted_label, predicted_prob, given_label_prob,
    clean_prob, label_score, is_label_issue, suggested_label, suggested_prob,
    <method>_* columns, then the input CSV's extra columns

Labels are written as class names. The Parquet schema metadata key ``lnlclean`` holds JSON
with the method, settings, class names, seed and version.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import UserError
from ..fileio import atomic_path

CORE_COLUMNS = {  # column → meaning, in the table's order
    "index": "row number in the input (the key that ties everything together)",
    "path": "image path relative to IMAGES",
    "given_label": "label in the input",
    "predicted_label": "argmax of the final network",
    "predicted_prob": "the final network's probability of `predicted_label`",
    "given_label_prob": "the final network's probability of the given label",
    "clean_prob": "the calibrated probability that the given label is right, the same rule for every method "
    "(docs/calibration.md)",
    "label_score": "the method's own signal that the given label is right (higher is more likely); it ranks, it is "
    "not a probability",
    "is_label_issue": "`clean_prob < --threshold` (a consensus decides it by majority)",
    "suggested_label": "the label to use if the given one is wrong: the method's refurbished label, or the best "
    "other label of the network; never the given label",
    "suggested_prob": "the probability that `suggested_label` is right: (1 − `clean_prob`) × the suggestion's "
    "share of the network's probability outside the given label",
}
METADATA_KEY = b"lnlclean"


@dataclass
class AuditInputs:
    """What the audit table is built from.

    Attributes:
        paths: relative path of each sample.
        given_labels: given label index of each sample (int, N).
        class_names: class names in index order.
        probs: final class probabilities (N×K).
        method_columns: the method's verdict columns (label_score, clean_prob, is_label_issue,
            suggested_label, suggested_prob; see :mod:`lnlclean.report.verdicts`) and its own columns.
        extra: the input's extra columns (N rows) or None.
    """

    paths: list[str]
    given_labels: np.ndarray
    class_names: list[str]
    probs: np.ndarray
    method_columns: dict[str, np.ndarray]
    extra: pd.DataFrame | None = None


def build_audit_table(inputs: AuditInputs) -> pd.DataFrame:
    """Returns the audit table: one row per sample in manifest order, columns as in the module docs."""
    names = np.asarray(inputs.class_names, dtype=object)
    rows = np.arange(len(inputs.paths))
    probs = inputs.probs
    predicted = probs.argmax(axis=1)
    columns = dict(inputs.method_columns)
    verdict = {
        name: columns.pop(name)
        for name in ("label_score", "clean_prob", "is_label_issue", "suggested_label", "suggested_prob")
    }
    frame = pd.DataFrame(
        {
            "index": rows,
            "path": inputs.paths,
            "given_label": names[inputs.given_labels],
            "predicted_label": names[predicted],
            "predicted_prob": probs[rows, predicted].astype(np.float64),
            "given_label_prob": probs[rows, inputs.given_labels].astype(np.float64),
            "clean_prob": np.asarray(verdict["clean_prob"], dtype=np.float64),
            "label_score": np.asarray(verdict["label_score"], dtype=np.float64),
            "is_label_issue": np.asarray(verdict["is_label_issue"], dtype=bool),
            "suggested_label": names[np.asarray(verdict["suggested_label"], dtype=np.int64)],
            "suggested_prob": np.asarray(verdict["suggested_prob"], dtype=np.float64),
        }
    )
    for name, values in columns.items():
        frame[name] = np.asarray(values)
    if inputs.extra is not None:
        for name in inputs.extra.columns:
            if name not in frame.columns:
                frame[name] = inputs.extra[name].to_numpy()
    return frame


def write_audit(frame: pd.DataFrame, path: Path, metadata: dict) -> None:
    """Writes `frame` to Parquet at `path` atomically, with `metadata` as JSON in the schema. Returns None."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    schema_meta = dict(table.schema.metadata or {})
    schema_meta[METADATA_KEY] = json.dumps(metadata, default=str).encode()
    table = table.replace_schema_metadata(schema_meta)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def read_audit(path: Path) -> tuple[pd.DataFrame, dict]:
    """Returns the audit table at `path` and its lnlclean metadata (empty dict when absent)."""
    table = pq.read_table(path)
    raw = (table.schema.metadata or {}).get(METADATA_KEY)
    return table.to_pandas(), (json.loads(raw) if raw else {})


def load_audit(path: Path, option: str = "--from-audit") -> tuple[pd.DataFrame, dict]:
    """Returns the audit table in the file `path` and its lnlclean metadata, after checking it is an lnlclean audit.

    Raises UserError naming `option` when the file is missing, not Parquet, or lacks the
    columns a corrected manifest and a report need. (An audit folder is read by
    :func:`lnlclean.report.folder.read_audit_folder`.)
    """
    if not Path(path).is_file():
        raise UserError(f"{option} {path}: no such file or folder")
    try:
        frame, metadata = read_audit(path)
    except Exception as err:  # pyarrow raises several types for a file that is not Parquet
        raise UserError(
            f"{option} {path}: not a readable audit.parquet ({type(err).__name__}); pass the audit.parquet that "
            "lnlclean audit wrote"
        ) from err
    missing = {
        "path",
        "given_label",
        "predicted_label",
        "is_label_issue",
        "suggested_label",
        "suggested_prob",
        "clean_prob",
    } - set(frame.columns)
    if missing:
        raise UserError(f"{option} {path}: missing column(s) {', '.join(sorted(missing))}; is it an lnlclean audit?")
    return frame, metadata


def summarize(frame: pd.DataFrame, class_names: list[str], top: int = 10) -> dict:
    """Returns the label-quality part of summary.json for an audit table.

    Holds the number of samples and of label issues (``is_label_issue``), the estimated noise
    rate (the expected share of wrong labels: the mean of 1 − clean_prob), the health score
    (1 − noise rate), per-class counts, label issues and noise rates (the same mean within each
    given label), the estimated class transition matrix (row: given label; column: what the
    label should be, counting each sample as clean_prob of its given label and 1 − clean_prob
    of its suggested label; rows sum to 1), and the `top` most frequent confusions among the
    label issues (given → suggested label).
    """
    n_classes = len(class_names)
    index_of = {name: i for i, name in enumerate(class_names)}
    given = frame["given_label"].map(index_of).to_numpy()
    flagged = frame["is_label_issue"].to_numpy(dtype=bool)
    suggested = frame["suggested_label"].map(index_of).to_numpy()
    wrong = 1.0 - frame["clean_prob"].to_numpy(dtype=np.float64)
    expected = np.zeros((n_classes, n_classes))
    np.add.at(expected, (given, given), 1.0 - wrong)
    np.add.at(expected, (given, suggested), wrong)
    row_totals = expected.sum(axis=1, keepdims=True)
    transition = np.divide(expected, row_totals, out=np.zeros(expected.shape), where=row_totals > 0)
    issues = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(issues, (given[flagged], suggested[flagged]), 1)
    per_class = []
    for k, name in enumerate(class_names):
        members = given == k
        per_class.append(
            {
                "class": name,
                "n_samples": int(members.sum()),
                "n_label_issues": int(flagged[members].sum()),
                "noise_rate": float(wrong[members].mean()) if members.any() else 0.0,
            }
        )
    confusions = [
        {"given_label": class_names[i], "suggested_label": class_names[j], "count": int(issues[i, j])}
        for i in range(n_classes)
        for j in range(n_classes)
        if i != j and issues[i, j] > 0
    ]
    confusions.sort(key=lambda row: -row["count"])
    noise_rate = float(wrong.mean()) if len(wrong) else 0.0
    return {
        "n_samples": int(len(frame)),
        "n_label_issues": int(flagged.sum()),
        "noise_rate": noise_rate,
        "health_score": 1.0 - noise_rate,
        "per_class": per_class,
        "class_transition": {"classes": list(class_names), "matrix": transition.round(6).tolist()},
        "top_confusions": confusions[:top],
    }
