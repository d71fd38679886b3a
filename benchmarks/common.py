"""What the benchmark scripts share: the results folder and the options that pick the data."""

from __future__ import annotations

import argparse
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds --dataset, --noise, --train-size, --data-dir, --device and --out to `parser`. Returns None."""
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--noise", default="sym40")
    parser.add_argument("--train-size", type=int, default=None)
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=None, help="result file (default: under benchmarks/results/)")
