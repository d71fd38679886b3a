"""The relabel job: a corrected-label CSV from a finished audit, or from an audit trained on the way."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..config import RunConfig
from ..data.load import check_relabel_input, input_table
from ..data.manifest import read_manifest
from ..distributed import current as current_world
from ..errors import UserError
from ..progress import Reporter
from ..report.folder import Audit, read_audit_folder
from ..report.manifest import corrected_manifest, write_manifest
from ..report.trust import audit_warnings, trusted
from ..report.verdicts import flags
from .audit import run_audit


def relabel_from_audit(
    images: Path,
    labels_csv: Path | None,
    audit_path: Path,
    out_file: Path,
    policy: str,
    threshold: float | None = None,
    allow_outside_root: bool = False,
) -> tuple[pd.DataFrame, list[dict], pd.DataFrame]:
    """Writes the corrected-label CSV of the folder's labels from the
    finished audit at `audit_path` (its folder or audit.parquet).

    With `threshold` the flags are ``clean_prob < threshold`` rather than the audit's own.
    Returns the corrected manifest, the audit's warnings at these flags, and the input rows.
    Raises UserError for an audit that cannot be read, input without labels, or a
    `threshold` outside (0, 1).
    """
    audit = read_audit_folder(audit_path, option="--from-audit")
    manifest = read_manifest(images, labels_csv, allow_outside_root)
    check_relabel_input(manifest)
    if threshold is not None and not 0 < threshold < 1:
        raise UserError(f"--threshold {threshold}: must be between 0 and 1")
    rows = input_table(manifest)
    corrected, warnings = run_relabel(rows, audit.frame, out_file, policy, threshold, audit.metadata)
    return corrected, warnings, rows


def relabel_after_audit(
    images: Path,
    labels_csv: Path | None,
    config: RunConfig,
    audit_dir: Path,
    out_file: Path,
    policy: str,
    reporter: Reporter | None = None,
    **options,
) -> tuple[pd.DataFrame, list[dict], Audit]:
    """Audits the folder with `config` into `audit_dir` (see
    :func:`~lnlclean.jobs.audit.run_audit`, with `options`), then writes the corrected-label CSV.

    Returns the corrected manifest, the audit's warnings and the audit. Raises UserError for
    input without labels to correct, and as :func:`~lnlclean.jobs.audit.run_audit` does.
    """
    audit = run_audit(
        images,
        labels_csv,
        config,
        audit_dir,
        reporter=reporter,
        require_labels=True,
        out_option="--audit-dir",
        **options,
    )
    corrected, warnings = run_relabel(audit.input_rows, audit.frame, out_file, policy, None, audit.summary)
    return corrected, warnings, audit


def run_relabel(
    input_rows: pd.DataFrame,
    audit: pd.DataFrame,
    out_file: Path,
    policy: str,
    threshold: float | None = None,
    described: dict | None = None,
) -> tuple[pd.DataFrame, list[dict]]:
    """Writes the corrected-label CSV for `input_rows` under `policy` to `out_file` (rank 0 under torchrun).

    With `threshold` the flags are ``clean_prob < threshold`` rather than the audit's own.
    `described` is the audit's summary or Parquet metadata: its ``calibration``, with the flags,
    decides whether the audit is trusted to change labels, and its ``settings`` what the warnings
    advise (see :mod:`lnlclean.report.trust`). Returns the corrected manifest and the audit's
    warnings at these flags.
    """
    flagged = (
        audit["is_label_issue"].to_numpy(bool)
        if threshold is None
        else flags(audit["clean_prob"].to_numpy(np.float64), threshold)
    )
    checked = audit.assign(is_label_issue=flagged)
    described = described or {}
    warnings = audit_warnings(
        checked,
        {
            "noise_rate": float(1.0 - audit["clean_prob"].mean()),
            "calibration": described.get("calibration") or {},
            "settings": described.get("settings") or {},
        },
    )
    corrected = corrected_manifest(input_rows, checked, policy, trusted=trusted(warnings))
    if current_world().is_main:
        out_file.parent.mkdir(parents=True, exist_ok=True)
        write_manifest(corrected, out_file)
    return corrected, warnings
