"""One process against several under torchrun: the same benchmark, detection quality and time side by side.

Runs ``lnlclean benchmark`` for every method once in a single process and once under
``torchrun --standalone --nproc-per-node P`` (gloo on CPU, nccl on CUDA), with the same data,
noise, epochs and whole mini-batch, and compares detection F1, test accuracy and seconds. The
single process uses every core; each torchrun process one thread (torchrun's default).

    python benchmarks/distributed.py                          # digits sym40, 600 images, 60 epochs, 2 processes
    python benchmarks/distributed.py --processes 4 --device cuda --dataset cifar10 --data-dir ./cifar10

Writes benchmarks/results/distributed-<dataset>-<device>.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from common import RESULTS, add_data_arguments

from lnlclean import __version__
from lnlclean.engine import device_tag, resolve_device
from lnlclean.fileio import write_json
from lnlclean.methods import METHODS


def benchmark_runs(launcher: list[str], args: argparse.Namespace, out: Path) -> dict[str, dict]:
    """Runs ``lnlclean benchmark`` for every method through `launcher`. Returns method → its run from benchmark.json."""
    command = [
        *launcher,
        "-m",
        "lnlclean",
        "benchmark",
        args.dataset,
        "--noise",
        args.noise,
        "--method",
        "all",
        "--epochs",
        str(args.epochs),
        "--device",
        args.device,
        "--out",
        str(out),
        "--quiet",
    ]
    if args.train_size:
        command += ["--train-size", str(args.train_size)]
    if args.data_dir:
        command += ["--data-dir", str(args.data_dir)]
    subprocess.run(command, check=True)  # torchrun gives each process one thread unless OMP_NUM_THREADS says otherwise
    return {run["method"]: run for run in json.loads((out / "benchmark.json").read_text())["runs"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_arguments(parser)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=60)
    parser.set_defaults(train_size=600)
    args = parser.parse_args()
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={args.processes}"]
    with tempfile.TemporaryDirectory() as work:
        single = benchmark_runs([sys.executable], args, Path(work) / "single")
        several = benchmark_runs(torchrun, args, Path(work) / "several")
    rows = []
    print(
        f"{'method':10} {'F1 1 proc':>10} {f'F1 {args.processes} proc':>10} {'Δ F1':>7} {'s 1 proc':>9} "
        f"{f's {args.processes} proc':>9}"
    )
    for name in sorted(METHODS):
        one, many = single[name], several[name]
        rows.append(
            {
                "method": name,
                "f1_single": one["f1"],
                "f1_distributed": many["f1"],
                "f1_difference": many["f1"] - one["f1"],
                "test_accuracy_single": one["test_accuracy"],
                "test_accuracy_distributed": many["test_accuracy"],
                "seconds_single": one["seconds"],
                "seconds_distributed": many["seconds"],
                "device_single": one["device"],
                "device_distributed": many["device"],
            }
        )
        print(
            f"{name:10} {one['f1']:10.3f} {many['f1']:10.3f} {many['f1'] - one['f1']:+7.3f} {one['seconds']:9.1f} "
            f"{many['seconds']:9.1f}"
        )
    device = resolve_device(args.device)
    out = args.out or RESULTS / f"distributed-{args.dataset}-{device_tag(device)}.json"
    write_json(
        out,
        {
            "dataset": args.dataset,
            "noise": args.noise,
            "train_size": args.train_size,
            "epochs": args.epochs,
            "processes": args.processes,
            "cpu_count": os.cpu_count(),
            "lnlclean_version": __version__,
            "runs": rows,
        },
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
