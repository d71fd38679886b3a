"""Decode every image once into a memory-mapped uint8 array ``N×H×W×C``.

The cache lives in a directory (``--cache-dir``, default ``~/.cache/lnlclean``) under a key
that fingerprints the image folder: every relative path with its byte size and
modification time, plus the requested image size. Editing, adding or removing an image
changes the key, so the next run rebuilds; an unchanged folder reuses the cache without
opening a single image. Files are written under a temporary name and renamed into place,
so an interrupted build never leaves a cache that looks complete.

Image size (``image_size``): ``None`` means *auto* — keep the images' own size when they all
have the same size and neither side exceeds 64 px (CIFAR-like data), otherwise use the
backbone's size (64 px for the CIFAR-style networks, 224 px for torchvision models).
An explicit size resizes the shorter side to that size and crops the centre square.
Every image is converted to 3-channel RGB: grayscale, palette, CMYK, RGBA and 16-bit images
are converted, not rejected; an animated image gives its first frame.

Decompression-bomb guard: an image whose header announces more than :data:`MAX_PIXELS`
pixels is refused before a single pixel is decoded (Pillow only warns below twice its own
limit; here that warning is an error).
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import UserError
from ..fileio import atomic_path, probe_writable
from .manifest import Manifest

CACHE_FORMAT = 1
KEEP_SIZE_LIMIT = 64
CHANNELS = 3
MAX_PIXELS = 89_478_485  # Pillow's default Image.MAX_IMAGE_PIXELS (a 0.25 GB RGB bitmap)
# The guard in decode_image refuses these images; Pillow's warning would only repeat it on stderr.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
Advance = Callable[[int], None]


@dataclass
class ImageCache:
    """Decoded images of a manifest.

    Attributes:
        images: uint8 array N×H×W×3, memory-mapped from `path` (rows of bad images are zero).
        bad: reason per manifest index for images that could not be decoded.
        path: the ``.npy`` file holding `images`.
        reused: True when the cache was found on disk and not rebuilt.
    """

    images: np.ndarray
    bad: dict[int, str]
    path: Path
    reused: bool


def default_cache_dir() -> Path:
    """Returns ``$LNLCLEAN_CACHE`` or ``$XDG_CACHE_HOME/lnlclean`` (default ``~/.cache/lnlclean``)."""
    if os.environ.get("LNLCLEAN_CACHE"):
        return Path(os.environ["LNLCLEAN_CACHE"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "lnlclean"


def fingerprint(manifest: Manifest, image_size: int | None, fallback_size: int) -> str:
    """Returns a hex key that changes whenever a path, a file's size or mtime, or the size setting changes."""
    digest = hashlib.sha256(f"v{CACHE_FORMAT}|{manifest.root.resolve()}|{image_size}|{fallback_size}".encode())
    for rel in manifest.paths:
        stat = (manifest.root / rel).stat()
        digest.update(f"\n{rel}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:32]


def cache_dir_option(cache_dir: Path | None) -> str:
    """Returns how the user set the cache directory, for messages: ``--cache-dir``, ``$LNLCLEAN_CACHE`` or ``cache directory``."""
    if cache_dir is not None:
        return "--cache-dir"
    return "$LNLCLEAN_CACHE" if os.environ.get("LNLCLEAN_CACHE") else "cache directory"


def load_or_build(
    manifest: Manifest,
    cache_dir: Path,
    image_size: int | None = None,
    fallback_size: int = 64,
    workers: int | None = None,
    advance: Advance | None = None,
    option: str = "--cache-dir",
) -> ImageCache:
    """Returns the image cache for `manifest`, reusing one on disk when the fingerprint matches.

    `image_size` None is auto (see the module docs); `fallback_size` is the size auto picks
    when the images are large or of mixed sizes. `advance(n)` is called as images are decoded.
    A damaged or foreign entry under the key is rebuilt. Raises UserError naming `option` when
    the cache directory cannot be created or written.
    """
    if cache_dir.exists() and not cache_dir.is_dir():
        raise UserError(f"{option} {cache_dir}: is a file, not a directory; choose another {option}")
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        probe_writable(cache_dir)
    except OSError as err:
        raise UserError(f"{option} {cache_dir}: cannot write there ({err.strerror}); choose another {option}")
    key = fingerprint(manifest, image_size, fallback_size)
    array_path, meta_path = cache_dir / f"{key}.npy", cache_dir / f"{key}.json"
    cached = _try_load(array_path, meta_path, len(manifest))
    if cached is not None:
        return cached
    side = image_size or _auto_size(manifest, fallback_size)
    return _build(manifest, array_path, meta_path, side, workers, advance)


def _try_load(array_path: Path, meta_path: Path, n_samples: int) -> ImageCache | None:
    """Returns the cache on disk, or None when it is missing, foreign or damaged (it is then rebuilt)."""
    if not (array_path.is_file() and meta_path.is_file()):
        return None
    try:
        meta = json.loads(meta_path.read_text())
        images = np.load(array_path, mmap_mode="r")
    except (OSError, ValueError, EOFError):
        return None
    if not isinstance(meta, dict) or not isinstance(meta.get("bad", {}), dict):
        return None
    if meta.get("format") != CACHE_FORMAT or images.shape[0] != n_samples or images.dtype != np.uint8:
        return None
    bad = {int(i): reason for i, reason in meta.get("bad", {}).items()}
    return ImageCache(images=images, bad=bad, path=array_path, reused=True)


def _auto_size(manifest: Manifest, fallback_size: int) -> tuple[int, int] | int:
    """Returns the images' own (height, width) when all share one size ≤ 64 px, else `fallback_size`."""
    sizes = set()
    for rel in manifest.paths:
        try:
            with Image.open(manifest.root / rel) as image:
                sizes.add(image.size)
        except (OSError, UnidentifiedImageError, Image.DecompressionBombError):
            continue  # reported with its reason when it is decoded
        if len(sizes) > 1:
            return fallback_size
    if len(sizes) == 1:
        width, height = sizes.pop()
        if max(width, height) <= KEEP_SIZE_LIMIT:
            return (height, width)
    return fallback_size


def _build(manifest, array_path, meta_path, side, workers, advance) -> ImageCache:
    height, width = side if isinstance(side, tuple) else (side, side)
    shape = (len(manifest), height, width, CHANNELS)
    with atomic_path(array_path) as tmp:
        bad = _decode_into_file(manifest, tmp, shape, workers, advance)
    meta = {"format": CACHE_FORMAT, "shape": list(shape), "bad": {str(i): r for i, r in sorted(bad.items())}}
    with atomic_path(meta_path) as tmp:
        tmp.write_text(json.dumps(meta))
    return ImageCache(images=np.load(array_path, mmap_mode="r"), bad=bad, path=array_path, reused=False)


def _decode_into_file(manifest: Manifest, path: Path, shape: tuple, workers: int | None, advance: Advance | None) -> dict[int, str]:
    """Decodes every image of `manifest` into a new ``.npy`` memory map at `path`. Returns index → reason for the bad ones."""
    images = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=shape)
    bad: dict[int, str] = {}

    def decode_into(index: int) -> None:
        try:
            images[index] = decode_image(manifest.root / manifest.paths[index], shape[1:3])
        except ImageError as err:
            bad[index] = str(err)
        if advance is not None:
            advance(1)

    pool = ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1)
    try:
        list(pool.map(decode_into, range(len(manifest))))
    finally:
        pool.shutdown(cancel_futures=True)  # on Ctrl-C, do not decode the rest first
    images.flush()
    return bad


class ImageError(Exception):
    """An image file that cannot be decoded; the message says why."""


def decode_image(path: Path, size: tuple[int, int]) -> np.ndarray:
    """Returns the image at `path` as uint8 RGB of shape (height, width, 3) for `size` = (height, width).

    Images of exactly that size are kept; others have the shorter side resized to the
    target and the centre cropped. Raises ImageError when the file is not a complete image.
    """
    try:
        with Image.open(path) as image:
            if image.width * image.height > MAX_PIXELS:
                raise ImageError(f"{image.width}×{image.height} pixels is over the {MAX_PIXELS:,}-pixel limit, refused as a possible decompression bomb")
            image.load()
            rgb = to_rgb(image)
    except Image.DecompressionBombError:
        raise ImageError(f"over twice the {MAX_PIXELS:,}-pixel limit, refused as a possible decompression bomb")
    except UnidentifiedImageError:
        raise ImageError("not an image file Pillow can read")
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageError(f"cannot decode ({err})")
    height, width = size
    if rgb.size != (width, height):
        rgb = resize_center_crop(rgb, height, width)
    return np.asarray(rgb, dtype=np.uint8)


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
