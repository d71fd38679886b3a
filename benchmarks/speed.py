"""Speed and memory of lnlclean on this machine, measured in one run, checked against targets.

Sections (each timed here, in this process, one after the other; nothing else should run):

- cache: image-cache build rate (img/s) for a folder of 32 px JPEGs and one of 32 px PNGs,
  written here (the cache is built from scratch, fingerprint and auto size included).
- methods: wall seconds per training epoch of every method relative to ``ce``, as an audit
  pays them: the training steps, the method's end-of-epoch work (clean passes, selections) and
  the checkpoint written after the epoch (same backbone, data, batch size: with ``--data-dir``
  a stratified subset of CIFAR-10's training photos, else images of the JPEG cache; 40 %
  symmetric label noise; a one-epoch warm-up (``--<method>-warmup 1``) and the median of the
  epochs after it, so the robust phase is what is timed; each method run
  paired with a ``ce`` run just before it, median ratio over repeats), peak memory of each run
  (each in a fresh process; RSS on CPU, ``max_memory_allocated`` on CUDA), and the share of
  each epoch spent fetching batches. The synthetic images (a class template plus noise) are
  learnt within an epoch, and what a method does depends on what its networks believe (which
  samples ProMix selects, how many classes PMNAR still counts as negatives), so only natural
  images give the cost a user's audit pays.
- backbones: train and eval img/s of each backbone on the engine's data path.
- scaling: epoch time and peak memory of one method at N samples × K classes, and the bytes
  of every method's per-sample state per N·K entry.
- compile: cold-compile seconds and img/s with and without ``--compile`` (torch.compile).

    python benchmarks/speed.py                       # defaults: under 15 minutes on 2 CPU cores
    python benchmarks/speed.py --data-dir ~/data/cifar10 --method-samples 5000 --epochs 6   # methods on CIFAR-10 photos
    python benchmarks/speed.py --data-dir ~/data/cifar10 --method-samples 5000 --sections methods   # that section alone
    python benchmarks/speed.py --device cuda --method-samples 20000 --scale-samples 5000 10000 20000 40000 100000

Writes benchmarks/results/speed-<device>.json and prints a table.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
from backbone_speed import measure as backbone_throughput
from backbone_speed import time_steps
from common import RESULTS
from PIL import Image

from lnlclean import __version__
from lnlclean.config import RunConfig
from lnlclean.data.cache import load_or_build
from lnlclean.data.datasets import load_benchmark
from lnlclean.data.imagefile import ImageArray
from lnlclean.data.manifest import read_manifest
from lnlclean.engine import TrainData, build_method, describe_device, device_tag, fit, resolve_device
from lnlclean.fileio import write_json
from lnlclean.methods import METHODS
from lnlclean.methods.base import hparam_fields
from lnlclean.models import backbone_names, build_backbone

N_CLASSES = 10
SECTIONS = ("cache", "methods", "scaling", "backbones", "compile")
TARGETS = {  # name → (measured value key, comparison, bound)
    "alr epoch time / ce": ("methods.alr.ratio_to_ce", "<=", 1.10),
    "alim epoch time / ce": ("methods.alim.ratio_to_ce", "<=", 1.10),
    "pmnar epoch time / ce": ("methods.pmnar.ratio_to_ce", "<=", 2.0),
    "flywheel epoch time / ce": ("methods.flywheel.ratio_to_ce", "<=", 2.5),
    "promix epoch time / ce": ("methods.promix.ratio_to_ce", "<=", 3.0),
    "data wait share of step time (max over methods)": ("data_wait_share_max", "<=", 0.05),
    "cache build, 32 px JPEG (img/s)": ("cache.jpeg_img_per_s", ">=", 5000),
    "per-sample state bytes per N·K entry (max over methods)": ("state_bytes_per_nk_max", "<=", 16),
}


# ---------------------------------------------------------------- memory


def isolated(function, *args):
    """Returns `function(*args)` run in a fresh process, so its peak memory
    is its own (memory freed by earlier runs is often kept by the allocator).
    """
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(function, *args).result()


def reset_peak_memory(device: torch.device) -> None:
    """Starts a new peak-memory window: CUDA's allocator peak, or Linux's VmHWM (via /proc/self/clear_refs)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass  # not Linux: peak_memory_mb falls back to the process-wide peak


def peak_memory_mb(device: torch.device) -> float:
    """Returns the peak memory (MB) since `reset_peak_memory`: allocated on CUDA, resident set on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1e6
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1e3
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3


# ---------------------------------------------------------------- cache


def write_folder(root: Path, n_images: int, suffix: str, size: int = 32) -> Path:
    """Writes `n_images` learnable `size`-px images (class k = template k +
    noise; k = i mod 10) as `suffix` files in class folders. Returns `root`.
    """
    rng = np.random.default_rng(0)
    templates = rng.integers(0, 256, (N_CLASSES, size, size, 3)).astype(np.float32)
    for k in range(N_CLASSES):
        (root / f"{k:02d}").mkdir(parents=True, exist_ok=True)
    for i in range(n_images):
        k = i % N_CLASSES
        pixels = np.clip(templates[k] + rng.normal(0, 48, templates[k].shape), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(root / f"{k:02d}" / f"{i:06d}{suffix}")
    return root


def with_noise(true_labels: np.ndarray, n_classes: int, rate: float = 0.4) -> np.ndarray:
    """Returns `true_labels` with a `rate` share moved to a uniformly drawn other class (symmetric noise)."""
    rng = np.random.default_rng(1)
    wrong = rng.random(len(true_labels)) < rate
    return np.where(wrong, (true_labels + rng.integers(1, n_classes, len(true_labels))) % n_classes, true_labels)


def cache_build_rate(folder: Path, cache_dir: Path) -> tuple[float, np.ndarray, np.ndarray]:
    """Returns (img/s of a from-scratch cache build of the ImageFolder `folder`, the cached images, their labels)."""
    manifest = read_manifest(folder)
    started = time.perf_counter()
    cache = load_or_build(manifest, cache_dir)
    return len(manifest) / (time.perf_counter() - started), cache.images, manifest.labels


# ---------------------------------------------------------------- methods


def method_data(args, cached: np.ndarray, true_labels: np.ndarray, cache_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """Returns the methods section's images and true labels: `args.method_samples` CIFAR-10
    photos (stratified) with ``--data-dir``, else as many cached synthetic images of every class.
    """
    if args.data_dir is not None:
        bench = load_benchmark("cifar10", args.data_dir, args.method_samples, cache_dir)
        return np.asarray(bench.train_images[np.arange(len(bench.train_labels))]), np.asarray(bench.train_labels)
    rows = np.linspace(0, len(cached) - 1, args.method_samples).astype(np.int64)  # every class
    return cached[rows], true_labels[rows]


def timed_fit(config: RunConfig, images_path: Path, labels: np.ndarray, n_classes: int) -> dict:
    """Trains `config` on the first len(`labels`) images of the ``.npy`` file `images_path` (read as the image
    cache is, with pread), writing a checkpoint after every epoch as an audit does.

    Returns wall seconds (epoch plus checkpoint) and data share per epoch (medians over the
    epochs after the first and after the method's warm-up), the last epoch's seconds, peak
    memory (MB) and the per-sample state (MB). Meant for `isolated`.
    """
    images = ImageArray(images_path).subset(np.arange(len(labels)))
    device = resolve_device(config.device)
    reset_peak_memory(device)
    with tempfile.TemporaryDirectory() as folder:
        result = fit(
            TrainData(images=images, labels=labels, n_classes=n_classes),
            config,
            checkpoint_path=Path(folder) / "checkpoint.pt",
        )
    phase = getattr(result.method, "phase", None)
    warmup = (phase.warmup_epochs() if phase is not None else 0) or 0
    timed = (
        result.history[max(1, warmup) :] or result.history[-1:]
    )  # the first epoch also pays one-off costs (allocations, thread pools)
    wall = [h["seconds"] + h.get("checkpoint_seconds", 0.0) for h in timed]
    return {
        "seconds_per_epoch": statistics.median(wall),
        "checkpoint_seconds": statistics.median(h.get("checkpoint_seconds", 0.0) for h in timed),
        "last_epoch_seconds": wall[-1],
        "data_share": statistics.median(h["data_seconds"] / h["seconds"] for h in timed),
        "peak_memory_mb": peak_memory_mb(device),
        "state_mb": result.method.state.nbytes() / 1e6,
    }


def idle_memory_mb(device_name: str) -> float:
    """Returns the memory of a process that has imported lnlclean
    and torch and trained nothing (the floor of every run).
    """
    device = resolve_device(device_name)
    reset_peak_memory(device)
    return peak_memory_mb(device)


def method_costs(images_path: Path, labels: np.ndarray, args, device: torch.device) -> dict:
    """Returns per method: seconds per epoch and ratio to ce (medians over repeats), data share, peak memory.

    Every method run is paired with a ce run just before it, and its ratio is taken to that run,
    so the machine's drift over the minutes of the section does not enter the ratios.
    """
    names = args.method or sorted(m for m in METHODS if m != "ce")
    runs: dict[str, list[dict]] = {"ce": [], **{name: [] for name in names}}
    ratios: dict[str, list[float]] = {name: [] for name in names}

    def run(name: str) -> dict:
        method, _, options = name.partition(":")  # e.g. pmnar:consistency=alternate
        fields = {field.name for field in hparam_fields(METHODS[method])}
        params = {"warmup": 1} if "warmup" in fields else {}  # time the robust phase, not the warm-up's cross-entropy
        params.update(option.split("=", 1) for option in options.split(",") if option)
        config = RunConfig(
            method=method,
            backbone=args.backbone,
            epochs=args.epochs,
            batch_size=args.batch_size,
            device=device.type,
            method_params=params,
        )
        runs[name].append(isolated(timed_fit, config, images_path, labels, N_CLASSES))
        return runs[name][-1]

    for repeat in range(args.repeats):
        for name in names:
            ce, method = run("ce"), run(name)
            ratios[name].append(method["seconds_per_epoch"] / ce["seconds_per_epoch"])
            print(
                f"  repeat {repeat + 1} {name}: {method['seconds_per_epoch']:.2f} s/epoch, ce beside it "
                f"{ce['seconds_per_epoch']:.2f} s",
                flush=True,
            )
    return {
        name: {
            "seconds_per_epoch": statistics.median(r["seconds_per_epoch"] for r in runs[name]),
            "ratio_to_ce": statistics.median(ratios[name]) if name != "ce" else 1.0,
            "ratios": ratios.get(name, []),
            "data_share": max(r["data_share"] for r in runs[name]),
            "peak_memory_mb": max(r["peak_memory_mb"] for r in runs[name]),
        }
        for name in runs
    }


# ---------------------------------------------------------------- scaling


def state_bytes_per_entry(n_samples: int, n_classes: int, device: torch.device) -> dict:
    """Returns, per method, the bytes of its per-sample state divided by N·K (no training needed)."""
    data = TrainData(
        images=np.zeros((n_samples, 8, 8, 3), dtype=np.uint8),
        labels=np.arange(n_samples) % n_classes,
        n_classes=n_classes,
    )
    sizes = {}
    for name in sorted(METHODS):
        method = build_method(RunConfig(method=name, epochs=10, device=device.type), data, device)
        sizes[name] = method.state.nbytes() / (n_samples * n_classes)
    return sizes


def scaling(args, device: torch.device, workdir: Path) -> list[dict]:
    """Returns epoch seconds and peak memory of `args.scale_method`
    at each N in `args.scale_samples` × K in `args.scale_classes`.
    """
    largest = max(args.scale_samples)
    images_path = workdir / "scale.npy"
    images = np.lib.format.open_memmap(images_path, mode="w+", dtype=np.uint8, shape=(largest, 32, 32, 3))
    for start in range(0, largest, 10_000):
        images[start : start + 10_000] = np.random.default_rng(start).integers(
            0, 256, images[start : start + 10_000].shape, dtype=np.uint8
        )
    images.flush()
    rows = []
    for n_classes in args.scale_classes:
        for n_samples in args.scale_samples:
            config = RunConfig(
                method=args.scale_method,
                backbone=args.backbone,
                epochs=2,
                batch_size=args.batch_size,
                device=device.type,
                method_params={"warmup": 1},
            )
            labels = with_noise(np.arange(n_samples) % n_classes, n_classes)
            run = isolated(timed_fit, config, images_path, labels, n_classes)
            rows.append(
                {
                    "method": args.scale_method,
                    "n_samples": n_samples,
                    "n_classes": n_classes,
                    "epoch_seconds": run["last_epoch_seconds"],
                    "peak_memory_mb": run["peak_memory_mb"],
                    "state_mb": run["state_mb"],
                }
            )
            print(
                f"  {args.scale_method} N={n_samples:,} K={n_classes}: {rows[-1]['epoch_seconds']:.1f} s/epoch, "
                f"{rows[-1]['peak_memory_mb']:.0f} MB",
                flush=True,
            )
    return rows


# ---------------------------------------------------------------- compile


def compile_cost(backbone: str, batch_size: int, device_name: str, cache_dir: str) -> dict:
    """Returns the first-step seconds and train img/s of `backbone`,
    eager and with torch.compile (a cold compile: empty `cache_dir`).
    """
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache_dir
    device = resolve_device(device_name)
    x = torch.randn(batch_size, 3, 32, 32, device=device).to(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch_size,), device=device)
    report = {}
    for mode in ("eager", "compiled"):
        torch.manual_seed(0)
        net = build_backbone(backbone, 10, 3).to(device=device, memory_format=torch.channels_last)
        if mode == "compiled":
            net.compile()
        optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)

        def step(net=net, optimizer=optimizer):
            loss = torch.nn.functional.cross_entropy(net(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        started = time.perf_counter()
        step()
        first = time.perf_counter() - started
        report[mode] = {
            "first_step_seconds": first,
            "train_img_per_s": batch_size / statistics.median(time_steps(step, device, 2, 10)),
        }
    return report


# ---------------------------------------------------------------- report


def lookup(report: dict, dotted: str):
    """Returns the value at a dotted path of `report`, or None."""
    value = report
    for key in dotted.split("."):
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def check_targets(report: dict) -> list[dict]:
    """Returns one row per target: name, measured value, bound and whether it is met."""
    rows = []
    for name, (key, comparison, bound) in TARGETS.items():
        value = lookup(report, key)
        met = None if value is None else (value <= bound if comparison == "<=" else value >= bound)
        rows.append({"target": name, "measured": value, "bound": f"{comparison} {bound}", "met": met})
    return rows


def print_report(report: dict) -> None:
    """Prints the sections that ran and the targets as plain tables. Returns None."""
    print(f"\n{report['device']}")
    if "cache" in report:
        print(
            f"cache build {report['cache']['jpeg_img_per_s']:,.0f} img/s (JPEG), "
            f"{report['cache']['png_img_per_s']:,.0f} img/s (PNG)"
        )
    if "methods" in report:
        print(
            f"\nidle process (lnlclean and torch imported): {report['idle_memory_mb']:.0f} MB; methods on "
            f"{report['method_images']}"
        )
        print(f"\n{'method':<20}{'s/epoch':>9}{'× ce':>7}{'data %':>8}{'peak MB':>9}")
        for name, row in report["methods"].items():
            print(
                f"{name:<20}{row['seconds_per_epoch']:>9.2f}{row['ratio_to_ce']:>7.2f}"
                f"{100 * row['data_share']:>8.2f}{row['peak_memory_mb']:>9.0f}"
            )
    if "backbones" in report:
        print(f"\n{'backbone':<18}{'train img/s':>12}{'eval img/s':>12}")
        for row in report["backbones"]:
            print(f"{row['backbone']:<18}{row['train_img_per_s']:>12,.0f}{row['eval_img_per_s']:>12,.0f}")
    if "scaling" in report:
        print(f"\n{'N':>8}{'K':>5}{'s/epoch':>9}{'peak MB':>9}{'state MB':>10}")
        for row in report["scaling"]:
            print(
                f"{row['n_samples']:>8,}{row['n_classes']:>5}{row['epoch_seconds']:>9.1f}{row['peak_memory_mb']:>9.0f}{row['state_mb']:>10.1f}"
            )
        state = ", ".join(f"{name} {value:.2f}" for name, value in report["state_bytes_per_nk"].items())
        print(f"\nper-sample state, bytes per N·K entry (K={report['state_classes']}): {state}")
    compiled = report.get("compile")
    if compiled:
        print(
            f"torch.compile: first step {compiled['compiled']['first_step_seconds']:.1f} s (eager "
            f"{compiled['eager']['first_step_seconds']:.2f} s), "
            f"{compiled['compiled']['train_img_per_s']:,.0f} img/s (eager {compiled['eager']['train_img_per_s']:,.0f})"
        )
    print(f"\n{'target':<58}{'measured':>10}{'bound':>10}  met")
    for row in report["targets"]:
        measured = "–" if row["measured"] is None else f"{row['measured']:.3g}"
        print(f"{row['target']:<58}{measured:>10}{row['bound']:>10}  {row['met']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--backbone", default="small-cnn", help="backbone of the methods, scaling and compile sections")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument(
        "--cache-images", type=int, default=10_000, help="images per folder (JPEG, PNG) for the cache build"
    )
    parser.add_argument("--method-samples", type=int, default=2_000, help="training images of the methods section")
    parser.add_argument(
        "--epochs", type=int, default=4, help="epochs per method run (the first and the warm-up are not timed)"
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="CIFAR-10 (torchvision's files or train/ and test/ folders): time the methods on its photos",
    )
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--scale-method", default="alim", help="method of the scaling section (one with N×K state)")
    parser.add_argument("--scale-samples", type=int, nargs="+", default=[5_000, 10_000, 20_000, 40_000])
    parser.add_argument("--scale-classes", type=int, nargs="+", default=[10, 100])
    parser.add_argument("--backbone-steps", type=int, default=10)
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile section")
    parser.add_argument(
        "--method",
        action="append",
        default=None,
        metavar="NAME[:OPTION=VALUE,...]",
        help="methods of the methods section (repeatable; default: all), e.g. pmnar:consistency=alternate",
    )
    parser.add_argument(
        "--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS), help="the sections to run (default: all)"
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if "cache" not in args.sections and "methods" in args.sections and args.data_dir is None:
        parser.error("--sections without cache: give --data-dir, the methods section then times CIFAR-10 photos")
    device = resolve_device(args.device)
    started = time.perf_counter()
    report = {
        "lnlclean_version": __version__,
        "torch": torch.__version__,
        "device": describe_device(device),
        "settings": vars(args) | {"out": None},
    }
    with tempfile.TemporaryDirectory() as folder:
        workdir = Path(folder)
        cached = true_labels = None
        if "cache" in args.sections:
            print("cache build", flush=True)
            jpeg_rate, cached, true_labels = cache_build_rate(
                write_folder(workdir / "jpeg", args.cache_images, ".jpg"), workdir / "cache"
            )
            png_rate, _, _ = cache_build_rate(
                write_folder(workdir / "png", args.cache_images, ".png"), workdir / "cache"
            )
            report["cache"] = {"images": args.cache_images, "jpeg_img_per_s": jpeg_rate, "png_img_per_s": png_rate}
        if "methods" in args.sections:
            print("methods", flush=True)
            report["idle_memory_mb"] = isolated(idle_memory_mb, device.type)
            method_images, method_labels = method_data(args, cached, true_labels, workdir / "cache")
            np.save(workdir / "methods.npy", method_images)
            report["method_images"] = (
                "CIFAR-10 training photos" if args.data_dir else "synthetic (class template + noise)"
            )
            report["methods"] = method_costs(
                workdir / "methods.npy", with_noise(method_labels, N_CLASSES), args, device
            )
            report["data_wait_share_max"] = max(row["data_share"] for row in report["methods"].values())
        if "scaling" in args.sections:
            print("scaling", flush=True)
            report["scaling"] = scaling(args, device, workdir)
        if "backbones" in args.sections:
            print("backbones", flush=True)
            report["backbones"] = [
                backbone_throughput(name, device, args.batch_size, 32, 2, args.backbone_steps)
                for name in backbone_names()
            ]
    if "scaling" in args.sections:
        report["state_classes"] = min(
            args.scale_classes
        )  # per-sample (not per-class) state weighs most per N·K at the smallest K
        report["state_bytes_per_nk"] = state_bytes_per_entry(10_000, report["state_classes"], device)
        report["state_bytes_per_nk_max"] = max(report["state_bytes_per_nk"].values())
    if "compile" in args.sections and not args.no_compile:
        print("compile", flush=True)
        with tempfile.TemporaryDirectory() as compile_cache:
            report["compile"] = isolated(compile_cost, args.backbone, args.batch_size, device.type, compile_cache)
    report["targets"] = check_targets(report)
    report["seconds"] = time.perf_counter() - started
    out = args.out or RESULTS / f"speed-{device_tag(device)}.json"
    write_json(out, report)
    print_report(report)
    print(f"\nwrote {out} in {report['seconds']:.0f} s")


if __name__ == "__main__":
    main()
