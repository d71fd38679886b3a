"""What a checkpoint costs: size on disk, and seconds to save (atomic, fsynced) and to load it.

A checkpoint is written after every epoch and on a stop signal, so its save time is paid once
per epoch. Each method is built with its networks and per-sample state for N samples and K
classes (no training: the sizes and times do not depend on the values), saved the way
training saves it and loaded the way ``--resume`` loads it (``weights_only=True``).

    python benchmarks/checkpoint_cost.py                                    # small-cnn, N=50,000, K=10
    python benchmarks/checkpoint_cost.py --backbone preact-resnet18 --n-samples 50000 --n-classes 100

Writes benchmarks/results/checkpoint-cost-<backbone>-<device>.json and prints a table.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import RESULTS

from lnlclean import __version__
from lnlclean.config import RunConfig
from lnlclean.engine import (
    Position,
    TrainData,
    _load_checkpoint,
    _save_checkpoint,
    build_method,
    checkpoint_identity,
    describe_device,
    device_tag,
    resolve_device,
)
from lnlclean.fileio import write_json
from lnlclean.methods import METHODS


def measure(method: str, backbone: str, n_samples: int, n_classes: int, device: torch.device, repeats: int) -> dict:
    """Returns size in MB and median save / load seconds of `method`'s checkpoint."""
    config = RunConfig(method=method, backbone=backbone, epochs=10, device=device.type)
    labels = np.random.default_rng(0).integers(0, n_classes, n_samples)
    data = TrainData(images=np.zeros((n_samples, 32, 32, 3), dtype=np.uint8), labels=labels, n_classes=n_classes)
    net = build_method(config, data, device)
    optimizer = torch.optim.SGD(net.networks.parameters(), lr=0.1, momentum=0.9)
    for parameter in net.networks.parameters():
        parameter.grad = torch.zeros_like(parameter)
    optimizer.step()  # creates the momentum buffers a real checkpoint holds
    identity = checkpoint_identity(config, data)
    saves, loads = [], []
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "checkpoint.pt"
        for _ in range(repeats):
            started = time.perf_counter()
            _save_checkpoint(path, identity, Position(1), net, optimizer)
            saves.append(time.perf_counter() - started)
            started = time.perf_counter()
            _load_checkpoint(path, identity, net, optimizer)
            loads.append(time.perf_counter() - started)
        size = path.stat().st_size
    return {
        "method": method,
        "backbone": backbone,
        "n_samples": n_samples,
        "n_classes": n_classes,
        "megabytes": size / 1e6,
        "save_seconds": statistics.median(saves),
        "load_seconds": statistics.median(loads),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", action="append", help="method (repeatable; default: all)")
    parser.add_argument("--backbone", default="small-cnn")
    parser.add_argument("--n-samples", type=int, default=50_000)
    parser.add_argument("--n-classes", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    device = resolve_device(args.device)
    rows = [
        measure(m, args.backbone, args.n_samples, args.n_classes, device, args.repeats)
        for m in (args.method or sorted(METHODS))
    ]
    out = args.out or RESULTS / f"checkpoint-cost-{args.backbone}-{device_tag(device)}.json"
    write_json(out, {"lnlclean_version": __version__, "device": describe_device(device), "results": rows})
    print(
        f"{'method':<10}{'MB':>9}{'save s':>9}{'load s':>9}   ({args.backbone}, N={args.n_samples:,}, "
        f"K={args.n_classes})"
    )
    for row in rows:
        print(f"{row['method']:<10}{row['megabytes']:>9.1f}{row['save_seconds']:>9.3f}{row['load_seconds']:>9.3f}")
    print(f"wrote {out} ({describe_device(device)})")


if __name__ == "__main__":
    main()
