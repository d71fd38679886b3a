"""How the ``--features frozen`` heads are built and regularised, chosen on a development split.

The development split is 5,000 CIFAR-10 training images disjoint from the ``cifar10-5k`` subset
that benchmarks/verdicts.py reports, and its held-out accuracy is measured on 5,000 further
training images: neither the reported subset nor the test split is looked at. Every head variant
trains every method under sym40, asym40 and idn40; per variant the script keeps F1, AUROC,
estimated against true noise rate, label accuracy after relabel and held-out accuracy.

Variants (name → head, which parameters get weight decay, weight decay):

- ``bn-linear-decay-all``: batch norm then linear; decay on every parameter.
- ``bn-linear-decay-weights``: the same; decay on the linear weights only.
- ``linear``: a linear layer on the standardised embeddings; decay on its weights.

    python benchmarks/frozen_heads.py --data-dir ~/data/cifar10 [--variant linear --weight-decay 0.005]
    python benchmarks/frozen_heads.py --data-dir ~/data/cifar10 --noise sym20 --noise idn20 --out FILE

Writes benchmarks/results/frozen-heads-cifar10-dev-<device>.json (rewritten after every run;
``--resume`` keeps the runs it holds; ``--summary`` prints its table).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np
import torch
from common import RESULTS
from sklearn.model_selection import train_test_split
from torch import nn

import lnlclean.engine as engine
import lnlclean.jobs.benchmark as benchmark_job
from lnlclean.config import FROZEN_DEFAULTS, RunConfig
from lnlclean.data.datasets import SPLIT_SEED, load_benchmark
from lnlclean.data.noise import parse_noise_spec
from lnlclean.engine import device_tag, make_optimizer, resolve_device
from lnlclean.fileio import write_json
from lnlclean.methods import usable_methods
from lnlclean.models import feature_head

REPORTED_SIZE = 5000
DEV_SIZE = 5000
DEV_SEED = SPLIT_SEED + 1
KEPT = (
    "true_noise_rate",
    "estimated_noise_rate",
    "flagged_rate",
    "f1",
    "auroc",
    "label_accuracy_before",
    "label_accuracy_after",
    "test_accuracy",
    "seconds",
)


def development_split(data_dir: Path):
    """Returns CIFAR-10 with 5,000 training images outside the reported subset as the training set
    and 5,000 further training images as the held-out set."""
    whole = load_benchmark("cifar10", data_dir)
    reported = load_benchmark("cifar10", data_dir, REPORTED_SIZE).positions()
    rest = np.setdiff1d(np.arange(len(whole.train_labels)), reported)
    dev, held_out = train_test_split(
        rest, train_size=DEV_SIZE, test_size=DEV_SIZE, stratify=whole.train_labels[rest], random_state=DEV_SEED
    )
    dev, held_out = np.sort(dev), np.sort(held_out)
    return dataclasses.replace(
        whole,
        train_images=np.asarray(whole.train_images[dev]),
        train_labels=whole.train_labels[dev],
        test_images=np.asarray(whole.train_images[held_out]),
        test_labels=whole.train_labels[held_out],
        split_index=dev,
        split_labels=whole.train_labels,
    )


def head_variant(name: str):
    """Returns (head builder, optimiser builder) of variant `name`."""

    def linear(dim: int, n_classes: int) -> nn.Module:
        return nn.Sequential(nn.Linear(dim, n_classes))

    def decay_all(method, config: RunConfig, embedded: bool = False) -> torch.optim.Optimizer:
        return make_optimizer(method, config, embedded=False)

    def decay_weights(method, config: RunConfig, embedded: bool = False) -> torch.optim.Optimizer:
        return make_optimizer(method, config, embedded=True)

    return {
        "bn-linear-decay-all": (feature_head, decay_all),
        "bn-linear-decay-weights": (feature_head, decay_weights),
        "linear": (linear, decay_weights),
    }[name]


def summary(runs: list[dict]) -> str:
    """Returns one Markdown row per (variant, weight decay): mean F1 over methods and noises, the best
    F1 per noise, mean |estimated − true noise rate|, mean label accuracy after relabel and held-out accuracy."""
    lines = [
        "| variant | weight decay | mean F1 | best F1 per noise | mean abs. noise-rate error "
        "| mean labels after | mean held-out acc |",
        "|---|---|---|---|---|---|---|",
    ]
    for variant, decay in dict.fromkeys((run["variant"], run["weight_decay"]) for run in runs):
        group = [run for run in runs if (run["variant"], run["weight_decay"]) == (variant, decay)]
        best = {}
        for run in group:
            best[run["noise"]] = max(best.get(run["noise"], 0.0), run["f1"])
        error = np.mean([abs(run["estimated_noise_rate"] - run["true_noise_rate"]) for run in group])
        lines.append(
            f"| {variant} | {decay} | {np.mean([run['f1'] for run in group]):.3f} "
            f"| {' / '.join(f'{noise} {f1:.3f}' for noise, f1 in best.items())} | {error:.3f} "
            f"| {np.mean([run['label_accuracy_after'] for run in group]):.3f} "
            f"| {np.mean([run['test_accuracy'] for run in group]):.3f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True, help="CIFAR-10 as train/<class>/* and test/<class>/*")
    parser.add_argument("--variant", action="append", help="repeatable (default: every variant)")
    parser.add_argument("--weight-decay", type=float, action="append", help="repeatable (default: the frozen default)")
    parser.add_argument("--method", action="append", help="repeatable (default: every method but knn)")
    parser.add_argument("--noise", action="append", help="repeatable (default: sym40, asym40, idn40)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--summary", action="store_true", help="print the result file's summary table and stop")
    parser.add_argument("--out", type=Path, default=None, help="result file (default: under benchmarks/results/)")
    args = parser.parse_args()
    out = args.out or RESULTS / f"frozen-heads-cifar10-dev-{device_tag(resolve_device(args.device))}.json"
    if args.summary:
        print(summary(json.loads(out.read_text())["runs"]))
        return
    variants = args.variant or ["bn-linear-decay-all", "bn-linear-decay-weights", "linear"]
    decays = args.weight_decay or [FROZEN_DEFAULTS["weight_decay"]]
    methods = args.method or [name for name in usable_methods("frozen") if name != "knn"]
    noises = [parse_noise_spec(text) for text in args.noise or ["sym40", "asym40", "idn40"]]
    runs = json.loads(out.read_text())["runs"] if args.resume and out.is_file() else []
    done = {(run["variant"], run["weight_decay"], run["noise"], run["method"]) for run in runs}
    dev = development_split(args.data_dir)
    benchmark_job.load_benchmark = lambda *_args, **_kwargs: dev
    for variant in variants:
        engine.feature_head, engine.make_optimizer = head_variant(variant)
        for decay in decays:
            for noise in noises:
                for method in methods:
                    if (variant, decay, str(noise), method) in done:
                        continue
                    config = RunConfig(
                        method=method,
                        features="frozen",
                        backbone="efficientnet-lite0",
                        device=args.device,
                        **{**FROZEN_DEFAULTS, "weight_decay": decay},
                    )
                    scores = benchmark_job.run_benchmark_one("cifar10", noise, config)
                    run = {"variant": variant, "weight_decay": decay, "noise": str(noise), "method": method}
                    run |= {key: scores[key] for key in KEPT}
                    runs.append(run)
                    write_json(out, {"dev_size": DEV_SIZE, "dev_seed": DEV_SEED, "runs": runs})
                    print(
                        f"{variant:<24}{decay:<7}{run['noise']:<7}{method:<20}F1 {run['f1']:.3f} "
                        f"AUROC {run['auroc']:.3f} "
                        f"noise {run['true_noise_rate']:.2f}/{run['estimated_noise_rate']:.2f} "
                        f"labels {run['label_accuracy_before']:.3f}→{run['label_accuracy_after']:.3f} "
                        f"held-out {run['test_accuracy']:.3f}  {run['seconds']:.0f} s",
                        flush=True,
                    )
    print(summary(runs))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
