"""The jobs behind the commands: audit a folder, relabel it, benchmark a method.

Each job wires data → engine → reports and returns what it wrote; the CLI only parses
options and prints.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from . import __version__
from .config import RunConfig
from .data import cache as image_cache
from .data.datasets import BenchmarkData, load_benchmark
from .data.manifest import Manifest, read_manifest
from .data.noise import NoiseSpec, inject_noise, partial_candidates
from .data.noise_file import noisy_training_labels, read_noise_file
from .distributed import current as current_world
from .engine import FitResult, TrainData, fit
from .errors import UserError
from .idn import idn_labels
from .fileio import check_output_dir, check_output_file, output_directory, refuse_earlier_output, remove_stale_temporaries, write_json
from .methods import candidate_readers, get_method
from .models import default_image_size
from .progress import Reporter
from .report import metrics
from .report.diagnostics import describe as describe_diagnostics, epoch_diagnostics
from .report.audit import AUDIT_FILE, AuditInputs, build_audit_table, load_audit, summarize, write_audit
from .report.trust import audit_warnings, trusted
from .report.verdicts import VerdictFit, flags, method_verdicts, relabels
from .report.consensus import CONSENSUS, Verdicts, agreement_summary, check_same_samples, combine, consensus_table, member_names
from .report.html import GALLERY_SIZE, RenderedReport, ReportInputs, is_report, render_report, write_report
from .report.thumbnails import ArrayImages, FolderImages
from .report.manifest import corrected_manifest, write_manifest

SUMMARY_FILE = "summary.json"
REPORT_FILE = "report.html"
CHECKPOINT_FILE = "checkpoint.pt"
AUDIT_OUTPUTS = (AUDIT_FILE, SUMMARY_FILE, REPORT_FILE)  # what a finished audit (or consensus) leaves in its directory
OUTPUT_FILES = (*AUDIT_OUTPUTS, CHECKPOINT_FILE)
MIN_CLASS_SIZE = 2


@dataclass
class AuditResult:
    """Files and tables an audit produced."""

    audit: pd.DataFrame
    summary: dict
    audit_path: Path
    summary_path: Path
    report_path: Path
    input_rows: pd.DataFrame


def load_dataset(
    images: Path, labels_csv: Path | None, config: RunConfig, cache_dir: Path | None,
    on_bad_image: str, reporter: Reporter, require_labels: bool = False, allow_outside_root: bool = False,
) -> tuple[Manifest, TrainData, dict[str, str], pd.DataFrame]:
    """Returns the manifest (bad images removed), the training data, skipped path → reason, and the input rows.

    Raises UserError for invalid input (see :func:`~lnlclean.data.manifest.read_manifest`), for a
    class with fewer than two images, for unreadable images when `on_bad_image` is ``fail``,
    and for a candidates-only CSV when `require_labels`.
    """
    if on_bad_image not in ("skip", "fail"):
        raise UserError(f"--on-bad-image {on_bad_image!r}: choose skip or fail")
    manifest = read_manifest(images, labels_csv, allow_outside_root, skip_missing=on_bad_image == "skip")
    if require_labels:
        check_relabel_input(manifest)
    if manifest.has_label_column:
        check_class_sizes(manifest)
    uses_candidates = training_candidates(manifest, config, reporter) is not None
    input_rows = input_table(manifest)
    option = image_cache.cache_dir_option(cache_dir)
    cache_dir = cache_dir or image_cache.default_cache_dir()
    with current_world().main_first():  # rank 0 builds the cache; the others then reuse it
        slot = image_cache.locate(manifest, cache_dir, config.image_size, default_image_size(config.backbone), option)
        cache = image_cache.reuse(slot, len(manifest))
        if cache is None:  # only then is there decoding to show
            with reporter.task(f"decoding {len(manifest)} images", total=len(manifest)) as advance:
                cache = image_cache.build(manifest, slot, config.workers, advance)
    reporter.log(f"image cache {'reused' if cache.reused else 'built'}: {cache.path} {tuple(cache.images.shape)}")
    if cache.resized:
        reporter.log(cache.resized)
    skipped = {manifest.paths[i]: reason for i, reason in sorted(cache.bad.items())}
    images_array = cache.images
    if skipped:
        if on_bad_image == "fail":
            path, reason = next(iter(skipped.items()))
            more = f" (and {len(skipped) - 1} more)" if len(skipped) > 1 else ""
            raise UserError(f"{manifest.root / path}: {reason}{more}; fix or remove it, or pass --on-bad-image skip")
        keep = np.ones(len(manifest), dtype=bool)
        keep[list(cache.bad)] = False
        manifest = manifest.subset(keep)
        images_array = cache.images.subset(keep)  # rows are read from the cache file as batches need them
        reporter.log(f"skipped {len(skipped)} missing or unreadable image(s); they are listed in {SUMMARY_FILE}")
    if len(np.unique(manifest.labels)) < 2:
        raise UserError(f"{manifest.source or manifest.root}: fewer than two classes left after skipping unreadable images")
    data = TrainData(
        images=images_array, labels=manifest.labels, n_classes=manifest.n_classes,
        candidates=manifest.candidates if uses_candidates else None,
        flip=config.flip, fingerprint=f"{cache.path.stem}:{_labels_digest(manifest)}",
    )
    return manifest, data, skipped, input_rows


def check_relabel_input(manifest: Manifest) -> None:
    """Raises UserError when `manifest` has no label column to correct (candidate sets only). Returns None."""
    if not manifest.has_label_column:
        raise UserError(
            f"{manifest.source}: has candidates but no label column, so there is no label to correct; "
            "run lnlclean audit --method alim and read suggested_label"
        )


def check_class_sizes(manifest: Manifest) -> None:
    """Raises UserError naming the row of a class with fewer than two images (often a typo in a label). Returns None.

    One image cannot tell a method what its class looks like, so its label can be neither
    confirmed nor doubted.
    """
    counts = np.bincount(manifest.labels, minlength=manifest.n_classes)
    for k in np.flatnonzero(counts < MIN_CLASS_SIZE):
        name = manifest.class_names[k]
        row = int(np.flatnonzero(manifest.labels == k)[0])
        where = f"{manifest.source}: row {row + 2}" if manifest.source else f"{manifest.root / manifest.paths[row]}"
        others = [n for n in manifest.class_names if n != name]
        close = difflib.get_close_matches(name, others, n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UserError(f"{where}: class {name!r} has only this one image{hint}; fix its label or add images of that class")


def check_previous_run(out_dir: Path, resume: bool, overwrite: bool, option: str = "--out") -> None:
    """Raises UserError when `out_dir` already holds a finished audit (unless `overwrite`) or an unfinished run's checkpoint (unless `resume` or `overwrite`). Returns None."""
    if resume and not overwrite and (out_dir / SUMMARY_FILE).exists():
        raise UserError(f"--resume: {out_dir} holds a finished audit, so there is nothing to resume (its results: {SUMMARY_FILE}, "
                        f"{AUDIT_FILE}, {REPORT_FILE}); pass --overwrite instead of --resume to train again")
    refuse_earlier_output(out_dir, AUDIT_OUTPUTS, overwrite, option)
    if not overwrite and not resume and (out_dir / CHECKPOINT_FILE).exists():
        raise UserError(
            f"{option} {out_dir}: holds the checkpoint of an unfinished run; pass --resume to continue it, "
            f"--overwrite to start over, or choose another {option}"
        )


def training_candidates(manifest: Manifest, config: RunConfig, reporter: Reporter) -> np.ndarray | None:
    """Returns the candidate sets `config.method` trains on: the manifest's, or None when it has none or the method reads labels only.

    Raises UserError when the CSV gives candidate sets only and the method needs labels.
    """
    if manifest.candidates is None:
        return None
    if get_method(config.method).reads_candidates:
        return manifest.candidates
    if not manifest.has_label_column:
        raise UserError(f"{manifest.source}: has candidates but no label column; --method {config.method} needs labels (candidate sets: --method {candidate_readers()})")
    reporter.log(f"--method {config.method} trains on the label column and ignores the candidates column (candidate sets: --method {candidate_readers()})")
    return None


def input_table(manifest: Manifest) -> pd.DataFrame:
    """Returns the input rows as text columns: path, label, then the CSV's extra columns."""
    columns = {"path": manifest.paths, "label": np.asarray(manifest.class_names, dtype=object)[manifest.labels]}
    columns.update({name: manifest.extra[name].to_numpy() for name in manifest.extra.columns})
    return pd.DataFrame(columns)  # built at once: column by column is quadratic in a wide CSV


def _labels_digest(manifest: Manifest) -> str:
    digest = hashlib.sha256("|".join(manifest.class_names).encode())
    digest.update(np.ascontiguousarray(manifest.labels).tobytes())
    if manifest.candidates is not None:
        digest.update(np.packbits(manifest.candidates).tobytes())
    return digest.hexdigest()[:16]


def run_audit(
    images: Path, labels_csv: Path | None, config: RunConfig, out_dir: Path,
    cache_dir: Path | None = None, on_bad_image: str = "fail", resume: bool = False,
    reporter: Reporter | None = None, require_labels: bool = False, overwrite: bool = False,
    allow_outside_root: bool = False, out_option: str = "--out",
) -> AuditResult:
    """Trains `config.method` on the folder and writes ``audit.parquet``, ``summary.json`` and ``report.html`` to `out_dir`.

    Returns the audit table, the summary and the paths written. Raises UserError for bad input,
    including a candidates-only CSV when `require_labels` (a relabel needs labels to correct),
    and when `out_dir` holds an earlier run (see :func:`check_previous_run`); `out_option`
    names `out_dir` in messages. Nothing is written to `out_dir` before the input is checked,
    and a failed run leaves no directory it created. Under torchrun every process trains and
    rank 0 writes the files.
    """
    reporter = reporter or Reporter(quiet=True)
    started = time.perf_counter()
    world = current_world()
    config.validate()
    get_method(config.method)
    check_output_dir(out_dir, out_option)
    check_previous_run(out_dir, resume, overwrite, out_option)
    manifest, data, skipped, input_rows = load_dataset(
        images, labels_csv, config, cache_dir, on_bad_image, reporter, require_labels, allow_outside_root
    )
    cache_seconds = time.perf_counter() - started
    with output_directory(out_dir, out_option, create=world.is_main) as out_dir:
        if world.is_main:
            remove_stale_temporaries(out_dir, OUTPUT_FILES)
        result = fit(data, config, reporter, checkpoint_path=out_dir / CHECKPOINT_FILE, resume=resume)
        config = dataclasses.replace(config, epochs=result.epochs)  # those --time-budget chose
        columns, calibration = fitted_verdicts(result, config.threshold)
        frame = audit_table(result, columns, manifest.paths, manifest.labels, manifest.class_names, manifest.extra)
        timings = {
            "total_seconds": result.earlier_seconds + time.perf_counter() - started, "cache_seconds": cache_seconds,
            "train_seconds": result.seconds, "epoch_seconds": [h["seconds"] for h in result.history],
        }
        summary = audit_summary(manifest, skipped, config, result, frame, timings, calibration)
        audit_path, summary_path, report_path = out_dir / AUDIT_FILE, out_dir / SUMMARY_FILE, out_dir / REPORT_FILE
        if world.is_main:
            write_audit(frame, audit_path, metadata=audit_metadata(config, manifest.class_names, calibration))
            write_json(summary_path, summary)
            write_folder_report(report_path, frame, summary, manifest.class_names, manifest.root)
            (out_dir / CHECKPOINT_FILE).unlink(missing_ok=True)  # the audit is finished: nothing left to resume
    return AuditResult(frame, summary, audit_path, summary_path, report_path, input_rows)


def audit_summary(
    manifest: Manifest, skipped: dict[str, str], config: RunConfig, result: FitResult, frame: pd.DataFrame, timings: dict,
    calibration: VerdictFit,
) -> dict:
    """Returns the content of summary.json for a finished audit (see the README's Outputs section)."""
    return {
        **run_header(config, result),
        "images": str(manifest.root.resolve()), "labels_csv": str(manifest.source.resolve()) if manifest.source else None,
        **verdict_summary(frame, manifest.class_names, config, result, calibration),
        "n_skipped": len(skipped),
        "skipped": [{"path": p, "reason": r} for p, r in skipped.items()],
        "timings": timings,
        "history": result.history,
    }


def verdict_summary(frame: pd.DataFrame, class_names: list[str], config: RunConfig, result: FitResult, calibration: VerdictFit) -> dict:
    """Returns what summary.json says of the verdicts: counts and rates (see :func:`summarize`), the threshold, the calibration, the method's summary and the warnings."""
    summary = {
        **summarize(frame, class_names), "threshold": config.threshold,
        "calibration": dataclasses.asdict(calibration), "method_summary": result.method.summary(),
    }
    return {**summary, "warnings": audit_warnings(frame, summary)}


def fitted_verdicts(result: FitResult, threshold: float) -> tuple[dict[str, np.ndarray], VerdictFit]:
    """Returns the method's audit columns with its verdicts at `threshold` (see :mod:`lnlclean.report.verdicts`), and how clean_prob was fitted."""
    method, setup = result.method, result.method.setup
    candidates = None if setup.candidates is None else setup.candidates.cpu().numpy()
    return method_verdicts(
        method.audit(result.probs), result.probs, setup.given_labels.cpu().numpy(), threshold, candidates,
    )


def audit_table(result: FitResult, columns: dict[str, np.ndarray], paths, given_labels, class_names, extra=None) -> pd.DataFrame:
    """Returns the audit table for a finished fit and its verdict `columns` (see :mod:`lnlclean.report.audit`)."""
    return build_audit_table(AuditInputs(
        paths=list(paths), given_labels=np.asarray(given_labels), class_names=list(class_names),
        probs=result.probs, method_columns=columns, extra=extra,
    ))


def run_header(config: RunConfig, result: FitResult) -> dict:
    """Returns the summary fields every run shares: version, method, settings, seed, device."""
    return {
        "lnlclean_version": __version__, "method": config.method, "settings": config.to_dict(),
        "seed": config.seed, "device": result.device, "resumed_from_epoch": result.resumed_from_epoch,
        "resumed_at": result.resumed_at,
    }


def audit_metadata(config: RunConfig, class_names: list[str], calibration: VerdictFit) -> dict:
    """Returns the JSON stored in the audit's Parquet schema metadata: version, method, settings, class names, seed and the calibration fit."""
    return {
        "lnlclean_version": __version__, "method": config.method, "settings": config.to_dict(),
        "class_names": list(class_names), "seed": config.seed, "calibration": dataclasses.asdict(calibration),
    }


def run_report(audit_dir: Path, images: Path | None = None, out: Path | None = None,
               gallery_size: int = GALLERY_SIZE, overwrite: bool = False) -> tuple[Path, int]:
    """Writes the HTML report of the finished audit in `audit_dir` (see :mod:`lnlclean.report.html`).

    Images are read from `images`, or from the folder the audit was made on. The report goes to
    `out` (default: AUDIT_DIR/report.html); an earlier report there is replaced, any other
    file only with `overwrite`. Returns the path written and how many gallery images could not
    be read. Raises UserError when `audit_dir` holds no finished audit or `out` cannot be written.
    """
    audit_dir = Path(audit_dir)
    if not audit_dir.is_dir():
        raise UserError(f"{audit_dir}: no such directory; pass the --out directory of lnlclean audit")
    audit_path, summary_path = audit_dir / AUDIT_FILE, audit_dir / SUMMARY_FILE
    for needed in (audit_path, summary_path):
        if not needed.is_file():
            raise UserError(f"{audit_dir}: holds no {needed.name}; pass the --out directory of a finished lnlclean audit")
    if gallery_size < 0:
        raise UserError(f"--gallery {gallery_size}: must be 0 or more")
    frame, metadata = load_audit(audit_path, option="AUDIT_DIR")
    summary = read_summary(summary_path)
    out = Path(out) if out is not None else audit_dir / REPORT_FILE
    out = check_output_file(out, "--out", overwrite=overwrite or is_report(out), inputs=[audit_path, summary_path], example_name=REPORT_FILE)
    root = Path(images) if images is not None else Path(summary.get("images") or audit_dir)
    if images is not None and not root.is_dir():
        raise UserError(f"--images {root}: no such directory")
    out.parent.mkdir(parents=True, exist_ok=True)
    report = write_folder_report(out, frame, summary, audit_class_names(frame, metadata, summary), root, gallery_size=gallery_size)
    return out, report.unreadable_images


def write_folder_report(
    path: Path, frame: pd.DataFrame, summary: dict, class_names: list[str], root: Path, source: str | None = None,
    gallery_size: int = GALLERY_SIZE,
) -> RenderedReport:
    """Writes the HTML report of the audit table `frame` to `path`, its thumbnails read from the image folder `root`. Returns the rendered report.

    `source` is what the page says was audited (default: `root`).
    """
    images = FolderImages(root, frame["path"].astype(str).tolist())
    report = render_report(ReportInputs(frame, summary, class_names, images, source=source or str(root)), gallery_size)
    write_report(path, report)
    return report


def audit_class_names(frame: pd.DataFrame, metadata: dict, summary: dict) -> list[str]:
    """Returns the class names of an audit: from its Parquet metadata, else its summary, else the labels it holds (sorted)."""
    names = metadata.get("class_names") or summary.get("class_transition", {}).get("classes")
    if not names:
        names = sorted(set(frame["given_label"].astype(str)) | set(frame["suggested_label"].astype(str)))
    return [str(name) for name in names]


def read_summary(path: Path) -> dict:
    """Returns the content of the summary.json at `path`. Raises UserError naming it when it is not a JSON object."""
    try:
        summary = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"{path}: not a readable summary.json ({err}); pass the --out directory of a finished lnlclean audit")
    if not isinstance(summary, dict):
        raise UserError(f"{path}: not an lnlclean summary.json (expected a JSON object)")
    return summary


def run_consensus(audits: list[Path], out_dir: Path, overwrite: bool = False, reporter: Reporter | None = None) -> AuditResult:
    """Combines the finished audits `audits` (directories or their audit.parquet) of the same data into one audit in `out_dir`.

    Writes ``audit.parquet`` (method ``consensus``; columns in :mod:`lnlclean.report.consensus`),
    ``summary.json`` (with each member's label issues and how often the flags agree) and
    ``report.html``. Returns them as an AuditResult. Raises UserError for fewer than two
    audits, an audit that is missing or covers other samples, labels or classes, an
    `out_dir` that is one of the audits, or one that holds an earlier audit (unless `overwrite`).
    """
    reporter = reporter or Reporter(quiet=True)
    started = time.perf_counter()
    if len(audits) < 2:
        raise UserError("consensus: give at least two audit directories of the same data, e.g. lnlclean consensus audit-alr audit-pmnar")
    members = [load_member(Path(path)) for path in audits]
    for member in members:
        if member.directory.resolve() == Path(out_dir).resolve():
            raise UserError(f"--out {out_dir}: is one of the audits being combined; choose another --out")
    check_output_dir(out_dir)
    refuse_earlier_output(out_dir, AUDIT_OUTPUTS, overwrite)
    check_same_samples({str(m.directory): m.frame for m in members})
    class_names = audit_class_names(members[0].frame, members[0].metadata, members[0].summary)
    for member in members[1:]:
        if audit_class_names(member.frame, member.metadata, member.summary) != class_names:
            raise UserError(f"{member.directory}: its classes differ from those of {members[0].directory}; combine audits of the same labels")
    names = member_names([str(m.metadata.get("method") or m.summary.get("method") or "audit") for m in members])
    frames = {name: m.frame for name, m in zip(names, members)}
    table = consensus_table(frames, class_names)
    first = members[0].summary
    settings = {"audits": [str(m.directory.resolve()) for m in members], "rule": "majority of flags, a tie decided by mean clean_prob < 0.5"}
    summary = {
        "lnlclean_version": __version__, "method": CONSENSUS, "settings": settings, "seed": first.get("seed"),
        "device": first.get("device"), "images": first.get("images"), "labels_csv": first.get("labels_csv"),
        **summarize(table, class_names), "consensus": agreement_summary(frames, table),
        "timings": {"total_seconds": sum((m.summary.get("timings") or {}).get("total_seconds") or 0.0 for m in members),
                    "combine_seconds": time.perf_counter() - started},
        "history": [],
    }
    summary["warnings"] = audit_warnings(table, summary)
    writes = current_world().is_main
    with output_directory(out_dir, create=writes) as out_dir:
        audit_path, summary_path, report_path = out_dir / AUDIT_FILE, out_dir / SUMMARY_FILE, out_dir / REPORT_FILE
        if not writes:
            return AuditResult(table, summary, audit_path, summary_path, report_path, input_table_of(table))
        metadata = {"lnlclean_version": __version__, "method": CONSENSUS, "settings": settings, "class_names": class_names, "seed": first.get("seed")}
        write_audit(table, audit_path, metadata=metadata)
        write_json(summary_path, summary)
        root = Path(first.get("images") or members[0].directory)
        write_folder_report(report_path, table, summary, class_names, root, source=f"{', '.join(names)} on {root}")
    reporter.log(f"combined {len(members)} audits: {', '.join(names)}")
    return AuditResult(table, summary, audit_path, summary_path, report_path, input_table_of(table))


def run_audits_and_consensus(
    images: Path, labels_csv: Path | None, configs: dict[str, RunConfig], out_dir: Path, reporter: Reporter | None = None, **options,
) -> tuple[dict[str, AuditResult], AuditResult]:
    """Audits the folder once per method of `configs` (method → settings) into ``out_dir/<method>/``, then combines them in `out_dir`.

    `options` are :func:`run_audit`'s; with ``resume``, a method whose audit is already finished
    in ``out_dir/<method>/`` is not trained again. Returns each method's result and the consensus
    (see :func:`run_consensus`). Raises UserError, before training, when `out_dir` already holds
    a consensus (unless ``overwrite``) or fewer than two methods are given.
    """
    reporter = reporter or Reporter(quiet=True)
    if len(configs) < 2:
        raise UserError("--method: name two or more different methods, comma-separated, e.g. --method pmnar,alr,flywheel")
    check_output_dir(out_dir)
    refuse_earlier_output(out_dir, AUDIT_OUTPUTS, options.get("overwrite", False))
    results = {}
    for name, config in configs.items():
        finished = out_dir / name / AUDIT_FILE
        if options.get("resume") and finished.is_file():  # an earlier, interrupted run got this far
            reporter.log(f"{name}: reusing the finished audit in {finished.parent}")
            member = load_member(finished.parent)
            results[name] = AuditResult(member.frame, member.summary, finished, finished.parent / SUMMARY_FILE,
                                        finished.parent / REPORT_FILE, input_table_of(member.frame))
            continue
        reporter.log(f"auditing with {name} ({len(results) + 1} of {len(configs)})")
        results[name] = run_audit(images, labels_csv, config, out_dir / name, reporter=reporter, **options)
    return results, run_consensus([out_dir / name for name in configs], out_dir, options.get("overwrite", False), reporter)


@dataclass
class Member:
    """A finished audit read back: where it is, its table and metadata, and its summary."""

    directory: Path
    frame: pd.DataFrame
    metadata: dict
    summary: dict


def load_member(path: Path) -> Member:
    """Returns the audit at `path` (its directory, or its audit.parquet). Raises UserError when it is not a finished audit."""
    directory = path.parent if path.suffix == ".parquet" else path
    if not (directory / AUDIT_FILE).is_file():
        raise UserError(f"{path}: holds no {AUDIT_FILE}; pass the --out directory of a finished lnlclean audit")
    frame, metadata = load_audit(directory / AUDIT_FILE, option="audit")
    summary = read_summary(directory / SUMMARY_FILE) if (directory / SUMMARY_FILE).is_file() else {}
    return Member(directory, frame, metadata, summary)


def input_table_of(frame: pd.DataFrame) -> pd.DataFrame:
    """Returns the input rows (path, label) an audit table was made from."""
    return pd.DataFrame({"path": frame["path"].to_numpy(), "label": frame["given_label"].to_numpy()})


def run_relabel(
    input_rows: pd.DataFrame, audit: pd.DataFrame, out_file: Path, policy: str, threshold: float | None = None, calibration: dict | None = None,
) -> tuple[pd.DataFrame, list[dict]]:
    """Writes the corrected-label CSV for `input_rows` under `policy` to `out_file` (rank 0 under torchrun).

    With `threshold` the flags are ``clean_prob < threshold`` rather than the audit's own.
    `calibration` is the audit's (its summary or metadata); with the flags it decides whether
    the audit is trusted to change labels (see :mod:`lnlclean.report.trust`). Returns the
    corrected manifest and the audit's warnings at these flags.
    """
    flagged = audit["is_label_issue"].to_numpy(bool) if threshold is None else flags(audit["clean_prob"].to_numpy(np.float64), threshold)
    checked = audit.assign(is_label_issue=flagged)
    warnings = audit_warnings(checked, {"noise_rate": float(1.0 - audit["clean_prob"].mean()), "calibration": calibration or {}})
    corrected = corrected_manifest(input_rows, checked, policy, trusted=trusted(warnings))
    if current_world().is_main:
        out_file.parent.mkdir(parents=True, exist_ok=True)
        write_manifest(corrected, out_file)
    return corrected, warnings


@dataclass
class NoisyLabels:
    """The labels of a benchmark run: given (noise injected), true, candidate sets (or None), which given labels are wrong, and the number of classes."""

    given: np.ndarray
    true_labels: np.ndarray
    candidates: np.ndarray | None
    is_noisy: np.ndarray
    n_classes: int


@dataclass
class BenchmarkRun:
    """A scored benchmark run: its JSON entry (`scores`), the method's per-sample verdicts, and the labels they are scored against."""

    scores: dict
    verdicts: Verdicts
    labels: NoisyLabels


def run_benchmark_one(
    dataset: str, noise: NoiseSpec, config: RunConfig, data_dir: Path | None = None,
    train_size: int | None = None, cache_dir: Path | None = None, reporter: Reporter | None = None,
    partial_rate: float | None = None, report_path: Path | None = None, diagnose: bool = False,
) -> dict:
    """Injects `noise` into `dataset`, trains `config.method`, and returns the scored run as a dict (see :func:`benchmark_run`)."""
    return benchmark_run(dataset, noise, config, data_dir, train_size, cache_dir, reporter, partial_rate, report_path, diagnose).scores


def benchmark_run(
    dataset: str, noise: NoiseSpec, config: RunConfig, data_dir: Path | None = None,
    train_size: int | None = None, cache_dir: Path | None = None, reporter: Reporter | None = None,
    partial_rate: float | None = None, report_path: Path | None = None, diagnose: bool = False,
) -> BenchmarkRun:
    """Injects `noise` into `dataset`, trains `config.method`, and returns the scored run.

    Its `scores` hold dataset, noise, method, seed, epochs, true and estimated noise rate,
    detection precision/recall/F1/AUROC, test accuracy, relabel accuracy on flagged noisy
    samples, label accuracy before and after the relabel manifest, seconds, device, and the
    method's own summary (``method_summary``) and the per-epoch ``history``; with `diagnose`
    every epoch's history also holds where the network stands against the true labels (see
    :mod:`lnlclean.report.diagnostics`), logged as a line per epoch.

    With `partial_rate` the run gets candidate sets instead of single labels (see
    :func:`~lnlclean.data.noise.partial_candidates`; `noise` gives η): a sample is noisy when its
    true label is outside its set, "label accuracy before" is the expected accuracy of picking a
    candidate at random, and "after" that of the method's suggested label for every sample.
    With `report_path` the run's HTML report is written there too, its clean_prob histogram
    split by which labels are truly wrong. Raises UserError for a method that does not read
    candidate sets or a non-symmetric `noise`.
    """
    reporter = reporter or Reporter(quiet=True)
    world = current_world()
    config.validate()
    method_cls = get_method(config.method)
    if partial_rate is not None:
        check_partial_benchmark(noise, method_cls, partial_rate)
    reporter.log(f"loading {dataset}")
    with world.main_first():  # a download or an image cache is made once
        bench = load_benchmark(dataset, data_dir, train_size, cache_dir)
    true_labels = bench.train_labels
    candidates = None
    if partial_rate is None:
        given = benchmark_labels(bench, noise, config, cache_dir, reporter)
    else:
        candidates = partial_candidates(true_labels, partial_rate, noise.rate, len(bench.class_names), seed=config.seed)
        given = candidates.argmax(axis=1)
    rows = np.arange(len(given))
    is_noisy = given != true_labels if candidates is None else ~candidates[rows, true_labels]
    labels = NoisyLabels(given, true_labels, candidates, is_noisy, len(bench.class_names))
    data = TrainData(
        images=bench.train_images, labels=given, n_classes=len(bench.class_names), candidates=candidates,
        test_images=bench.test_images, test_labels=bench.test_labels, flip=bench.flip and config.flip,
        fingerprint=f"{dataset}:{noise}:{partial_rate}:{train_size}", true_labels=true_labels,
    )
    result = fit(data, config, reporter, diagnose=truth_diagnostics(labels, config.threshold, reporter) if diagnose else None)
    config = dataclasses.replace(config, epochs=result.epochs)  # those --time-budget chose
    columns, calibration = fitted_verdicts(result, config.threshold)
    verdicts = Verdicts(
        config.method, columns["clean_prob"], columns["is_label_issue"], columns["suggested_label"], columns["suggested_prob"], result.probs.argmax(axis=1),
    )
    names = np.asarray(bench.class_names, dtype=object)
    frame = audit_table(result, columns, [f"train/{i:05d}" for i in rows], given, bench.class_names, pd.DataFrame({"true_label": names[true_labels]}))
    summary = {
        **run_header(config, result), **verdict_summary(frame, list(bench.class_names), config, result, calibration),
        "timings": {"total_seconds": result.seconds}, "history": result.history,
    }
    if report_path is not None and world.is_main:
        source = f"{dataset} {noise}" + (f" (candidate sets, partial rate {partial_rate:g})" if partial_rate is not None else "")
        inputs = ReportInputs(frame, summary, list(bench.class_names), ArrayImages(bench.train_images), is_noisy=is_noisy, source=source)
        write_report(report_path, render_report(inputs))
    scores = {
        "dataset": dataset, "noise": str(noise), "partial_rate": partial_rate, "method": config.method, "seed": config.seed,
        "epochs": config.epochs, "backbone": config.backbone, "n_train": int(len(given)),
        **score_verdicts(verdicts, labels, config.threshold, trusted(summary["warnings"])),
        "disagreement": disagreement_scores(result.probs, labels),
        "test_accuracy": result.test_accuracy,
        "seconds": result.seconds, "seconds_per_epoch": float(np.mean([h["seconds"] for h in result.history])) if result.history else None,
        "device": result.device, "settings": config.to_dict(), "lnlclean_version": __version__,
        "calibration": summary["calibration"], "warnings": summary["warnings"], "method_summary": summary["method_summary"],
        "history": result.history,
    }
    return BenchmarkRun(scores, verdicts, labels)


def truth_diagnostics(labels: NoisyLabels, threshold: float, reporter: Reporter) -> Callable[[int, np.ndarray], dict]:
    """Returns the engine's per-epoch `diagnose` callback for a benchmark's `labels`: it logs and returns :func:`~lnlclean.report.diagnostics.epoch_diagnostics`."""

    def diagnose(epoch: int, probs: np.ndarray) -> dict:
        figures = epoch_diagnostics(probs, labels.given, labels.true_labels, labels.is_noisy, threshold, labels.candidates)
        reporter.log(describe_diagnostics(epoch, figures))
        return figures

    return diagnose


def benchmark_labels(bench: BenchmarkData, noise: NoiseSpec, config: RunConfig, cache_dir: Path | None, reporter: Reporter) -> np.ndarray:
    """Returns the given labels of a benchmark's training images under `noise` (deterministic in ``config.seed``).

    Instance-dependent noise trains (or reuses) its classifier, see :mod:`lnlclean.idn`; file
    noise reads the file, see :mod:`lnlclean.data.noise_file`.
    """
    if noise.kind == "idn":
        return idn_labels(bench, noise.rate, config.seed, config.device, cache_dir or image_cache.default_cache_dir(), reporter)
    if noise.kind == "file":
        labels = read_noise_file(Path(noise.path), noise.key, bench.class_names)
        return noisy_training_labels(bench, labels, Path(noise.path))
    return inject_noise(bench.train_labels, noise, bench.class_names, bench.name, seed=config.seed)


def score_verdicts(verdicts: Verdicts, labels: NoisyLabels, threshold: float, trusted: bool = True) -> dict:
    """Returns how well `verdicts` find and fix the wrong labels of `labels`.

    Holds true and estimated noise rate (the mean of 1 − clean_prob) and the flagged share,
    detection precision/recall/F1/AUROC, relabel accuracy on flagged noisy samples, label
    accuracy before and after ``relabel`` (which changes nothing when the audit is not
    `trusted`; with candidate sets: of a random candidate before, of every suggestion after),
    how many labels it changed and the share of wrong labels it fixed.
    """
    given, true_labels, candidates, is_noisy = labels.given, labels.true_labels, labels.candidates, labels.is_noisy
    changed = relabels(verdicts.flagged, verdicts.clean_prob, verdicts.suggested_prob, verdicts.suggested == verdicts.predicted, trusted)
    if candidates is None:
        before = metrics.label_accuracy(given, true_labels)
        after = metrics.corrected_labels(given, verdicts.suggested, changed)
    else:
        rows = np.arange(len(given))
        before = float(np.mean(candidates[rows, true_labels] / candidates.sum(axis=1)))
        after = verdicts.suggested  # the method's choice within or outside each set, for every sample
    return {
        "true_noise_rate": float(is_noisy.mean()), "estimated_noise_rate": float(1.0 - np.mean(verdicts.clean_prob)),
        "flagged_rate": float(np.mean(verdicts.flagged)),
        **metrics.detection_metrics(is_noisy, verdicts.clean_prob, threshold, verdicts.flagged),
        "relabel_accuracy": metrics.relabel_accuracy(true_labels, given, verdicts.suggested, verdicts.flagged, is_noisy),
        "label_accuracy_before": before,
        "label_accuracy_after": metrics.label_accuracy(after, true_labels),
        "relabelled": int(changed.sum()),
        "wrong_labels_fixed": metrics.fixed_share(given, after, true_labels),
    }


def disagreement_scores(probs: np.ndarray, labels: NoisyLabels) -> dict:
    """Returns the flagged share, precision, recall and F1 of the argmax-disagreement rule (flag where the network's argmax is not the given label) on the same probabilities, for comparison."""
    flagged = np.asarray(probs).argmax(axis=1) != labels.given
    scores = metrics.detection_metrics(labels.is_noisy, (~flagged).astype(np.float64), 0.5, flagged)
    return {"flagged_rate": float(flagged.mean()), **{key: scores[key] for key in ("precision", "recall", "f1")}}


def score_consensus(runs: list[BenchmarkRun], threshold: float = 0.5) -> dict:
    """Returns the benchmark entry of the consensus of `runs` (same dataset, noise and seed; see :mod:`lnlclean.report.consensus`).

    Scored like a method; ``method`` is ``consensus(<member>+<member>…)``, ``seconds`` the sum of
    the members', ``test_accuracy`` None (no network of its own), and ``members`` each member's F1.
    Its relabel changes nothing unless every member's audit is trusted.
    """
    combined = combine([run.verdicts for run in runs], runs[0].labels.n_classes, threshold)
    names = "+".join(run.scores["method"] for run in runs)
    verdicts = Verdicts(
        CONSENSUS, combined["clean_prob"], combined["is_label_issue"], combined["suggested_label"], combined["suggested_prob"], combined["predicted_label"],
    )
    first = runs[0].scores
    return {
        **{key: first[key] for key in ("dataset", "noise", "partial_rate", "seed", "epochs", "backbone", "n_train")},
        "method": f"{CONSENSUS}({names})",
        **score_verdicts(verdicts, runs[0].labels, threshold, all(trusted(run.scores["warnings"]) for run in runs)),
        "test_accuracy": None, "seconds": sum(run.scores["seconds"] for run in runs), "seconds_per_epoch": None,
        "device": first["device"], "lnlclean_version": __version__,
        "members": {run.scores["method"]: run.scores["f1"] for run in runs},
    }


def check_partial_benchmark(noise: NoiseSpec, method_cls, partial_rate: float) -> None:
    """Raises UserError naming the option when a partial-label benchmark cannot run as asked. Returns None."""
    if not 0 < partial_rate < 1:
        raise UserError(f"--partial-rate {partial_rate}: must be between 0 and 1")
    if noise.kind not in ("clean", "sym"):
        raise UserError(f"--noise {noise}: partial labels take clean or symNN noise (η = NN %), not {noise.kind} noise")
    if not method_cls.reads_candidates:
        raise UserError(f"--partial-rate: --method {method_cls.name} does not read candidate sets; use --method {candidate_readers()}")
