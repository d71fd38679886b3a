"""Image decoding rate with threads and with worker processes, for small and large images.

The image cache decodes large folders in forked worker processes rather than threads. This
measures why: the same folder decoded by `decode_all` on a thread pool and on a process pool,
with 1 and 2 workers, for 32 px and 256 px JPEGs.

    python benchmarks/decode_rate.py

Writes benchmarks/results/decode-rate-cpu.json and prints a table.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from unittest import mock

import numpy as np
from common import RESULTS
from PIL import Image

from lnlclean import __version__
from lnlclean.data import decode
from lnlclean.fileio import write_json


def write_jpegs(folder: Path, n_images: int, size: int) -> list[str]:
    """Writes `n_images` noisy `size`-px JPEGs into `folder`. Returns their names."""
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (size, size, 3)).astype(np.float32)
    names = []
    for i in range(n_images):
        pixels = np.clip(base + rng.normal(0, 40, base.shape), 0, 255).astype(np.uint8)
        names.append(f"{i:06d}.jpg")
        Image.fromarray(pixels).save(folder / names[-1], quality=90)
    return names


def rate(folder: Path, names: list[str], size: int, pool: str, workers: int) -> float:
    """Returns img/s of `decode_all` over `names` with a `pool` ("thread" or "process") of `workers`."""
    target = folder / f"out-{pool}-{workers}.npy"
    np.lib.format.open_memmap(target, mode="w+", dtype=np.uint8, shape=(len(names), size, size, 3)).flush()
    executor = (
        (lambda w, n: ThreadPoolExecutor(w))
        if pool == "thread"
        else (lambda w, n: ProcessPoolExecutor(w, mp_context=multiprocessing.get_context("fork")))
    )
    with mock.patch.object(decode, "_pool", executor):
        started = time.perf_counter()
        decode.decode_all(folder, names, target, workers, None)
        seconds = time.perf_counter() - started
    target.unlink()
    return len(names) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000, help="32 px images (256 px: a fifth as many)")
    parser.add_argument("--out", type=Path, default=RESULTS / "decode-rate-cpu.json")
    args = parser.parse_args()
    rows = []
    for size, n_images in ((32, args.images), (256, args.images // 5)):
        with tempfile.TemporaryDirectory() as folder:
            names = write_jpegs(Path(folder), n_images, size)
            for pool in ("thread", "process"):
                for workers in (1, 2):
                    rows.append(
                        {
                            "size": size,
                            "images": n_images,
                            "pool": pool,
                            "workers": workers,
                            "img_per_s": rate(Path(folder), names, size, pool, workers),
                        }
                    )
                    print(
                        f"{size:>4} px  {pool:<8}{workers} worker(s): {rows[-1]['img_per_s']:>8,.0f} img/s", flush=True
                    )
    write_json(args.out, {"lnlclean_version": __version__, "cpu_count": os.cpu_count(), "results": rows})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
