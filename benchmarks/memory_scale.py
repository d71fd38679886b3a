"""Resident memory of building and reading an image cache larger than the memory it is given.

Writes a folder of noisy images (200,000 JPEGs of 64×64 px by default: a 2.4 GB cache), then,
each in a fresh process: builds the image cache with `load_or_build` (forked decoding
workers included), trains one `ce` epoch over the whole cache on the CPU (small-cnn), the
same epoch over a 2,048-image in-memory array (what the network alone takes), and reads every
row of the cache in batches (with the file already in the page cache), once through
`ImageArray` and once through a memory map as the cache was read before. A thread samples
VmRSS, RssAnon, RssFile and PSS of the process and all its children every 50 ms; the peaks of
their sums over the process tree are reported, with a timeline (every 10 s: memory and the
bytes the process has read so far) that shows whether memory follows the data read. Forked
workers share their parent's pages, so the RSS sums count those pages once per process; PSS
divides each shared page among the processes that map it. For the same reason getrusage's
maxrss of a child forked from a large process (a decoding worker, or any subprocess) starts at
about its parent's size.

    python benchmarks/memory_scale.py [--n-images 200000] [--size 64] [--format jpg] [--work-dir DIR]

Writes benchmarks/results/memory-scale-cpu.json and prints a table.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import shutil
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from common import RESULTS
from PIL import Image

from lnlclean import __version__
from lnlclean.fileio import write_json

N_CLASSES = 10
STATUS_FIELDS = {"VmRSS": "total", "RssAnon": "anon", "RssFile": "file"}
READ_BATCH = 1024
TIMELINE_SECONDS = 10.0


# ---------------------------------------------------------------- the image folder


def write_images(root: Path, start: int, stop: int, size: int, fmt: str) -> int:
    """Writes images `start`…`stop`-1 (a blurred random pattern plus noise) under `root`. Returns the bytes written."""
    rng = np.random.default_rng(start)
    written = 0
    for i in range(start, stop):
        coarse = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
        base = np.asarray(Image.fromarray(coarse).resize((size, size), Image.BILINEAR), dtype=np.float32)
        pixels = np.clip(base + rng.normal(0, 25, base.shape), 0, 255).astype(np.uint8)
        path = root / image_name(i, fmt)
        Image.fromarray(pixels).save(path, **({"quality": 90} if fmt == "jpg" else {}))
        written += path.stat().st_size
    return written


def image_name(i: int, fmt: str) -> str:
    """Returns the relative path of image `i`: 10,000 images per subfolder."""
    return f"{i // 10_000:03d}/{i:07d}.{fmt}"


def make_folder(root: Path, n_images: int, size: int, fmt: str) -> dict:
    """Writes `n_images` images and ``labels.csv`` (path,label; label = index mod 10) under `root`, with a process pool.

    Returns {"seconds", "bytes", "reused"}; an existing folder written with the same settings is
    kept as it is (its seconds are those of the run that wrote it).
    """
    marker = root / "settings.txt"
    settings = f"{n_images} {size} {fmt}"
    if marker.is_file() and marker.read_text().split("|")[0] == settings:
        _, written, seconds = marker.read_text().split("|")
        return {"seconds": float(seconds), "bytes": int(written), "reused": True}
    shutil.rmtree(root, ignore_errors=True)
    for sub in range((n_images + 9_999) // 10_000):
        (root / f"{sub:03d}").mkdir(parents=True)
    started = time.perf_counter()
    step = 2_000
    with ProcessPoolExecutor(os.cpu_count()) as pool:
        sizes = pool.map(
            write_images, *zip(*[(root, s, min(s + step, n_images), size, fmt) for s in range(0, n_images, step)])
        )
        total = sum(sizes)
    rows = "".join(f"{image_name(i, fmt)},{i % N_CLASSES}\n" for i in range(n_images))
    (root / "labels.csv").write_text("path,label\n" + rows)
    seconds = time.perf_counter() - started
    marker.write_text(f"{settings}|{total}|{seconds}")
    return {"seconds": seconds, "bytes": total, "reused": False}


def warm_page_cache(path: Path) -> float:
    """Reads `path` once from start to end, so that later reads find it in the page cache. Returns the seconds taken."""
    started = time.perf_counter()
    buffer = bytearray(64 * 2**20)
    with open(path, "rb", buffering=0) as handle:
        while handle.readinto(buffer):
            pass
    return time.perf_counter() - started


# ---------------------------------------------------------------- memory of a process tree


def descendants(pid: int) -> list[int]:
    """Returns the pids of the children of `pid`, their children, and so on (Linux ``/proc``)."""
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                children = [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
            found += children
            frontier += children
    return found


def process_memory_kb(pid: int) -> dict[str, int] | None:
    """Returns {"total", "anon", "file", "pss"} in kB for process `pid`, or None when it has exited."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return None
    memory = {"total": 0, "anon": 0, "file": 0, "pss": 0}
    for line in status.splitlines():
        name, _, value = line.partition(":")
        if name in STATUS_FIELDS:
            memory[STATUS_FIELDS[name]] = int(value.split()[0])
    for line in rollup.splitlines():
        if line.startswith("Pss:"):
            memory["pss"] = int(line.split()[1])
    return memory


def bytes_read() -> int:
    """Returns the bytes this process has read with read system calls so far (``rchar``), or 0 where unknown."""
    try:
        for line in Path("/proc/self/io").read_text().splitlines():
            if line.startswith("rchar:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class TreeMemory:
    """Samples the memory of this process and its descendants every
    `interval` seconds in a thread, keeping the peaks of the sums.
    """

    def __init__(self, interval: float = 0.05):
        self.interval = interval
        self.peak = {"total": 0, "anon": 0, "file": 0, "pss": 0}
        self.start: dict[str, int] = {}
        self.processes_max = 0
        self.timeline: list[dict] = []
        self._started = time.perf_counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> dict[str, int]:
        """Returns the summed memory (kB) of the tree now, and raises the peaks to it."""
        pids = [os.getpid(), *descendants(os.getpid())]
        readings = [m for m in map(process_memory_kb, pids) if m is not None]
        total = {key: sum(m[key] for m in readings) for key in self.peak}
        self.peak = {key: max(self.peak[key], total[key]) for key in self.peak}
        self.processes_max = max(self.processes_max, len(readings))
        self._record(total)
        return total

    def _record(self, total: dict[str, int]) -> None:
        """Appends `total` (in MB) and the bytes read so far to the
        timeline when TIMELINE_SECONDS have passed since the last point.
        """
        now = time.perf_counter() - self._started
        if self.timeline and now - self.timeline[-1]["seconds"] < TIMELINE_SECONDS:
            return
        point = {key: round(kb / 1024, 1) for key, kb in total.items()}
        self.timeline.append({"seconds": round(now, 1), **point, "read_mb": round(bytes_read() / 2**20, 1)})

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self) -> TreeMemory:
        self.start = self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def report(self) -> dict:
        """Returns the peaks and the starting values in MB, the most
        processes seen, and getrusage's maxrss of self and children.
        """
        return {
            "rss_peak_mb": {key: kb / 1024 for key, kb in self.peak.items()},
            "rss_start_mb": {key: kb / 1024 for key, kb in self.start.items()},
            "processes_max": self.processes_max,
            "maxrss_self_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "maxrss_children_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
            "timeline": self.timeline,
        }


# ---------------------------------------------------------------- phases, each run in a fresh process


def build_cache(root: Path, cache_dir: Path) -> dict:
    """Returns seconds, cache path and bytes, bad-image count and memory of a from-scratch `load_or_build`."""
    from lnlclean.data.cache import load_or_build
    from lnlclean.data.manifest import read_manifest

    manifest = read_manifest(root, root / "labels.csv")
    with TreeMemory() as memory:
        started = time.perf_counter()
        cache = load_or_build(manifest, cache_dir, image_size=None, fallback_size=64)
        seconds = time.perf_counter() - started
    assert not cache.reused
    return {
        "seconds": seconds,
        "path": str(cache.path),
        "shape": list(cache.images.shape),
        "bytes": cache.images.nbytes,
        "bad_images": len(cache.bad),
        **memory.report(),
    }


def train_epoch(root: Path, cache_dir: Path, batch_size: int, backbone: str) -> dict:
    """Returns seconds and memory of one `ce` epoch (and the final inference pass) over the whole reused cache."""
    from lnlclean.config import RunConfig
    from lnlclean.data.cache import load_or_build
    from lnlclean.data.manifest import read_manifest
    from lnlclean.engine import TrainData, fit

    with TreeMemory() as memory:
        started = time.perf_counter()
        manifest = read_manifest(root, root / "labels.csv")
        cache = load_or_build(manifest, cache_dir, image_size=None, fallback_size=64)
        open_seconds = time.perf_counter() - started
        assert cache.reused
        data = TrainData(images=cache.images, labels=manifest.labels, n_classes=manifest.n_classes)
        result = fit(data, RunConfig(method="ce", backbone=backbone, epochs=1, device="cpu", batch_size=batch_size))
    return {
        "images_type": type(cache.images).__name__,
        "open_seconds": open_seconds,
        "fit_seconds": result.seconds,
        "epoch_seconds": result.history[0]["seconds"],
        "data_seconds": result.history[0]["data_seconds"],
        **memory.report(),
    }


def train_in_memory(n_images: int, size: int, batch_size: int, backbone: str) -> dict:
    """Returns seconds and memory of the same epoch over `n_images`
    random images in an in-memory array: the network's own share.
    """
    from lnlclean.config import RunConfig
    from lnlclean.engine import TrainData, fit

    images = np.random.default_rng(0).integers(0, 256, (n_images, size, size, 3), dtype=np.uint8)
    labels = np.arange(n_images) % N_CLASSES
    with TreeMemory() as memory:
        result = fit(
            TrainData(images=images, labels=labels, n_classes=N_CLASSES),
            RunConfig(method="ce", backbone=backbone, epochs=1, device="cpu", batch_size=batch_size),
        )
    return {
        "n_images": n_images,
        "fit_seconds": result.seconds,
        "epoch_seconds": result.history[0]["seconds"],
        **memory.report(),
    }


def read_all(cache_path: Path, how: str) -> dict:
    """Returns seconds and memory of reading every row in batches of
    READ_BATCH through `how`: "pread" (ImageArray) or "mmap" (np.load).
    """
    from lnlclean.data.imagefile import ImageArray

    with TreeMemory() as memory:
        started = time.perf_counter()
        images = ImageArray(cache_path) if how == "pread" else np.load(cache_path, mmap_mode="r")
        checksum = 0
        for start in range(0, len(images), READ_BATCH):
            checksum += int(np.asarray(images[start : start + READ_BATCH]).sum(dtype=np.uint64))
        seconds = time.perf_counter() - started
    return {"how": how, "seconds": seconds, "checksum": checksum, **memory.report()}


def isolated(function, *args):
    """Returns `function(*args)` run in a fresh (spawned) process."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(function, *args).result()


# ---------------------------------------------------------------- report


def print_table(report: dict) -> None:
    """Prints seconds and peak memory (MB) of each phase beside the cache size. Returns None."""
    cache_mb = report["cache_bytes"] / 2**20
    print(f"{report['n_images']:,} images of {report['image_size']} px: cache {cache_mb:,.0f} MB")
    print(f"{'phase':<22}{'seconds':>9}{'RSS':>9}{'anon':>9}{'file':>9}{'PSS':>9}{'RSS/cache':>11}")
    for name in ("cache", "epoch", "epoch_in_memory", "read_pread", "read_mmap"):
        phase = report[name]
        peak = phase["rss_peak_mb"]
        seconds = phase.get("seconds", phase.get("fit_seconds"))
        print(
            f"{name:<22}{seconds:>9.1f}{peak['total']:>9,.0f}{peak['anon']:>9,.0f}{peak['file']:>9,.0f}{peak['pss']:>9,.0f}"
            f"{peak['total'] / cache_mb:>11.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-images", type=int, default=200_000)
    parser.add_argument(
        "--size", type=int, default=64, help="image side in px (also the cache's, as images ≤ 64 px keep their size)"
    )
    parser.add_argument("--format", choices=("jpg", "png"), default="jpg")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--backbone", default="small-cnn")
    parser.add_argument(
        "--baseline-images",
        type=int,
        default=2048,
        help="images of the in-memory epoch that measures the network alone",
    )
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=None,
        help="keep the folder and cache here (a folder with the same settings is reused)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "memory-scale-cpu.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        work = args.work_dir or Path(scratch)
        root, cache_dir = work / "images", work / "cache"
        print("writing images", flush=True)
        folder = make_folder(root, args.n_images, args.size, args.format)
        shutil.rmtree(cache_dir, ignore_errors=True)
        print("building the cache", flush=True)
        cache = isolated(build_cache, root, cache_dir)
        print(f"training one epoch ({cache['seconds']:.0f} s to build the cache)", flush=True)
        epoch = isolated(train_epoch, root, cache_dir, args.batch_size, args.backbone)
        print("baseline epoch and reads", flush=True)
        baseline = isolated(train_in_memory, args.baseline_images, args.size, args.batch_size, args.backbone)
        warm_seconds = warm_page_cache(Path(cache["path"]))
        reads = {how: isolated(read_all, Path(cache["path"]), how) for how in ("pread", "mmap")}
    import torch

    report = {
        "lnlclean_version": __version__,
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "settings": vars(args) | {"out": None},
        "n_images": args.n_images,
        "image_size": args.size,
        "format": args.format,
        "folder_bytes": folder["bytes"],
        "generate_seconds": folder["seconds"],
        "cache_bytes": cache["bytes"],
        "decode_seconds": cache["seconds"],
        "epoch_seconds": epoch["epoch_seconds"],
        "warm_page_cache_seconds": warm_seconds,
        "cache": cache,
        "epoch": epoch,
        "epoch_in_memory": baseline,
        "read_pread": reads["pread"],
        "read_mmap": reads["mmap"],
    }
    write_json(args.out, report)
    print_table(report)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
