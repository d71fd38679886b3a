"""The audit job: train a method on an image folder and write its audit folder.

data (read and decode) → engine (train) → verdicts → audit.parquet, summary.json, report.html.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from .. import __version__
from ..config import RunConfig
from ..data import cache as image_cache
from ..data.load import input_table, load_images, read_input
from ..data.manifest import Manifest
from ..distributed import current as current_world
from ..embeddings import cached_embeddings
from ..engine import FitResult, TrainData, fit, resolve_device
from ..errors import UserError
from ..methods import METHODS, candidate_readers
from ..models import default_image_size
from ..outputs import OutputDir, claim_output_dir
from ..progress import Reporter
from ..report.audit import AuditInputs, build_audit_table, summarize
from ..report.folder import AUDIT_FILE, FINISHED_FILES, REPORT_FILE, SUMMARY_FILE, WRITTEN_FILES, Audit, AuditFolder
from ..report.html import MethodInfo
from ..report.trust import audit_warnings
from ..report.verdicts import VerdictFit, method_verdicts


def run_audit(
    images: Path,
    labels_csv: Path | None,
    config: RunConfig,
    out_dir: Path,
    cache_dir: Path | None = None,
    on_bad_image: str = "fail",
    resume: bool = False,
    reporter: Reporter | None = None,
    require_labels: bool = False,
    overwrite: bool = False,
    allow_outside_root: bool = False,
    out_option: str = "--out",
) -> Audit:
    """Trains `config.method` on the folder and writes ``audit.parquet``,
    ``summary.json`` and ``report.html`` to `out_dir`.

    Returns the finished audit. Raises UserError for bad input, including a candidates-only
    CSV when `require_labels` (a relabel needs labels to correct), and when `out_dir` holds an
    earlier run (see :func:`~lnlclean.report.folder.claim_audit_folder`); `out_option` names
    `out_dir` in messages. Nothing is written to `out_dir` before the input is checked, and a
    failed run leaves no directory it created. Under torchrun every process trains and rank 0
    writes the files.
    """
    reporter = reporter or Reporter(quiet=True)
    started = time.perf_counter()
    config = config.checked()
    folder, output = claim_audit_folder(out_dir, resume, overwrite, out_option)
    manifest, data, skipped, input_rows = load_dataset(
        images, labels_csv, config, cache_dir, on_bad_image, reporter, require_labels, allow_outside_root
    )
    cache_seconds = time.perf_counter() - started
    with output.open():
        result = fit(data, config, reporter, checkpoint_path=folder.checkpoint_path, resume=resume)
        config = dataclasses.replace(config, epochs=result.epochs)  # those --time-budget chose
        columns, calibration = fitted_verdicts(result, config.threshold)
        frame = audit_table(result, columns, manifest.paths, manifest.labels, manifest.class_names, manifest.extra)
        timings = {
            "total_seconds": result.earlier_seconds + time.perf_counter() - started,
            "cache_seconds": cache_seconds,
            "train_seconds": result.seconds,
            "epoch_seconds": [h["seconds"] for h in result.history],
        }
        inputs = {
            "images": str(manifest.root.resolve()),
            "labels_csv": str(manifest.source.resolve()) if manifest.source else None,
        }
        summary = run_summary(
            {**run_header(config, result), **inputs},
            frame,
            manifest.class_names,
            timings,
            result.history,
            **verdict_fields(config, result, calibration),
            n_skipped=len(skipped),
            skipped=[{"path": p, "reason": r} for p, r in skipped.items()],
        )
        metadata = audit_metadata(config, manifest.class_names, calibration)
        if output.writes:
            folder.write(frame, metadata, summary, manifest.class_names, manifest.root, method_info(config.method))
    return Audit(folder, frame, metadata, summary, input_rows)


def load_dataset(
    images: Path,
    labels_csv: Path | None,
    config: RunConfig,
    cache_dir: Path | None,
    on_bad_image: str,
    reporter: Reporter,
    require_labels: bool = False,
    allow_outside_root: bool = False,
) -> tuple[Manifest, TrainData, dict[str, str], pd.DataFrame]:
    """Returns the manifest (bad images removed), the training data, skipped path → reason, and the input rows.

    Raises UserError for invalid input (see :func:`~lnlclean.data.load.read_input`), for
    unreadable images when `on_bad_image` is ``fail`` (see
    :func:`~lnlclean.data.load.load_images`), and for candidate sets `config.method` cannot use.
    """
    config = config.checked()
    manifest = read_input(images, labels_csv, on_bad_image, require_labels, allow_outside_root)
    uses_candidates = training_candidates(manifest, config, reporter) is not None
    input_rows = input_table(manifest)
    loaded = load_images(
        manifest,
        cache_dir,
        config.image_size,
        default_image_size(config.backbone),
        config.workers,
        on_bad_image,
        reporter,
    )
    manifest = loaded.manifest
    images = (
        frozen_features(loaded.images, config, cache_dir, reporter) if config.features == "frozen" else loaded.images
    )
    data = TrainData(
        images=images,
        labels=manifest.labels,
        n_classes=manifest.n_classes,
        candidates=manifest.candidates if uses_candidates else None,
        flip=config.flip,
        fingerprint=loaded.fingerprint,
        embedded=config.features == "frozen",
    )
    return manifest, data, loaded.skipped, input_rows


def training_candidates(manifest: Manifest, config: RunConfig, reporter: Reporter) -> np.ndarray | None:
    """Returns the candidate sets `config.method` trains on: the
    manifest's, or None when it has none or the method reads labels only.

    Raises UserError when the CSV gives candidate sets only and the method needs labels.
    """
    if manifest.candidates is None:
        return None
    if config.checked().method_class.reads_candidates:
        return manifest.candidates
    if not manifest.has_label_column:
        raise UserError(
            f"{manifest.source}: has candidates but no label column; "
            f"--method {config.method} needs labels (candidate sets: --method {candidate_readers()})"
        )
    reporter.log(
        f"--method {config.method} trains on the label column and ignores the candidates column "
        f"(candidate sets: --method {candidate_readers()})"
    )
    return None


def fitted_verdicts(result: FitResult, threshold: float) -> tuple[dict[str, np.ndarray], VerdictFit]:
    """Returns the method's audit columns with its verdicts at `threshold`
    (see :mod:`lnlclean.report.verdicts`), and how clean_prob was fitted.
    """
    method, setup = result.method, result.method.setup
    candidates = None if setup.candidates is None else setup.candidates.cpu().numpy()
    return method_verdicts(
        method.audit(result.probs),
        result.probs,
        setup.given_labels.cpu().numpy(),
        threshold,
        candidates,
    )


def audit_table(
    result: FitResult, columns: dict[str, np.ndarray], paths, given_labels, class_names, extra=None
) -> pd.DataFrame:
    """Returns the audit table for a finished fit and its verdict `columns` (see :mod:`lnlclean.report.audit`)."""
    return build_audit_table(
        AuditInputs(
            paths=list(paths),
            given_labels=np.asarray(given_labels),
            class_names=list(class_names),
            probs=result.probs,
            method_columns=columns,
            extra=extra,
        )
    )


def run_header(config: RunConfig, result: FitResult) -> dict:
    """Returns the summary fields every trained run shares:
    version, method, settings, seed, device, where it resumed.
    """
    return {
        "lnlclean_version": __version__,
        "method": config.method,
        "settings": config.to_dict(),
        "seed": config.seed,
        "device": result.device,
        "resumed_from_epoch": result.resumed_from_epoch,
        "resumed_at": result.resumed_at,
    }


def verdict_fields(config: RunConfig, result: FitResult, calibration: VerdictFit) -> dict:
    """Returns what summary.json says of a trained method's verdicts beyond
    the counts: the threshold, the calibration and the method's own summary.
    """
    return {
        "threshold": config.threshold,
        "calibration": dataclasses.asdict(calibration),
        "method_summary": result.method.summary(),
    }


def run_summary(
    header: dict, frame: pd.DataFrame, class_names: list[str], timings: dict, history: list[dict], **fields
) -> dict:
    """Returns the content of summary.json (see docs/outputs.md) for the audit table `frame`.

    It holds `header`, the label-quality figures (:func:`~lnlclean.report.audit.summarize`),
    `fields`, the warnings (:func:`~lnlclean.report.trust.audit_warnings`), `timings` and the
    per-epoch `history`.
    """
    summary = {**header, **summarize(frame, class_names), **fields}
    summary["warnings"] = audit_warnings(frame, summary)
    return {**summary, "timings": timings, "history": history}


def audit_metadata(config: RunConfig, class_names: list[str], calibration: VerdictFit) -> dict:
    """Returns the JSON stored in the audit's Parquet schema metadata:
    version, method, settings, class names, seed and the calibration fit.
    """
    return {
        "lnlclean_version": __version__,
        "method": config.method,
        "settings": config.to_dict(),
        "class_names": list(class_names),
        "seed": config.seed,
        "calibration": dataclasses.asdict(calibration),
    }


def method_info(name: str) -> MethodInfo:
    """Returns what the report needs of method `name`: its own columns
    and matrix axes (none for a consensus or an unknown name).
    """
    cls = METHODS.get(name)
    return MethodInfo() if cls is None else MethodInfo(tuple(cls.columns), dict(cls.matrix_axes))


def claim_audit_folder(
    path: Path, resume: bool, overwrite: bool, option: str = "--out"
) -> tuple[AuditFolder, OutputDir]:
    """Returns the audit folder at `path` and its claimed output directory, creating nothing.

    Raises UserError naming `option` when `path` cannot be written, holds a finished audit
    (unless `overwrite`; with `resume`: there is nothing to resume), or holds an unfinished
    run's checkpoint (unless `resume` or `overwrite`).
    """
    folder = AuditFolder(Path(path))
    if resume and not overwrite and folder.summary_path.exists():
        raise UserError(
            f"--resume: {path} holds a finished audit, so there is nothing to resume (its results: {SUMMARY_FILE}, "
            f"{AUDIT_FILE}, {REPORT_FILE}); pass --overwrite instead of --resume to train again"
        )
    output = claim_output_dir(path, FINISHED_FILES, overwrite, option)
    if not overwrite and not resume and folder.checkpoint_path.exists():
        raise UserError(
            f"{option} {path}: holds the checkpoint of an unfinished run; pass --resume to continue it, "
            f"--overwrite to start over, or choose another {option}"
        )
    return folder, replace(output, outputs=WRITTEN_FILES)  # a stopped run's temporaries are cleared too


def frozen_features(images, config: RunConfig, cache_dir: Path | None, reporter: Reporter, what: str = "images"):
    """Returns the embeddings of `images` by `config.backbone`, cached beside the image cache.

    See :mod:`lnlclean.embeddings`.
    """
    device = resolve_device(config.device, current_world())
    size = config.image_size or default_image_size(config.backbone)
    cache_dir = cache_dir or image_cache.default_cache_dir()
    return cached_embeddings(images, size, config.flip, cache_dir, device, reporter, what)
