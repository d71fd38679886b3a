"""The consensus job: combine finished audits of the same data
into one audit folder, or audit with several methods first.
"""

from __future__ import annotations

import time
from pathlib import Path

from .. import __version__
from ..config import RunConfig
from ..errors import UserError
from ..outputs import OutputDir, claim_output_dir
from ..progress import Reporter
from ..report.consensus import CONSENSUS, agreement_summary, check_same_samples, consensus_table, member_names
from ..report.folder import FINISHED_FILES, Audit, AuditFolder, read_audit_folder
from ..report.html import MethodInfo
from .audit import run_audit, run_summary

RULE = "majority of flags, a tie decided by mean clean_prob < 0.5"


def run_consensus(
    audits: list[Path], out_dir: Path, overwrite: bool = False, reporter: Reporter | None = None
) -> Audit:
    """Combines the finished audits `audits` (directories or their
    audit.parquet) of the same data into one audit in `out_dir`.

    Writes ``audit.parquet`` (method ``consensus``; columns in :mod:`lnlclean.report.consensus`),
    ``summary.json`` (with each member's label issues and how often the flags agree) and
    ``report.html``. Returns the consensus audit. Raises UserError for fewer than two audits,
    an audit that is missing or covers other samples, labels or classes, an `out_dir` that is
    one of the audits, or one that holds an earlier audit (unless `overwrite`).
    """
    if len(audits) < 2:
        raise UserError(
            "consensus: give at least two audit directories of the same data, "
            "e.g. lnlclean consensus audit-alr audit-pmnar"
        )
    members = [read_audit_folder(Path(path)) for path in audits]
    for member in members:
        if member.folder.path.resolve() == Path(out_dir).resolve():
            raise UserError(f"--out {out_dir}: is one of the audits being combined; choose another --out")
    return combine_audits(members, claim_output_dir(out_dir, FINISHED_FILES, overwrite), reporter)


def combine_audits(members: list[Audit], output: OutputDir, reporter: Reporter | None = None) -> Audit:
    """Writes the consensus of the finished audits `members` to
    the claimed `output` directory. Returns the consensus audit.

    Raises UserError when the audits cover other samples, labels or classes.
    """
    reporter = reporter or Reporter(quiet=True)
    started = time.perf_counter()
    check_same_samples({str(m.folder.path): m.frame for m in members})
    class_names = members[0].class_names()
    for member in members[1:]:
        if member.class_names() != class_names:
            raise UserError(
                f"{member.folder.path}: its classes differ from those of {members[0].folder.path}; "
                "combine audits of the same labels"
            )
    names = member_names([str(m.metadata.get("method") or m.summary.get("method") or "audit") for m in members])
    frames = {name: m.frame for name, m in zip(names, members)}
    table = consensus_table(frames, class_names)
    first = members[0].summary
    settings = {"audits": [str(m.folder.path.resolve()) for m in members], "rule": RULE}
    header = {
        "lnlclean_version": __version__,
        "method": CONSENSUS,
        "settings": settings,
        "seed": first.get("seed"),
        "device": first.get("device"),
        "images": first.get("images"),
        "labels_csv": first.get("labels_csv"),
    }
    timings = {
        "total_seconds": sum((m.summary.get("timings") or {}).get("total_seconds") or 0.0 for m in members),
        "combine_seconds": time.perf_counter() - started,
    }
    summary = run_summary(header, table, class_names, timings, [], consensus=agreement_summary(frames, table))
    metadata = {
        "lnlclean_version": __version__,
        "method": CONSENSUS,
        "settings": settings,
        "class_names": class_names,
        "seed": first.get("seed"),
    }
    folder = AuditFolder(output.path)
    with output.open():
        if output.writes:
            root = Path(first.get("images") or members[0].folder.path)
            folder.write(
                table, metadata, summary, class_names, root, MethodInfo(), source=f"{', '.join(names)} on {root}"
            )
    reporter.log(f"combined {len(members)} audits: {', '.join(names)}")
    return Audit(folder, table, metadata, summary, members[0].input_rows)


def run_audits_and_consensus(
    images: Path,
    labels_csv: Path | None,
    configs: dict[str, RunConfig],
    out_dir: Path,
    reporter: Reporter | None = None,
    **options,
) -> tuple[dict[str, Audit], Audit]:
    """Audits the folder once per method of `configs` (method → settings)
    into ``out_dir/<method>/``, then combines them in `out_dir`.

    `options` are :func:`~lnlclean.jobs.audit.run_audit`'s; with ``resume``, a method whose
    audit is already finished in ``out_dir/<method>/`` is not trained again. Returns each
    method's audit and the consensus (see :func:`run_consensus`). Raises UserError, before
    training, when `out_dir` already holds a consensus (unless ``overwrite``) or fewer than two
    methods are given.
    """
    reporter = reporter or Reporter(quiet=True)
    if len(configs) < 2:
        raise UserError(
            "--method: name two or more different methods, comma-separated, e.g. --method pmnar,alr,flywheel"
        )
    output = claim_output_dir(out_dir, FINISHED_FILES, options.get("overwrite", False))
    results = {}
    for name, config in configs.items():
        finished = AuditFolder(Path(out_dir) / name)
        if options.get("resume") and finished.audit_path.is_file():  # an earlier, interrupted run got this far
            reporter.log(f"{name}: reusing the finished audit in {finished.path}")
            results[name] = read_audit_folder(finished.path)
            continue
        reporter.log(f"auditing with {name} ({len(results) + 1} of {len(configs)})")
        results[name] = run_audit(images, labels_csv, config, finished.path, reporter=reporter, **options)
    return results, combine_audits(list(results.values()), output, reporter)
