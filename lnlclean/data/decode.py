"""Decode image files into rows of a uint8 ``.npy`` array, in parallel.

Every image becomes 8-bit RGB: grayscale, palette, CMYK, RGBA (composited on white) and
16-bit images are converted, not rejected; an animated image gives its first frame. Images of
the target size are kept as they are; others have the shorter side resized to it and the
centre cropped.

Decompression-bomb guard: an image whose header announces more than :data:`MAX_PIXELS`
pixels is refused before a single pixel is decoded (Pillow only warns below twice its own
limit; here that warning is an error).

Parallelism: for small images, Python's per-image work dominates and threads only contend for
the interpreter lock (``benchmarks/decode_rate.py``: two threads decode 32 px JPEGs more slowly
than one), so large folders are split into chunks decoded by forked worker processes; for large
images the two do about equally well. Small folders, and platforms without ``fork``, use threads.

Memory: the output file is never mapped. Each task decodes its chunk into a buffer of at most
:data:`WRITE_BYTES` and writes it at the rows' offset with ``os.pwrite``, so a worker holds one
buffer however large the cache, and the written pages stay in the kernel's page cache, not in
any process's resident set.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .imagefile import NpyLayout, read_npy_layout, write_rows

MAX_PIXELS = 89_478_485  # Pillow's default Image.MAX_IMAGE_PIXELS (a 0.25 GB RGB bitmap)
CHUNK = 512  # images per task: large enough to amortise the task, small enough for smooth progress
PROCESS_MIN = 2048  # below this many images, starting processes costs more than it saves
WRITE_BYTES = 16 * 2**20  # decoded rows a task buffers before writing them out
Size = tuple[int, int]
# Pillow's warnings (truncated reads, corrupt EXIF, decompression bombs, …) only repeat on stderr
# what decoding reports as a decoded image or an ImageError. The filter is set once, by module:
# warnings.catch_warnings swaps the process-wide filter list, so around decodes running in
# threads one thread's exit would unsilence another's decode.
warnings.filterwarnings("ignore", module=r"PIL(\.|$)")
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


class ImageError(Exception):
    """An image file that cannot be decoded; the message says why."""


def decode_image(path: Path, size: Size) -> np.ndarray:
    """Returns the image at `path` as uint8 RGB of shape (height, width, 3) for `size` = (height, width).

    Raises ImageError when the file is not a complete image or is over the pixel limit.
    """
    return _decode(path, size)[0]


def _decode(path: Path, size: Size) -> tuple[np.ndarray, Size]:
    """Returns the decoded image (as `decode_image`) and its original (height, width)."""
    rgb = open_rgb(path)
    original = (rgb.height, rgb.width)
    height, width = size
    if original != (height, width):
        rgb = resize_center_crop(rgb, height, width)
    return np.asarray(rgb, dtype=np.uint8), original


def open_rgb(path: Path, at_least: int | None = None) -> Image.Image:
    """Returns the image at `path` decoded as 8-bit RGB (see :func:`to_rgb`), at its own size.

    With `at_least`, a JPEG may be decoded at a half, quarter or eighth of its size, as long as
    both sides stay at least `at_least` pixels (much faster for a thumbnail of a large photo).
    Raises ImageError when the file is missing, not a complete image, or over the pixel limit.
    """
    with pillow(path) as image:
        if image.width * image.height > MAX_PIXELS:
            raise ImageError(
                f"{image.width}×{image.height} pixels is over the {MAX_PIXELS:,}-pixel limit, "
                "refused as a possible decompression bomb"
            )
        if at_least is not None:
            image.draft("RGB", (at_least, at_least))
        image.load()
        return to_rgb(image)


def image_size(path: Path) -> Size:
    """Returns (height, width) of the image at `path` from its header.

    Raises ImageError when the header cannot be read.
    """
    with pillow(path) as image:
        return image.height, image.width


@contextmanager
def pillow(path: Path) -> Iterator[Image.Image]:
    """Yields the image at `path` opened by Pillow: the one place where a file meets Pillow.

    Pillow's warnings are silenced by this module's filter (see the top of the module), since
    the outcome is either a decoded image or an ImageError that says why; and any exception
    Pillow raises on a malformed file (OSError, SyntaxError, ValueError, struct errors, …)
    becomes ImageError.
    """
    try:
        with Image.open(path) as image:
            yield image
    except ImageError:
        raise
    except Image.DecompressionBombError:
        raise ImageError(
            f"over twice the {MAX_PIXELS:,}-pixel limit, refused as a possible decompression bomb"
        ) from None
    except UnidentifiedImageError:
        raise ImageError("not an image file Pillow can read") from None
    except FileNotFoundError:
        raise ImageError("not found") from None
    except OSError as err:
        raise ImageError(f"cannot decode ({err})") from None
    except MemoryError:
        raise ImageError("too large to decode in the memory available") from None
    except Exception as err:  # Pillow's plugins raise many kinds on malformed input
        raise ImageError(f"cannot decode ({type(err).__name__}: {err})") from err


def to_rgb(image: Image.Image) -> Image.Image:
    """Returns `image` as 8-bit RGB; 16/32-bit grayscale is scaled by its bit depth, not clipped."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode != "I" or values.max() > 255 else 255.0
        image = Image.fromarray(np.clip(values / top * 255.0, 0, 255).astype(np.uint8), mode="L")
    elif image.mode == "F":
        image = Image.fromarray(np.clip(np.asarray(image), 0, 255).astype(np.uint8), mode="L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB")


def resize_center_crop(image: Image.Image, height: int, width: int) -> Image.Image:
    """Returns `image` resized so it covers height×width, then centre-cropped to it."""
    scale = max(height / image.height, width / image.width)
    new_w, new_h = max(width, round(image.width * scale)), max(height, round(image.height * scale))
    image = image.resize((new_w, new_h), Image.BILINEAR, reducing_gap=3.0)
    left, top = (new_w - width) // 2, (new_h - height) // 2
    return image.crop((left, top, left + width, top + height))


def decode_rows(array_path: str, root: str, paths: list[str], start: int) -> tuple[dict[int, str], Counter[Size]]:
    """Decodes `paths` (relative to `root`) into rows `start`… of the ``.npy`` file `array_path`.

    Rows are decoded into a buffer of at most :data:`WRITE_BYTES` and written with ``os.pwrite``;
    the row of an image that cannot be decoded is written as zeros.
    Returns (row → reason for each image that could not be decoded, how many decoded images had each original size).
    """
    layout = read_npy_layout(array_path)
    per_write = max(1, WRITE_BYTES // max(1, layout.row_bytes))
    bad: dict[int, str] = {}
    sizes: Counter[Size] = Counter()
    fd = os.open(array_path, os.O_WRONLY | getattr(os, "O_BINARY", 0))
    try:
        for first in range(0, len(paths), per_write):
            block, block_bad, block_sizes = _decode_block(
                Path(root), paths[first : first + per_write], layout, start + first
            )
            write_rows(fd, layout, start + first, block)
            bad.update(block_bad)
            sizes.update(block_sizes)
    finally:
        os.close(fd)
    return bad, sizes


def _decode_block(
    root: Path, paths: list[str], layout: NpyLayout, first_row: int
) -> tuple[np.ndarray, dict[int, str], Counter[Size]]:
    """Returns (the decoded rows of `paths`, zeros for bad images; row → reason for those; count per original size)."""
    block = np.zeros((len(paths), *layout.shape[1:]), dtype=layout.dtype)
    bad: dict[int, str] = {}
    sizes: Counter[Size] = Counter()
    for offset, rel in enumerate(paths):
        try:
            block[offset], original = _decode(root / rel, layout.shape[1:3])
            sizes[original] += 1
        except ImageError as err:
            bad[first_row + offset] = str(err)
    return block, bad, sizes


def decode_all(
    root: Path,
    paths: list[str],
    array_path: Path,
    workers: int | None,
    advance: Callable[[int], None] | None,
) -> tuple[dict[int, str], Counter[Size]]:
    """Decodes every image into the existing ``.npy`` file `array_path` (uint8 N×H×W×3, N = len(paths)).

    Returns (row → reason for the bad images, how many decoded images had each original (height, width)).
    `advance(n)` is called as chunks finish. On an exception (Ctrl-C included) the pending
    chunks are cancelled before it propagates.
    """
    workers = workers or os.cpu_count() or 1
    bad: dict[int, str] = {}
    sizes: Counter[Size] = Counter()
    pool = _pool(workers, len(paths))
    try:
        with warnings.catch_warnings():  # Python ≥ 3.12 warns about fork in a threaded process; the workers only decode
            warnings.simplefilter("ignore", DeprecationWarning)
            futures = {
                pool.submit(decode_rows, str(array_path), str(root), paths[s : s + CHUNK], s): min(
                    CHUNK, len(paths) - s
                )
                for s in range(0, len(paths), CHUNK)
            }
        for future in as_completed(futures):
            chunk_bad, chunk_sizes = future.result()
            bad.update(chunk_bad)
            sizes.update(chunk_sizes)
            if advance is not None:
                advance(futures[future])
    finally:
        pool.shutdown(cancel_futures=True)
    return bad, sizes


def _pool(workers: int, n_images: int) -> Executor:
    """Returns forked processes for a large folder where ``fork`` exists, else threads."""
    if workers > 1 and n_images >= PROCESS_MIN and "fork" in multiprocessing.get_all_start_methods():
        return ProcessPoolExecutor(
            workers, mp_context=multiprocessing.get_context("fork"), initializer=_leave_signals_to_parent
        )
    return ThreadPoolExecutor(workers)


def _leave_signals_to_parent() -> None:
    """In a worker: ignore Ctrl-C (the parent stops the pool) and restore the default SIGTERM."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
