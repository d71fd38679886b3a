"""The benchmark job: inject known noise into a standard dataset, train each method, score its verdicts.

Writes ``benchmark.json`` (rewritten after every run, so a stopped benchmark keeps what it
finished) and an HTML report per run.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from .. import __version__
from ..config import RunConfig
from ..data import cache as image_cache
from ..data.datasets import BenchmarkData, load_benchmark
from ..data.noise import NoiseSpec, inject_noise, partial_candidates
from ..data.noise_file import noisy_training_labels, read_noise_file
from ..distributed import current as current_world
from ..engine import TrainData, fit
from ..errors import UserError
from ..fileio import write_json
from ..idn import idn_labels
from ..methods import candidate_readers
from ..outputs import claim_output_dir
from ..progress import Reporter
from ..report.consensus import Verdicts
from ..report.diagnostics import describe as describe_diagnostics
from ..report.diagnostics import epoch_diagnostics
from ..report.html import ReportInputs, render_report, write_report
from ..report.scores import BenchmarkRun, NoisyLabels, disagreement_scores, score_consensus, score_verdicts
from ..report.thumbnails import ArrayImages
from ..report.trust import trusted
from .audit import audit_table, fitted_verdicts, frozen_features, method_info, run_header, run_summary, verdict_fields

BENCHMARK_FILE = "benchmark.json"
# --fail-under keys → the benchmark.json entry they read
FAIL_KEYS = {
    "f1": "f1",
    "precision": "precision",
    "recall": "recall",
    "auroc": "auroc",
    "acc": "test_accuracy",
    "relabel_acc": "relabel_accuracy",
}


def run_benchmark(
    dataset: str,
    noises: list[NoiseSpec],
    configs: dict[str, RunConfig],
    out_dir: Path,
    data_dir: Path | None = None,
    train_size: int | None = None,
    cache_dir: Path | None = None,
    partial_rate: float | None = None,
    consensus: bool = False,
    diagnose: bool = False,
    overwrite: bool = False,
    reporter: Reporter | None = None,
) -> list[dict]:
    """Runs every method of `configs` (method → settings) on `dataset` under each of `noises`; returns the scored runs.

    Writes ``out_dir/benchmark.json`` after every run and ``out_dir/<dataset>-<noise>-<method>.html``
    per run (see :func:`benchmark_run`); with `consensus` the consensus of the methods is
    scored after each noise (see :func:`~lnlclean.report.scores.score_consensus`). A
    benchmark.json that an earlier benchmark wrote is replaced; any other file is refused
    unless `overwrite`. Raises UserError for bad settings or an unwritable `out_dir`.
    """
    reporter = reporter or Reporter(quiet=True)
    if consensus and len(configs) < 2:
        raise UserError("--consensus: needs two or more different --method values")
    replacing = written_by_benchmark(Path(out_dir) / BENCHMARK_FILE)
    output = claim_output_dir(out_dir, (BENCHMARK_FILE,), overwrite or replacing)
    if replacing:
        reporter.log(f"replacing the results of an earlier benchmark in {output.path / BENCHMARK_FILE}")
    runs: list[dict] = []
    with output.open() as path:

        def record(run: dict) -> None:
            runs.append(run)
            if output.writes:
                write_json(path / BENCHMARK_FILE, {"lnlclean_version": __version__, "runs": runs})

        for noise in noises:
            members = []
            for name, config in configs.items():
                reporter.log(f"benchmark {dataset} {noise} {name}")
                report_path = path / f"{run_label(dataset, str(noise), partial_rate, name).replace(' ', '-')}.html"
                members.append(
                    benchmark_run(
                        dataset,
                        noise,
                        config,
                        data_dir,
                        train_size,
                        cache_dir,
                        reporter,
                        partial_rate,
                        report_path,
                        diagnose,
                    )
                )
                record(members[-1].scores)
            if consensus:
                record(score_consensus(members))
    return runs


def written_by_benchmark(path: Path) -> bool:
    """Returns True when `path` is a benchmark.json that lnlclean
    benchmark wrote (a rerun replaces it; any other file is refused).
    """
    try:
        content = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(content, dict) and "lnlclean_version" in content and isinstance(content.get("runs"), list)


def check_fail_under(runs: list[dict], thresholds: dict[str, float]) -> list[str]:
    """Returns one line per run and metric that falls short of
    `thresholds` (``--fail-under`` key → minimum; empty when all pass).
    """
    failures = []
    for run in runs:
        for key, minimum in thresholds.items():
            if key == "acc" and "members" in run:  # a consensus has no network to test
                continue
            value = run.get(FAIL_KEYS[key])
            if value is None or value < minimum:
                failures.append(f"{run_name(run)}: {key} {value} < {minimum}")
    return failures


def run_name(run: dict) -> str:
    """Returns the label of a benchmark run: dataset, noise (with the partial rate, if any) and method."""
    return run_label(run["dataset"], run["noise"], run.get("partial_rate"), run["method"])


def run_label(dataset: str, noise: str, partial_rate: float | None, method: str) -> str:
    """Returns e.g. ``digits sym40 ce`` or ``digits sym20+partial0.3 alim``; its report file uses dashes for spaces."""
    partial = f"+partial{partial_rate:g}" if partial_rate is not None else ""
    return f"{dataset} {noise}{partial} {method}"


def run_benchmark_one(dataset: str, noise: NoiseSpec, config: RunConfig, *args, **kwargs) -> dict:
    """Returns the scores of :func:`benchmark_run` with the same arguments: the run's benchmark.json entry as a dict."""
    return benchmark_run(dataset, noise, config, *args, **kwargs).scores


def benchmark_run(
    dataset: str,
    noise: NoiseSpec,
    config: RunConfig,
    data_dir: Path | None = None,
    train_size: int | None = None,
    cache_dir: Path | None = None,
    reporter: Reporter | None = None,
    partial_rate: float | None = None,
    report_path: Path | None = None,
    diagnose: bool = False,
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
    config = config.checked()
    if partial_rate is not None:
        check_partial_benchmark(noise, config.method_class, partial_rate)
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
    frozen = config.features == "frozen"
    train_images, test_images = bench.train_images, bench.test_images
    if frozen:
        train_images = frozen_features(train_images, config, cache_dir, reporter, "training images")
        test_images = frozen_features(test_images, config, cache_dir, reporter, "test images")
    data = TrainData(
        images=train_images,
        labels=given,
        n_classes=len(bench.class_names),
        candidates=candidates,
        test_images=test_images,
        test_labels=bench.test_labels,
        flip=bench.flip and config.flip,
        fingerprint=f"{dataset}:{noise}:{partial_rate}:{train_size}",
        true_labels=true_labels,
        embedded=frozen,
    )
    result = fit(
        data, config, reporter, diagnose=truth_diagnostics(labels, config.threshold, reporter) if diagnose else None
    )
    config = dataclasses.replace(config, epochs=result.epochs)  # those --time-budget chose
    columns, calibration = fitted_verdicts(result, config.threshold)
    verdicts = Verdicts(
        config.method,
        columns["clean_prob"],
        columns["is_label_issue"],
        columns["suggested_label"],
        columns["suggested_prob"],
        result.probs.argmax(axis=1),
    )
    names = np.asarray(bench.class_names, dtype=object)
    frame = audit_table(
        result,
        columns,
        [f"train/{i:05d}" for i in rows],
        given,
        bench.class_names,
        pd.DataFrame({"true_label": names[true_labels]}),
    )
    summary = run_summary(
        run_header(config, result),
        frame,
        list(bench.class_names),
        {"total_seconds": result.seconds},
        result.history,
        **verdict_fields(config, result, calibration),
    )
    if report_path is not None and world.is_main:
        source = f"{dataset} {noise}" + (
            f" (candidate sets, partial rate {partial_rate:g})" if partial_rate is not None else ""
        )
        inputs = ReportInputs(
            frame,
            summary,
            list(bench.class_names),
            ArrayImages(bench.train_images),
            is_noisy=is_noisy,
            source=source,
            method=method_info(config.method),
        )
        write_report(report_path, render_report(inputs))
    scores = {
        "dataset": dataset,
        "noise": str(noise),
        "partial_rate": partial_rate,
        "method": config.method,
        "seed": config.seed,
        "epochs": config.epochs,
        "backbone": config.backbone,
        "n_train": int(len(given)),
        **score_verdicts(verdicts, labels, config.threshold, trusted(summary["warnings"])),
        "disagreement": disagreement_scores(result.probs, labels),
        "test_accuracy": result.test_accuracy,
        "seconds": result.seconds,
        "seconds_per_epoch": float(np.mean([h["seconds"] for h in result.history])) if result.history else None,
        "device": result.device,
        "settings": config.to_dict(),
        "lnlclean_version": __version__,
        "calibration": summary["calibration"],
        "warnings": summary["warnings"],
        "method_summary": summary["method_summary"],
        "history": result.history,
    }
    return BenchmarkRun(scores, verdicts, labels)


def truth_diagnostics(labels: NoisyLabels, threshold: float, reporter: Reporter) -> Callable[[int, np.ndarray], dict]:
    """Returns the engine's per-epoch `diagnose` callback for a benchmark's `labels`:
    it logs and returns :func:`~lnlclean.report.diagnostics.epoch_diagnostics`.
    """

    def diagnose(epoch: int, probs: np.ndarray) -> dict:
        figures = epoch_diagnostics(
            probs, labels.given, labels.true_labels, labels.is_noisy, threshold, labels.candidates
        )
        reporter.log(describe_diagnostics(epoch, figures))
        return figures

    return diagnose


def benchmark_labels(
    bench: BenchmarkData, noise: NoiseSpec, config: RunConfig, cache_dir: Path | None, reporter: Reporter
) -> np.ndarray:
    """Returns the given labels of a benchmark's training images under `noise` (deterministic in ``config.seed``).

    Instance-dependent noise trains (or reuses) its classifier, see :mod:`lnlclean.idn`; file
    noise reads the file, see :mod:`lnlclean.data.noise_file`.
    """
    if noise.kind == "idn":
        return idn_labels(
            bench, noise.rate, config.seed, config.device, cache_dir or image_cache.default_cache_dir(), reporter
        )
    if noise.kind == "file":
        labels = read_noise_file(Path(noise.path), noise.key, bench.class_names)
        return noisy_training_labels(bench, labels, Path(noise.path))
    return inject_noise(bench.train_labels, noise, bench.class_names, bench.name, seed=config.seed)


def check_partial_benchmark(noise: NoiseSpec, method_cls, partial_rate: float) -> None:
    """Raises UserError naming the option when a partial-label benchmark cannot run as asked. Returns None."""
    if not 0 < partial_rate < 1:
        raise UserError(f"--partial-rate {partial_rate}: must be between 0 and 1")
    if noise.kind not in ("clean", "sym"):
        raise UserError(f"--noise {noise}: partial labels take clean or symNN noise (η = NN %), not {noise.kind} noise")
    if not method_cls.reads_candidates:
        raise UserError(
            f"--partial-rate: --method {method_cls.name} does not read candidate sets; "
            f"use --method {candidate_readers()}"
        )
