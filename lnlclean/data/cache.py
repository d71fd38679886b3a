"""Decode every image once into a uint8 array ``N×H×W×C`` stored as a ``.npy`` file.

The cache lives in a directory (``--cache-dir``, default ``~/.cache/lnlclean``) under a key
that fingerprints the image folder: every relative path with its byte size and
modification time, plus the requested image size. Editing, adding or removing an image
changes the key, so the next run rebuilds; an unchanged folder reuses the cache without
opening a single image. Files are written under a temporary name and renamed into place,
so an interrupted build never leaves a cache that looks complete. The file is read back as an
:class:`~lnlclean.data.imagefile.ImageArray` (positioned reads, no memory map), so neither
building nor reading a cache grows a process's memory with the size of the cache.

Image size (``image_size``): ``None`` means *auto* — keep the images' own size when they all
have the same size and neither side exceeds 64 px (CIFAR-like data), otherwise use the
backbone's size (64 px for the CIFAR-style networks, 224 px for torchvision models).
An explicit size resizes the shorter side to that size and crops the centre square. When
auto resizes, the cache records why (:attr:`ImageCache.resized`, also in its JSON metadata, so
a reused cache explains itself the same way); an explicit size needs no explanation.
Decoding itself (conversions, the decompression-bomb guard, parallelism) is
:mod:`lnlclean.data.decode`.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..fileio import atomic_path, prepare_output_dir
from .decode import ImageError, Size, decode_all, image_size
from .imagefile import ImageArray, allocate_npy
from .manifest import Manifest

CACHE_FORMAT = 1
KEEP_SIZE_LIMIT = 64
CHANNELS = 3
SIZES_SHOWN = 3  # sizes a resize message lists, most common first
Advance = Callable[[int], None]


@dataclass
class ImageCache:
    """Decoded images of a manifest.

    Attributes:
        images: uint8 array N×H×W×3 read from `path` on demand (rows of bad images are zero).
        bad: reason per manifest index for images that could not be decoded.
        path: the ``.npy`` file holding `images`.
        reused: True when the cache was found on disk and not rebuilt.
        resized: when auto (``image_size`` None) resized the images, one line saying to what size,
            why and how to choose another; None when they kept their size or the size was explicit.
    """

    images: ImageArray
    bad: dict[int, str]
    path: Path
    reused: bool
    resized: str | None = None


@dataclass(frozen=True)
class CacheSlot:
    """Where the cache of one manifest and size setting lives (see :func:`locate`)."""

    array_path: Path
    meta_path: Path
    image_size: int | None
    fallback_size: int


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
        try:
            stat = (manifest.root / rel).stat()
            digest.update(f"\n{rel}|{stat.st_size}|{stat.st_mtime_ns}".encode())
        except (OSError, ValueError):  # a missing file kept under --on-bad-image skip
            digest.update(f"\n{rel}|missing".encode())
    return digest.hexdigest()[:32]


def cache_dir_option(cache_dir: Path | None) -> str:
    """Returns how the user set the cache directory, for messages:
    ``--cache-dir``, ``$LNLCLEAN_CACHE`` or ``cache directory``.
    """
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
    the cache directory cannot be created or written. :func:`locate`, :func:`reuse` and
    :func:`build` are its steps, for a caller that shows progress only when images are decoded.
    """
    slot = locate(manifest, cache_dir, image_size, fallback_size, option)
    return reuse(slot, len(manifest)) or build(manifest, slot, workers, advance)


def locate(
    manifest: Manifest,
    cache_dir: Path,
    image_size: int | None = None,
    fallback_size: int = 64,
    option: str = "--cache-dir",
) -> CacheSlot:
    """Returns where the cache of `manifest` at this size setting lives, creating `cache_dir` if needed.

    Stats every image file once (the fingerprint) but opens none. Raises UserError naming
    `option` when the cache directory cannot be created or written.
    """
    prepare_output_dir(cache_dir, option)
    key = fingerprint(manifest, image_size, fallback_size)
    return CacheSlot(cache_dir / f"{key}.npy", cache_dir / f"{key}.json", image_size, fallback_size)


def reuse(slot: CacheSlot, n_samples: int) -> ImageCache | None:
    """Returns the cache found at `slot` without opening an image, or None when it must be built."""
    return _try_load(slot.array_path, slot.meta_path, n_samples)


def build(
    manifest: Manifest,
    slot: CacheSlot,
    workers: int | None = None,
    advance: Advance | None = None,
) -> ImageCache:
    """Decodes every image of `manifest` into the cache at `slot` and returns it (``reused`` False).

    `advance(n)` is called as images are decoded.
    """
    if slot.image_size is not None:
        return _build(manifest, slot, (slot.image_size, slot.image_size), workers, advance)
    fallback = (slot.fallback_size, slot.fallback_size)
    first = _first_size(manifest)
    if first is None or max(first) > KEEP_SIZE_LIMIT:
        return _build(manifest, slot, fallback, workers, advance, explain=True)
    # Auto: decode at the first image's size; if another size turns up, that cache is discarded
    # before it is committed and the images are decoded again at the fallback size.
    try:
        return _build(manifest, slot, first, workers, advance, only_size=first)
    except _MixedSizes:
        return _build(manifest, slot, fallback, workers, None, explain=True)


class _MixedSizes(Exception):
    """The images turned out not to share one size."""


def _try_load(array_path: Path, meta_path: Path, n_samples: int) -> ImageCache | None:
    """Returns the cache on disk, or None when it is missing, foreign or damaged (it is then rebuilt)."""
    if not (array_path.is_file() and meta_path.is_file()):
        return None
    try:
        meta = json.loads(meta_path.read_text())
        images = ImageArray(array_path)
    except (OSError, ValueError, EOFError):
        return None
    if not isinstance(meta, dict) or not isinstance(meta.get("bad", {}), dict):
        return None
    if not isinstance(meta.get("resized"), (str, type(None))):
        return None
    if (
        meta.get("format") != CACHE_FORMAT
        or images.shape[0] != n_samples
        or images.dtype != np.uint8
        or images.ndim != 4
    ):
        return None
    bad = {int(i): reason for i, reason in meta.get("bad", {}).items()}
    # a cache written before "resized" was recorded has none: it says nothing rather than being rebuilt
    return ImageCache(images=images, bad=bad, path=array_path, reused=True, resized=meta.get("resized"))


def _first_size(manifest: Manifest) -> tuple[int, int] | None:
    """Returns (height, width) of the first image whose header can be read, or None when none can."""
    for rel in manifest.paths:
        try:
            return image_size(manifest.root / rel)
        except ImageError:
            continue  # reported with its reason when it is decoded
    return None


def _build(manifest, slot, side, workers, advance, only_size=None, explain=False) -> ImageCache:
    """Decodes the images at `side` = (height, width) into the cache files at `slot` and returns the cache.

    With `only_size`, raises _MixedSizes (and writes nothing) when an image has another original size.
    With `explain` (auto chose the fallback size), the cache records why the images were resized.
    """
    shape = (len(manifest), *side, CHANNELS)
    with atomic_path(slot.array_path) as tmp:
        allocate_npy(tmp, shape, np.dtype(np.uint8))
        bad, sizes = decode_all(manifest.root, manifest.paths, tmp, workers, advance)
        if only_size is not None and not set(sizes) <= {only_size}:
            raise _MixedSizes()
    resized = resize_message(sizes, side) if explain else None
    bad_text = {str(i): reason for i, reason in sorted(bad.items())}
    meta = {"format": CACHE_FORMAT, "shape": list(shape), "bad": bad_text, "resized": resized}
    with atomic_path(slot.meta_path) as tmp:
        tmp.write_text(json.dumps(meta))
    images = ImageArray(slot.array_path)
    return ImageCache(images=images, bad=bad, path=slot.array_path, reused=False, resized=resized)


def resize_message(sizes: Counter[Size], side: Size) -> str | None:
    """Returns the line telling why auto resized images of original `sizes` (count per (height, width)) to `side`.

    Returns None when no image was resized: none decoded, or all were already of size `side`.
    """
    if not sizes or set(sizes) == {side}:
        return None
    if len(sizes) > 1:
        ranked = sorted(sizes.items(), key=lambda item: (-item[1], -item[0][0] * item[0][1], item[0]))
        shown = [f"{count:,} at {_size_text(size)}" for size, count in ranked[:SIZES_SHOWN]]
        more = ", …" if len(ranked) > SIZES_SHOWN else ""
        why = f"they come in {len(sizes):,} sizes ({', '.join(shown)}{more})"
    elif max(only := next(iter(sizes))) > KEEP_SIZE_LIMIT:
        why = f"they are {_size_text(only)}, larger than the {KEEP_SIZE_LIMIT} px up to which images keep their size"
    else:  # the first image's header announced a large size, then the image could not be decoded
        why = f"the first image is larger than the {KEEP_SIZE_LIMIT} px up to which images keep their size"
    return f"images resized to {_size_text(side)} px: {why}; choose another with --image-size"


def _size_text(size: Size) -> str:
    """Returns (height, width) `size` written width×height, as image viewers show it."""
    height, width = size
    return f"{width}×{height}"
