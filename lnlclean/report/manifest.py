"""The corrected-label manifest that ``relabel`` writes.

It keeps the input's columns, in the input's order, and adds three:

- ``original_label``: the label as given;
- ``action``: ``keep``, ``relabel`` (label replaced by the suggestion: the row is flagged and
  its suggestion is more likely right than its label, see
  :func:`lnlclean.report.verdicts.relabels`), ``review`` (flagged, but the suggestion is not
  more likely right than the label; flagged under ``--policy flag``; or an image that could not
  be read) or — under ``--policy drop`` — the flagged rows are left out;
- ``confidence``: the suggestion's probability for relabelled rows, the clean probability
  otherwise.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import UserError
from ..fileio import atomic_path
from .verdicts import flags, relabels

POLICIES = ("relabel", "drop", "flag")


def corrected_manifest(
    input_rows: pd.DataFrame,
    audit: pd.DataFrame,
    policy: str = "relabel",
    threshold: float | None = None,
    trusted: bool = True,
) -> pd.DataFrame:
    """Returns the corrected manifest for `input_rows` (the CSV as read, ``path`` and ``label`` columns) and `audit`.

    A row is flagged as the audit's ``is_label_issue`` says, or, with `threshold`, where its
    ``clean_prob`` is below it. An audit that is not `trusted` (see
    :func:`lnlclean.report.trust.trusted`) changes no label. Rows of `input_rows` that the audit does not cover (images
    skipped as unreadable) are kept with action ``review``. Raises UserError for an unknown
    `policy` or an audit that does not match the input's paths.
    """
    if policy not in POLICIES:
        raise UserError(f"--policy {policy!r}: choose one of {', '.join(POLICIES)}")
    by_path = audit.set_index("path")
    unknown = sorted(set(by_path.index) - set(input_rows["path"]))
    if unknown:
        raise UserError(
            f"--from-audit: the audit lists {unknown[0]!r}, which the labels do not; audit these labels again"
        )
    out = input_rows.copy()
    out["original_label"] = out["label"]
    audited = out["path"].isin(by_path.index).to_numpy()
    rows = by_path.reindex(out["path"])
    clean_prob = rows["clean_prob"].to_numpy(dtype=np.float64)
    if threshold is None:
        flagged = rows["is_label_issue"].fillna(False).to_numpy(dtype=bool)
    else:
        flagged = audited & flags(np.nan_to_num(clean_prob, nan=1.0), threshold)
    suggested = rows["suggested_label"].astype(object).to_numpy()
    network_agrees = (rows["predicted_label"].astype(object) == rows["suggested_label"].astype(object)).to_numpy()
    differs = relabels(
        flagged,
        np.nan_to_num(clean_prob, nan=1.0),
        rows["suggested_prob"].fillna(0.0).to_numpy(dtype=np.float64),
        network_agrees,
        trusted,
    )
    differs &= suggested != out["label"].to_numpy(dtype=object)
    action = np.full(len(out), "keep", dtype=object)
    action[flagged] = "review"
    action[~audited] = "review"
    confidence = clean_prob
    if policy in ("relabel", "drop"):
        action[differs] = "relabel"
        out.loc[differs, "label"] = suggested[differs]
        confidence = np.where(differs, rows["suggested_prob"].to_numpy(dtype=np.float64), confidence)
    out["action"] = action
    out["confidence"] = confidence
    if policy == "drop":
        out = out[~flagged].reset_index(drop=True)
    return out


def write_manifest(frame: pd.DataFrame, path: Path) -> None:
    """Writes the corrected manifest as CSV at `path` atomically. Returns None."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
