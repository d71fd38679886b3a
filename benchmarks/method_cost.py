"""Epoch time of each method relative to cross-entropy, measured in one process, runs interleaved.

Timings taken in separate processes at different times drift with whatever else the machine
does. Here every repeat runs ce and then each method once, one after the other, with the same
data, backbone and epochs; the cost of a method is the median over repeats of its seconds per
epoch divided by those of the ce run beside it.

    python benchmarks/method_cost.py                                   # digits sym40, every method
    python benchmarks/method_cost.py --dataset cifar10 --data-dir ./cifar10 --train-size 2000
    python benchmarks/method_cost.py --method flywheel --param contrastive=true   # method settings

Writes benchmarks/results/method-cost-<dataset>-<device>.json and prints a table.
"""

from __future__ import annotations

import argparse
import statistics

from common import RESULTS, add_data_arguments

from lnlclean.config import RunConfig
from lnlclean.data.noise import parse_noise_spec
from lnlclean.engine import device_tag, resolve_device
from lnlclean.fileio import write_json
from lnlclean.jobs.benchmark import run_benchmark_one
from lnlclean.methods import METHODS


def parse_param(text: str) -> tuple[str, object]:
    """Returns (name, value) for ``NAME=VALUE``; VALUE becomes a bool, int or float where it reads as one."""
    name, _, value = text.partition("=")
    if value.lower() in ("true", "false"):
        return name, value.lower() == "true"
    for kind in (int, float):
        try:
            return name, kind(value)
        except ValueError:
            pass
    return name, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_arguments(parser)
    parser.add_argument("--method", action="append", help="repeatable (default: every method but ce)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a hyperparameter of the measured methods, e.g. contrastive=true (repeatable)",
    )
    args = parser.parse_args()
    params = dict(parse_param(text) for text in args.param)
    methods = args.method or sorted(name for name in METHODS if name != "ce")
    noise = parse_noise_spec(args.noise)
    device = resolve_device(args.device)
    seconds: dict[str, list[float]] = {name: [] for name in ["ce", *methods]}
    ratios: dict[str, list[float]] = {name: [] for name in methods}
    for repeat in range(args.repeats):
        for name in ["ce", *methods]:
            config = RunConfig(
                method=name, epochs=args.epochs, device=args.device, method_params=params if name != "ce" else {}
            )
            run = run_benchmark_one(args.dataset, noise, config, data_dir=args.data_dir, train_size=args.train_size)
            seconds[name].append(run["seconds_per_epoch"])
            if name != "ce":
                ratios[name].append(run["seconds_per_epoch"] / seconds["ce"][-1])
            print(f"repeat {repeat + 1}  {name:<9}{run['seconds_per_epoch']:.3f} s/epoch", flush=True)
    summary = {
        name: {
            "seconds_per_epoch": seconds[name],
            "ratio_to_ce": ratios.get(name),
            "median_ratio_to_ce": statistics.median(ratios[name]) if name in ratios else 1.0,
        }
        for name in seconds
    }
    for name, row in summary.items():
        print(
            f"{name:<9}median {statistics.median(row['seconds_per_epoch']):.3f} s/epoch  "
            f"×{row['median_ratio_to_ce']:.2f} ce"
        )
    out = args.out or RESULTS / f"method-cost-{args.dataset}-{device_tag(device)}.json"
    write_json(
        out,
        {
            "dataset": args.dataset,
            "noise": str(noise),
            "train_size": args.train_size,
            "epochs": args.epochs,
            "repeats": args.repeats,
            "device": device_tag(device),
            "params": params,
            "methods": summary,
        },
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
