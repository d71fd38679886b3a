"""The audit folder: the files a finished audit (or consensus) leaves, named, written and read back here.

An audit folder holds::

    audit.parquet   one row per sample (see :mod:`lnlclean.report.audit`)
    summary.json    the run's summary (see docs/outputs.md)
    report.html     the HTML report (see :mod:`lnlclean.report.html`)
    checkpoint.pt   only while a run is unfinished: what ``--resume`` continues from
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..errors import UserError
from ..fileio import write_json
from .audit import load_audit, write_audit
from .html import GALLERY_SIZE, MethodInfo, RenderedReport, ReportInputs, render_report, write_report
from .thumbnails import FolderImages

AUDIT_FILE = "audit.parquet"
SUMMARY_FILE = "summary.json"
REPORT_FILE = "report.html"
CHECKPOINT_FILE = "checkpoint.pt"
FINISHED_FILES = (AUDIT_FILE, SUMMARY_FILE, REPORT_FILE)  # what a finished audit leaves
WRITTEN_FILES = (*FINISHED_FILES, CHECKPOINT_FILE)  # all an audit run may write


@dataclass(frozen=True)
class AuditFolder:
    """Where an audit's files are: `path`/audit.parquet, summary.json, report.html and checkpoint.pt."""

    path: Path

    @property
    def audit_path(self) -> Path:
        """Returns the path of audit.parquet."""
        return self.path / AUDIT_FILE

    @property
    def summary_path(self) -> Path:
        """Returns the path of summary.json."""
        return self.path / SUMMARY_FILE

    @property
    def report_path(self) -> Path:
        """Returns the path of report.html."""
        return self.path / REPORT_FILE

    @property
    def checkpoint_path(self) -> Path:
        """Returns the path of the checkpoint of an unfinished run."""
        return self.path / CHECKPOINT_FILE

    def write(
        self,
        frame: pd.DataFrame,
        metadata: dict,
        summary: dict,
        class_names: list[str],
        images_root: Path,
        method: MethodInfo,
        source: str | None = None,
    ) -> None:
        """Writes audit.parquet (with `metadata`), summary.json and report.html, then removes the checkpoint.
        Returns None.

        The report's thumbnails are read from `images_root`; `method` says which columns and
        matrices are the method's own; `source` is what it says was audited (default:
        `images_root`). Each file is written atomically.
        """
        write_audit(frame, self.audit_path, metadata=metadata)
        write_json(self.summary_path, summary)
        write_folder_report(self.report_path, frame, summary, class_names, images_root, method, source)
        self.checkpoint_path.unlink(missing_ok=True)  # the audit is finished: nothing left to resume


@dataclass
class Audit:
    """A finished audit: its folder, its table and Parquet
    metadata, its summary, and the input rows it was made from.
    """

    folder: AuditFolder
    frame: pd.DataFrame
    metadata: dict
    summary: dict
    input_rows: pd.DataFrame

    @property
    def audit(self) -> pd.DataFrame:
        """Returns the audit table (the same as `frame`)."""
        return self.frame

    @property
    def audit_path(self) -> Path:
        """Returns the path of its audit.parquet."""
        return self.folder.audit_path

    @property
    def summary_path(self) -> Path:
        """Returns the path of its summary.json."""
        return self.folder.summary_path

    @property
    def report_path(self) -> Path:
        """Returns the path of its report.html."""
        return self.folder.report_path

    def class_names(self) -> list[str]:
        """Returns its class names: from the Parquet metadata, else the summary, else the labels it holds (sorted)."""
        names = self.metadata.get("class_names") or self.summary.get("class_transition", {}).get("classes")
        if not names:
            names = sorted(set(self.frame["given_label"].astype(str)) | set(self.frame["suggested_label"].astype(str)))
        return [str(name) for name in names]


def audit_file(path: Path, option: str) -> Path:
    """Returns the audit.parquet that `path` names: the file itself, or the one in the folder `path`.

    Raises UserError naming `option` when the folder holds none or nothing is at `path`.
    """
    path = Path(path)
    if path.is_dir():
        if not (path / AUDIT_FILE).is_file():
            raise UserError(
                f"{option} {path}: holds no {AUDIT_FILE}; pass the --out folder of a finished lnlclean audit"
            )
        return path / AUDIT_FILE
    if not path.is_file():
        raise UserError(f"{option} {path}: no such file or folder")
    return path


def read_audit_folder(path: Path, option: str = "audit", need_summary: bool = False) -> Audit:
    """Returns the finished audit at `path` (its folder, or its audit.parquet), read back.

    Its summary is empty when the folder has no summary.json, unless `need_summary`. Raises
    UserError naming `option` when `path` holds no readable lnlclean audit.
    """
    table_path = audit_file(path, option)
    folder = AuditFolder(table_path.parent)
    if need_summary and not folder.summary_path.is_file():
        raise UserError(
            f"{folder.path}: holds no {SUMMARY_FILE}; pass the --out directory of a finished lnlclean audit"
        )
    frame, metadata = load_audit(table_path, option=option)
    summary = read_summary(folder.summary_path) if folder.summary_path.is_file() else {}
    return Audit(folder, frame, metadata, summary, input_rows_of(frame))


def read_summary(path: Path) -> dict:
    """Returns the content of the summary.json at `path`. Raises UserError naming it when it is not a JSON object."""
    try:
        summary = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(
            f"{path}: not a readable summary.json ({err}); pass the --out directory of a finished lnlclean audit"
        ) from err
    if not isinstance(summary, dict):
        raise UserError(f"{path}: not an lnlclean summary.json (expected a JSON object)")
    return summary


def input_rows_of(frame: pd.DataFrame) -> pd.DataFrame:
    """Returns the input rows (path, label) an audit table was made from."""
    return pd.DataFrame({"path": frame["path"].to_numpy(), "label": frame["given_label"].to_numpy()})


def write_folder_report(
    path: Path,
    frame: pd.DataFrame,
    summary: dict,
    class_names: list[str],
    root: Path,
    method: MethodInfo,
    source: str | None = None,
    gallery_size: int = GALLERY_SIZE,
) -> RenderedReport:
    """Writes the HTML report of the audit table `frame` to `path`, its thumbnails read from the image folder
    `root`. Returns the rendered report.

    `method` says which columns and matrices are the method's own; `source` is what the page
    says was audited (default: `root`).
    """
    images = FolderImages(root, frame["path"].astype(str).tolist())
    inputs = ReportInputs(frame, summary, class_names, images, source=source or str(root), method=method)
    report = render_report(inputs, gallery_size)
    write_report(path, report)
    return report
