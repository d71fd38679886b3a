"""Frozen features: every image embedded once by a pretrained network, cached on disk.

With ``--features frozen`` the methods train small heads on these embeddings instead of whole
networks on pixels (see :mod:`lnlclean.data.features`). Each image is embedded as it is and,
when flips keep the label, mirrored too: the two views the heads' augmentations draw from.

The cache file is keyed by a digest of the image bytes, the network, its weights and the input
size, so a second method on the same folder reuses it, and any change makes a new one.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import efficientnet_lite
from .distributed import current as current_world
from .errors import UserError
from .fileio import atomic_path
from .progress import Reporter

EMBEDDING_BACKBONES = ("efficientnet-lite0",)  # backbones with ImageNet weights that ship with the package
EMBED_BATCH = 64
DIGEST_CHUNK_ROWS = 4096


def check_embedding_backbone(backbone: str) -> None:
    """Raises UserError when `backbone` has no pretrained weights to embed with. Returns None."""
    if backbone not in EMBEDDING_BACKBONES:
        raise UserError(
            f"--features frozen: --backbone {backbone} has no pretrained weights to embed images with; "
            f"use --backbone {' or '.join(EMBEDDING_BACKBONES)}"
        )


def images_digest(images) -> str:
    """Returns a short digest of the pixels and shape of `images` (N×H×W×C uint8, read in chunks)."""
    digest = hashlib.sha256(str(tuple(images.shape)).encode())
    for start in range(0, len(images), DIGEST_CHUNK_ROWS):
        digest.update(np.ascontiguousarray(images[start : start + DIGEST_CHUNK_ROWS]).tobytes())
    return digest.hexdigest()[:16]


def weights_digest(path: Path) -> str:
    """Returns a short digest of the weights file at `path`."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]


def embed(images, size: int, flip: bool, device: torch.device, reporter: Reporter, what: str = "images") -> np.ndarray:
    """Returns the EfficientNet-Lite0 embeddings of `images` (N×H×W×3 uint8) as float32 N×V×1,904.

    Each embedding is the pooled outputs of the network's last three stages and of its 1,280-d
    head (:meth:`~lnlclean.efficientnet_lite.EfficientNetLite0.embedding`). Images are resized
    to `size` px (bilinear) and preprocessed as the weights were trained;
    V is 2 with `flip` (the image and its mirror), else 1. Raises UserError for images
    without three channels.
    """
    if images.shape[-1] != 3:
        raise UserError(
            f"--features frozen: the pretrained network needs RGB images; these have {images.shape[-1]} channels"
        )
    net = efficientnet_lite.pretrained_lite0().to(device).eval()
    mean = torch.tensor(efficientnet_lite.INPUT_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(efficientnet_lite.INPUT_STD, device=device).view(1, 3, 1, 1)
    views = 2 if flip else 1
    out = np.empty((len(images), views, efficientnet_lite.EMBEDDING_CHANNELS), dtype=np.float32)
    with reporter.task(
        f"embedding {len(images)} {what} with efficientnet-lite0 at {size} px", total=len(images)
    ) as advance:
        for start in range(0, len(images), EMBED_BATCH):
            raw = torch.from_numpy(np.ascontiguousarray(images[start : start + EMBED_BATCH])).to(device)
            unit = raw.permute(0, 3, 1, 2).float().div_(255.0)
            if unit.shape[-1] != size or unit.shape[-2] != size:
                unit = F.interpolate(unit, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
            batch = (unit - mean) / std
            with torch.inference_mode():
                out[start : start + len(raw), 0] = net.embedding(batch).float().cpu().numpy()
                if flip:
                    out[start : start + len(raw), 1] = net.embedding(batch.flip(-1)).float().cpu().numpy()
            advance(len(raw))
    return out


def cached_embeddings(
    images, size: int, flip: bool, cache_dir: Path, device: torch.device, reporter: Reporter, what: str = "images"
) -> np.ndarray:
    """Returns the embeddings of `images` (see :func:`embed`), from the cache in `cache_dir` when they are there.

    The process with rank 0 embeds and writes the cache (atomically); the others read it.
    """
    key = f"{images_digest(images)}-lite0-stages-{weights_digest(efficientnet_lite.imagenet_weights_path())}-{size}px"
    path = Path(cache_dir) / f"embeddings-{key}-{2 if flip else 1}v.npy"
    with current_world().main_first():
        if path.is_file():
            reporter.log(f"embeddings reused: {path}")
        else:
            vectors = embed(images, size, flip, device, reporter, what)
            if current_world().is_main:
                path.parent.mkdir(parents=True, exist_ok=True)
                with atomic_path(path) as tmp, open(tmp, "wb") as handle:
                    np.save(handle, vectors)
                reporter.log(f"embeddings written: {path}")
    return np.load(path)
