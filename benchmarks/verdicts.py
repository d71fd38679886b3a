"""Whether the audit's verdicts can be trusted: true against estimated noise rate, flags against the argmax rule, \
label accuracy before and after relabel.

For every suite × noise × method this runs `lnlclean benchmark` in-process and keeps, per run:
the true and estimated noise rate (the mean of 1 − clean_prob) and the flagged share;
precision, recall, F1 and AUROC of the flags; the same for the argmax-disagreement rule on the
same probabilities (flag where the network's argmax is not the given label); label accuracy
before and after `relabel` and the share of wrong labels it fixed; test accuracy; the audit's
warnings; seconds. Each run is checked against three targets: estimated noise within 25 %
(relative) of the truth, F1 no lower than the argmax rule's, and label accuracy after relabel
no lower than before.

    python benchmarks/verdicts.py --suite digits
    python benchmarks/verdicts.py --suite cifar10-5k --data-dir ~/data/cifar10       # train/<class>/*, test/<class>/*
    python benchmarks/verdicts.py --suite cifar10-20k --data-dir ~/data/cifar10 --method ce --method promix

Suites: digits (scikit-learn's digits, the default 100 epochs), cifar10-5k and cifar10-20k
(stratified CIFAR-10 training subsets, 20 epochs). Noises: sym40, asym40, idn40 by default.
The result file is rewritten after every run, and ``--resume`` skips the runs it already holds,
so a long suite can be stopped and continued.

Writes benchmarks/results/verdicts-<suite>-<device>.json and prints one line per run.
``--table FILE`` prints a result file as the Markdown tables quoted in docs/calibration.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from common import RESULTS

from lnlclean.config import FROZEN_DEFAULTS, RunConfig
from lnlclean.data.noise import parse_noise_spec
from lnlclean.embeddings import EMBEDDING_BACKBONES
from lnlclean.engine import device_tag, resolve_device
from lnlclean.fileio import write_json
from lnlclean.jobs.benchmark import run_benchmark_one
from lnlclean.methods import METHODS

FROZEN_BACKBONE = EMBEDDING_BACKBONES[0]
SUITES = {  # name → (dataset, training images, epochs)
    "digits": ("digits", None, 100),
    "cifar10-5k": ("cifar10", 5000, 20),
    "cifar10-20k": ("cifar10", 20000, 20),
}
NOISE_TOLERANCE = 0.25
KEPT = (
    "true_noise_rate",
    "estimated_noise_rate",
    "flagged_rate",
    "precision",
    "recall",
    "f1",
    "auroc",
    "disagreement",
    "label_accuracy_before",
    "label_accuracy_after",
    "relabelled",
    "wrong_labels_fixed",
    "test_accuracy",
    "seconds",
    "seconds_per_epoch",
    "calibration",
    "warnings",
    "history",
)


def targets(run: dict) -> dict[str, bool]:
    """Returns which of the three targets (see the module docs) `run` meets."""
    truth = run["true_noise_rate"]
    return {
        "noise_rate_within_25pct": abs(run["estimated_noise_rate"] - truth) <= NOISE_TOLERANCE * truth,
        "f1_at_least_argmax": run["f1"] >= run["disagreement"]["f1"] - 1e-9,
        "relabel_no_harm": run["label_accuracy_after"] >= run["label_accuracy_before"] - 1e-9,
    }


def line(run: dict) -> str:
    """Returns one printed row of a run."""
    met = "".join("✓" if ok else "✗" for ok in run["targets"].values())
    return (
        f"{run['noise']:<7}{run['method']:<20}noise {run['true_noise_rate']:.2f}/{run['estimated_noise_rate']:.2f} "
        f"flagged {run['flagged_rate']:.2f}  P {run['precision']:.3f} R {run['recall']:.3f} F1 {run['f1']:.3f} "
        f"(argmax {run['disagreement']['f1']:.3f})  AUROC {run['auroc']:.3f}  "
        f"labels {run['label_accuracy_before']:.3f}→{run['label_accuracy_after']:.3f}  {run['seconds']:.0f} s  {met}"
    )


def markdown(results: dict) -> str:
    """Returns `results` (a result file's content) as one Markdown table per noise."""
    size = f"{results['train_size']:,}" if results["train_size"] else "all"
    lines = [f"{results['suite']}: {size} training images, {results['epochs']} epochs, {results['device']}", ""]
    for noise in dict.fromkeys(run["noise"] for run in results["runs"]):
        lines += [
            f"**{noise}**",
            "",
            "| method | noise true / est | flagged | P | R | F1 (argmax) | AUROC | labels before → after "
            "| test acc | s | warnings |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for run in (run for run in results["runs"] if run["noise"] == noise):
            warnings = ", ".join(warning["code"] for warning in run["warnings"]) or "–"
            lines.append(
                f"| `{run['method']}` | {run['true_noise_rate']:.2f} / {run['estimated_noise_rate']:.2f} "
                f"| {run['flagged_rate']:.2f} "
                f"| {run['precision']:.3f} | {run['recall']:.3f} | {run['f1']:.3f} ({run['disagreement']['f1']:.3f}) "
                f"| {run['auroc']:.3f} "
                f"| {run['label_accuracy_before']:.3f} → {run['label_accuracy_after']:.3f} "
                f"| {run['test_accuracy']:.3f} "
                f"| {run['seconds']:.0f} | {warnings} |"
            )
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", choices=sorted(SUITES), default="digits")
    parser.add_argument("--noise", action="append", help="repeatable (default: sym40, asym40, idn40)")
    parser.add_argument("--method", action="append", help="repeatable (default: every method, ce first)")
    parser.add_argument(
        "--data-dir", type=Path, default=None, help="CIFAR-10: torchvision's files or train/ and test/ folders"
    )
    parser.add_argument("--epochs", type=int, default=None, help="override the suite's epochs")
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--resume", action="store_true", help="keep the runs the result file holds and run only the others"
    )
    parser.add_argument("--out", type=Path, default=None, help="result file (default: under benchmarks/results/)")
    parser.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="method hyperparameter for every run, e.g. consistency=alternate (repeatable); the runs are named with it",
    )
    parser.add_argument(
        "--diagnose",
        action="store_true",
        help="log every epoch against the true labels (lnlclean benchmark --diagnose)",
    )
    parser.add_argument(
        "--features",
        choices=("finetune", "frozen"),
        default="finetune",
        help="frozen: heads on efficientnet-lite0 embeddings, with lnlclean's frozen defaults "
        "(epochs, lr, weight decay)",
    )
    parser.add_argument(
        "--image-size", type=int, default=None, help="with --features frozen: the side the images are embedded at"
    )
    parser.add_argument("--table", type=Path, default=None, help="print this result file as Markdown tables and stop")
    args = parser.parse_args()
    if args.table:
        print(markdown(json.loads(args.table.read_text())))
        return
    dataset, train_size, epochs = SUITES[args.suite]
    frozen = args.features == "frozen"
    epochs = args.epochs or (FROZEN_DEFAULTS["epochs"] if frozen else epochs)
    methods = args.method or ["ce", *sorted(name for name in METHODS if name != "ce")]
    noises = [parse_noise_spec(text) for text in args.noise or ["sym40", "asym40", "idn40"]]
    tag = f"{args.suite}-frozen" if frozen else args.suite
    tag += f"-{args.image_size}px" if args.image_size else ""
    out = args.out or RESULTS / f"verdicts-{tag}-{device_tag(resolve_device(args.device))}.json"
    runs = json.loads(out.read_text())["runs"] if args.resume and out.is_file() else []
    done = {(run["noise"], run["method"]) for run in runs}
    options = dict(option.split("=", 1) for option in args.option)
    for noise in noises:
        for method in methods:
            name = " ".join([method, *args.option])
            if (str(noise), name) in done:
                continue
            head = {key: FROZEN_DEFAULTS[key] for key in ("lr", "weight_decay")} if frozen else {}
            config = RunConfig(
                method=method,
                epochs=epochs,
                device=args.device,
                method_params=dict(options),
                features=args.features,
                backbone=FROZEN_BACKBONE if frozen else "small-cnn",
                image_size=args.image_size,
                **head,
            )
            scores = run_benchmark_one(
                dataset, noise, config, data_dir=args.data_dir, train_size=train_size, diagnose=args.diagnose
            )
            run = {"noise": str(noise), "method": name, **{key: scores[key] for key in KEPT}}
            run["targets"] = targets(run)
            runs.append(run)
            print(line(run), flush=True)
            write_json(
                out,
                {
                    "suite": args.suite,
                    "dataset": dataset,
                    "train_size": train_size,
                    "epochs": epochs,
                    "features": args.features,
                    "image_size": args.image_size,
                    "device": scores["device"],
                    "lnlclean_version": scores["lnlclean_version"],
                    "runs": runs,
                },
            )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
