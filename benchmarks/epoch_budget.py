"""Detection quality against the training budget: how each method fares as training runs longer.

Plain cross-entropy first learns the clean pattern and then memorises the noisy labels, so its
detection quality depends on where training stops; a noise-robust method should hold its
quality as the budget grows. This runs `lnlclean benchmark` for every method × epoch budget
with all other settings at their defaults.

    python benchmarks/epoch_budget.py                                   # digits sym40, every method, 40/100/200 epochs
    python benchmarks/epoch_budget.py --method ce --method alr --epochs 100 --epochs 300

Writes benchmarks/results/epoch-budget-<dataset>-<noise>-<device>.json and prints a table.
"""

from __future__ import annotations

import argparse

from common import RESULTS, add_data_arguments

from lnlclean.config import RunConfig
from lnlclean.data.noise import parse_noise_spec
from lnlclean.engine import device_tag, resolve_device
from lnlclean.fileio import write_json
from lnlclean.jobs.benchmark import run_benchmark_one
from lnlclean.methods import METHODS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_arguments(parser)
    parser.add_argument("--method", action="append", help="repeatable (default: every method, ce first)")
    parser.add_argument("--epochs", type=int, action="append", help="repeatable (default: 40, 100, 200)")
    args = parser.parse_args()
    methods = args.method or ["ce", *sorted(name for name in METHODS if name != "ce")]
    budgets = args.epochs or [40, 100, 200]
    noise = parse_noise_spec(args.noise)
    device = resolve_device(args.device)
    runs = []
    for method in methods:
        for epochs in budgets:
            config = RunConfig(method=method, epochs=epochs, device=args.device)
            run = run_benchmark_one(args.dataset, noise, config, data_dir=args.data_dir, train_size=args.train_size)
            runs.append(run)
            print(
                f"{method:<8}{epochs:>5} epochs  F1 {run['f1']:.3f}  AUROC {run['auroc']:.3f}  "
                f"test acc {run['test_accuracy']:.3f}  {run['seconds']:.0f} s",
                flush=True,
            )
    out = args.out or RESULTS / f"epoch-budget-{args.dataset}-{noise}-{device_tag(device)}.json"
    write_json(out, {"dataset": args.dataset, "noise": str(noise), "train_size": args.train_size, "runs": runs})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
