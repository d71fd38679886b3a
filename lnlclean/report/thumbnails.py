"""Small inline images for the report's gallery.

A thumbnail keeps the image's aspect ratio within a square box and is stored as a ``data:``
URI, PNG or JPEG, whichever is smaller: PNG wins for tiny or flat images (digits, icons),
JPEG for photographs.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image

from ..data.decode import ImageError, open_rgb

THUMBNAIL_SIDE = 64
JPEG_QUALITY = 80


class ImageSource(Protocol):
    """Where the report finds the image of sample `index` (its row in the audit)."""

    def open(self, index: int) -> Image.Image:
        """Returns the RGB image of sample `index`. Raises ImageError when it cannot be read."""


class FolderImages:
    """Images as files: sample i is ``root / paths[i]`` (an audited folder)."""

    def __init__(self, root: Path, paths: list[str]):
        self.root, self.paths = Path(root), paths

    def open(self, index: int) -> Image.Image:
        """Returns the decoded image of sample `index`. Raises ImageError when it is missing or unreadable."""
        return open_rgb(self.root / self.paths[index], at_least=THUMBNAIL_SIDE)


class ArrayImages:
    """Images as rows of a uint8 N×H×W×C array (benchmark datasets)."""

    def __init__(self, images: np.ndarray):
        self.images = images

    def open(self, index: int) -> Image.Image:
        """Returns row `index` of the array as an RGB image."""
        row = np.asarray(self.images[index])
        return Image.fromarray(row[..., 0] if row.shape[-1] == 1 else row).convert("RGB")


def thumbnail_uri(image: Image.Image, side: int = THUMBNAIL_SIDE) -> str:
    """Returns `image` shrunk to fit a `side`×`side` box as a
    ``data:image/…;base64,`` URI (PNG or JPEG, the smaller).
    """
    image = image.copy()
    image.thumbnail((side, side), Image.LANCZOS)
    encoded = {kind: _encode(image, kind) for kind in ("png", "jpeg")}
    kind = min(encoded, key=lambda k: len(encoded[k]))
    return f"data:image/{kind};base64,{base64.b64encode(encoded[kind]).decode()}"


def _encode(image: Image.Image, kind: str) -> bytes:
    buffer = io.BytesIO()
    if kind == "jpeg":
        image.save(buffer, format="JPEG", quality=JPEG_QUALITY, optimize=True)
    else:
        image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def try_thumbnail(source: ImageSource, index: int) -> tuple[str | None, tuple[int, int] | None, str | None]:
    """Returns (data URI, original (width, height), None) for sample
    `index`, or (None, None, reason) when its image cannot be read.
    """
    try:
        image = source.open(index)
    except ImageError as problem:
        return None, None, str(problem)
    return thumbnail_uri(image), image.size, None
