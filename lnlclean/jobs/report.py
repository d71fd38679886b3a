"""The report job: write the HTML report of a finished audit folder again."""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from ..fileio import check_output_file
from ..report.folder import REPORT_FILE, read_audit_folder, write_folder_report
from ..report.html import GALLERY_SIZE, is_report
from .audit import method_info


def run_report(
    audit_dir: Path,
    images: Path | None = None,
    out: Path | None = None,
    gallery_size: int = GALLERY_SIZE,
    overwrite: bool = False,
) -> tuple[Path, int]:
    """Writes the HTML report of the finished audit in `audit_dir` (see :mod:`lnlclean.report.html`).

    Images are read from `images`, or from the folder the audit was made on. The report goes to
    `out` (default: AUDIT_DIR/report.html); an earlier report there is replaced, any other
    file only with `overwrite`. Returns the path written and how many gallery images could not
    be read. Raises UserError when `audit_dir` holds no finished audit or `out` cannot be written.
    """
    audit_dir = Path(audit_dir)
    if not audit_dir.is_dir():
        raise UserError(f"{audit_dir}: no such directory; pass the --out directory of lnlclean audit")
    if gallery_size < 0:
        raise UserError(f"--gallery {gallery_size}: must be 0 or more")
    audit = read_audit_folder(audit_dir, option="AUDIT_DIR", need_summary=True)
    out = Path(out) if out is not None else audit.report_path
    inputs = [audit.audit_path, audit.summary_path]
    out = check_output_file(
        out, "--out", overwrite=overwrite or is_report(out), inputs=inputs, example_name=REPORT_FILE
    )
    root = Path(images) if images is not None else Path(audit.summary.get("images") or audit_dir)
    if images is not None and not root.is_dir():
        raise UserError(f"--images {root}: no such directory")
    out.parent.mkdir(parents=True, exist_ok=True)
    method = method_info(str(audit.metadata.get("method") or audit.summary.get("method") or ""))
    report = write_folder_report(
        out, audit.frame, audit.summary, audit.class_names(), root, method, gallery_size=gallery_size
    )
    return out, report.unreadable_images
