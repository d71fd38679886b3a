"""A user's image folder and labels, read for training: the checked input rows, then the decoded images.

:func:`read_input` reads and checks the labels (see :mod:`lnlclean.data.manifest`) and
refuses what no method can learn from; :func:`load_images` decodes the images once into the
image cache (see :mod:`lnlclean.data.cache`) and drops the unreadable ones.
"""

from __future__ import annotations

import difflib
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..distributed import current as current_world
from ..errors import UserError
from ..progress import Reporter
from . import cache as image_cache
from .manifest import Manifest, read_manifest

MIN_CLASS_SIZE = 2
BAD_IMAGE_CHOICES = ("skip", "fail")


@dataclass
class LoadedImages:
    """The decoded images of a manifest.

    Attributes:
        manifest: the manifest without the images that could not be read.
        images: the cached image array, one row per image of `manifest`.
        skipped: relative path → reason, for each image left out.
        fingerprint: what identifies these images and labels (the cache file and a digest of the labels).
    """

    manifest: Manifest
    images: object
    skipped: dict[str, str]
    fingerprint: str


def read_input(
    images: Path,
    labels_csv: Path | None,
    on_bad_image: str,
    require_labels: bool = False,
    allow_outside_root: bool = False,
) -> Manifest:
    """Returns the manifest of the folder `images` and its `labels_csv` (or its class subfolders), checked.

    Raises UserError for invalid input (see :func:`~lnlclean.data.manifest.read_manifest`), an
    `on_bad_image` other than skip or fail, a class with fewer than two images, and a
    candidates-only CSV when `require_labels`.
    """
    if on_bad_image not in BAD_IMAGE_CHOICES:
        raise UserError(f"--on-bad-image {on_bad_image!r}: choose skip or fail")
    manifest = read_manifest(images, labels_csv, allow_outside_root, skip_missing=on_bad_image == "skip")
    if require_labels:
        check_relabel_input(manifest)
    if manifest.has_label_column:
        check_class_sizes(manifest)
    return manifest


def check_relabel_input(manifest: Manifest) -> None:
    """Raises UserError when `manifest` has no label column to correct (candidate sets only). Returns None."""
    if not manifest.has_label_column:
        raise UserError(
            f"{manifest.source}: has candidates but no label column, so there is no label to correct; "
            "run lnlclean audit --method alim and read suggested_label"
        )


def check_class_sizes(manifest: Manifest) -> None:
    """Raises UserError naming the row of a class with fewer than two images (often a typo in a label). Returns None.

    One image cannot tell a method what its class looks like, so its label can be neither
    confirmed nor doubted.
    """
    counts = np.bincount(manifest.labels, minlength=manifest.n_classes)
    for k in np.flatnonzero(counts < MIN_CLASS_SIZE):
        name = manifest.class_names[k]
        row = int(np.flatnonzero(manifest.labels == k)[0])
        where = f"{manifest.source}: row {row + 2}" if manifest.source else f"{manifest.root / manifest.paths[row]}"
        others = [n for n in manifest.class_names if n != name]
        close = difflib.get_close_matches(name, others, n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UserError(
            f"{where}: class {name!r} has only this one image{hint}; fix its label or add images of that class"
        )


def input_table(manifest: Manifest) -> pd.DataFrame:
    """Returns the input rows as text columns: path, label, then the CSV's extra columns."""
    columns = {"path": manifest.paths, "label": np.asarray(manifest.class_names, dtype=object)[manifest.labels]}
    columns.update({name: manifest.extra[name].to_numpy() for name in manifest.extra.columns})
    return pd.DataFrame(columns)  # built at once: column by column is quadratic in a wide CSV


def load_images(
    manifest: Manifest,
    cache_dir: Path | None,
    image_size: int | None,
    fallback_size: int,
    workers: int | None,
    on_bad_image: str,
    reporter: Reporter,
) -> LoadedImages:
    """Returns the images of `manifest`, decoded into the image cache in `cache_dir` or reused from it.

    Images keep their side when they are ≤ 64 px and of one size, else they are resized to
    `fallback_size` (see :func:`~lnlclean.data.cache.locate`); `image_size` overrides both.
    Unreadable images are left out with `on_bad_image` ``skip``. Raises UserError for one with
    ``fail``, and when fewer than two classes are left.
    """
    option = image_cache.cache_dir_option(cache_dir)
    cache_dir = cache_dir or image_cache.default_cache_dir()
    with current_world().main_first():  # rank 0 builds the cache; the others then reuse it
        slot = image_cache.locate(manifest, cache_dir, image_size, fallback_size, option)
        cache = image_cache.reuse(slot, len(manifest))
        if cache is None:  # only then is there decoding to show
            with reporter.task(f"decoding {len(manifest)} images", total=len(manifest)) as advance:
                cache = image_cache.build(manifest, slot, workers, advance)
    reporter.log(f"image cache {'reused' if cache.reused else 'built'}: {cache.path} {tuple(cache.images.shape)}")
    if cache.resized:
        reporter.log(cache.resized)
    skipped = {manifest.paths[i]: reason for i, reason in sorted(cache.bad.items())}
    images = cache.images
    if skipped:
        if on_bad_image == "fail":
            path, reason = next(iter(skipped.items()))
            more = f" (and {len(skipped) - 1} more)" if len(skipped) > 1 else ""
            raise UserError(f"{manifest.root / path}: {reason}{more}; fix or remove it, or pass --on-bad-image skip")
        keep = np.ones(len(manifest), dtype=bool)
        keep[list(cache.bad)] = False
        manifest = manifest.subset(keep)
        images = cache.images.subset(keep)  # rows are read from the cache file as batches need them
        reporter.log(f"skipped {len(skipped)} missing or unreadable image(s); they are listed in summary.json")
    if len(np.unique(manifest.labels)) < 2:
        raise UserError(
            f"{manifest.source or manifest.root}: fewer than two classes left after skipping unreadable images"
        )
    return LoadedImages(manifest, images, skipped, f"{cache.path.stem}:{labels_digest(manifest)}")


def labels_digest(manifest: Manifest) -> str:
    """Returns a short digest of the class names, labels and candidate sets of `manifest`."""
    digest = hashlib.sha256("|".join(manifest.class_names).encode())
    digest.update(np.ascontiguousarray(manifest.labels).tobytes())
    if manifest.candidates is not None:
        digest.update(np.packbits(manifest.candidates).tobytes())
    return digest.hexdigest()[:16]
