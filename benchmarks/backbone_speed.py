"""Training and inference throughput of each backbone on the engine's real data path.

Measures images per second for a full training step (uint8 batch → weak augmentation on the
device → forward → cross-entropy → backward → SGD step) and for eval-mode inference, at 32 px
RGB with batch 128, as the median over timed steps after warm-up steps.

    python benchmarks/backbone_speed.py                      # small-cnn on the default device
    python benchmarks/backbone_speed.py --backbone all --device cuda

Writes benchmarks/results/backbone-speed-<device>.json and prints a table.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from lnlclean import __version__
from lnlclean.data.augment import Augmenter
from lnlclean.engine import describe_device, device_tag, resolve_device
from lnlclean.fileio import write_json
from lnlclean.models import backbone_names, build_backbone

RESULTS = Path(__file__).parent / "results"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(step, device: torch.device, warmup: int, steps: int) -> list[float]:
    """Returns the wall time of each of `steps` calls of `step` after `warmup` untimed calls."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        synchronize(device)
        started = time.perf_counter()
        step()
        synchronize(device)
        times.append(time.perf_counter() - started)
    return times


def measure(backbone: str, device: torch.device, batch_size: int, size: int, warmup: int, steps: int) -> dict:
    """Returns train and eval images/s (median step) for `backbone` on `device`."""
    torch.manual_seed(0)
    raw = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (batch_size, size, size, 3), dtype=np.uint8)).to(
        device
    )
    labels = torch.randint(0, 10, (batch_size,), device=device)
    augmenter = Augmenter(torch.full((3,), 0.5, device=device), torch.full((3,), 0.25, device=device))
    generator = torch.Generator(device=device).manual_seed(0)
    net = build_backbone(backbone, 10, 3).to(device=device, memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
    )

    def train_step():
        with autocast:
            loss = F.cross_entropy(net(augmenter.weak(raw, generator)), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    @torch.no_grad()
    def eval_step():
        with autocast:
            net(augmenter.clean(raw))

    net.train()
    train_times = time_steps(train_step, device, warmup, steps)
    net.eval()
    eval_times = time_steps(eval_step, device, warmup, steps)
    return {
        "backbone": backbone,
        "parameters": sum(p.numel() for p in net.parameters()),
        "image_size": size,
        "batch_size": batch_size,
        "train_img_per_s": batch_size / statistics.median(train_times),
        "eval_img_per_s": batch_size / statistics.median(eval_times),
        "timed_steps": steps,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="small-cnn", help="a backbone name, or 'all'")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument(
        "--out", type=Path, default=None, help="JSON path (default: results/backbone-speed-<device>.json)"
    )
    args = parser.parse_args()
    device = resolve_device(args.device)
    names = backbone_names() if args.backbone == "all" else [args.backbone]
    rows = [measure(n, device, args.batch_size, args.image_size, args.warmup, args.steps) for n in names]
    out = args.out or RESULTS / f"backbone-speed-{device_tag(device)}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "lnlclean_version": __version__,
        "device": describe_device(device),
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "results": rows,
    }
    write_json(out, report)
    print(f"{'backbone':<18}{'params':>12}{'train img/s':>14}{'eval img/s':>14}")
    for row in rows:
        print(
            f"{row['backbone']:<18}{row['parameters']:>12,}{row['train_img_per_s']:>14,.0f}{row['eval_img_per_s']:>14,.0f}"
        )
    print(f"wrote {out} ({report['device']})")


if __name__ == "__main__":
    main()
