"""Detection quality against the training budget: how each method fares as training runs longer.

Plain cross-entropy first learns the clean pattern and then memorises the noisy labels, so its
detection quality depends on where training stops; a noise-robust method should hold its
quality as the budget grows. This runs `lnlclean benchmark` for every method × epoch budget
with all other settings at their defaults.

    python benchmarks/epoch_budget.py                                   # digits sym40, ce + pmnar, 40/100/200 epochs
    python benchmarks/epoch_budget.py --method ce --method alr --epochs 100 --epochs 300

Writes benchmarks/results/epoch-budget-<dataset>-<noise>-<device>.json and prints a table.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lnlclean.config import RunConfig
from lnlclean.data.noise import parse_noise_spec
from lnlclean.engine import resolve_device
from lnlclean.fileio import write_json
from lnlclean.pipeline import run_benchmark_one

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--noise", default="sym40")
    parser.add_argument("--method", action="append", help="repeatable (default: ce and pmnar)")
    parser.add_argument("--epochs", type=int, action="append", help="repeatable (default: 40, 100, 200)")
    parser.add_argument("--train-size", type=int, default=None)
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    methods, budgets = args.method or ["ce", "pmnar"], args.epochs or [40, 100, 200]
    noise = parse_noise_spec(args.noise)
    device = resolve_device(args.device)
    runs = []
    for method in methods:
        for epochs in budgets:
            config = RunConfig(method=method, epochs=epochs, device=args.device)
            run = run_benchmark_one(args.dataset, noise, config, data_dir=args.data_dir, train_size=args.train_size)
            runs.append(run)
            print(f"{method:<8}{epochs:>5} epochs  F1 {run['f1']:.3f}  AUROC {run['auroc']:.3f}  "
                  f"test acc {run['test_accuracy']:.3f}  {run['seconds']:.0f} s", flush=True)
    tag = "cpu" if device.type == "cpu" else "cuda"
    out = args.out or RESULTS / f"epoch-budget-{args.dataset}-{noise}-{tag}.json"
    write_json(out, {"dataset": args.dataset, "noise": str(noise), "train_size": args.train_size, "runs": runs})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
