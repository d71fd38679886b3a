"""Image batches by sample index, served on the training device.

:class:`ImageStore` serves batches from an :class:`~lnlclean.data.imagefile.ImageArray` (the
image cache, read with ``pread``) or an in-memory ``np.ndarray``, on the CPU or on a CUDA device.
"""

from __future__ import annotations

import numpy as np
import torch

from .imagefile import ImageArray

RESIDENT_CHUNK_BYTES = 256 * 2**20  # rows copied to the GPU at a time when the whole array fits there


class ImageStore:
    """Serves uint8 image batches by sample index on the training device.

    `images` is an :class:`ImageArray` (read with ``pread``) or an in-memory ``np.ndarray``.
    On CUDA the whole array is copied to GPU memory, chunk by chunk, when it takes under a
    quarter of the free memory; otherwise (and on CPU) each batch is read when it is asked for.
    """

    def __init__(self, images: np.ndarray | ImageArray, device: torch.device):
        self.images = images
        self.device = device
        self.resident = None
        if device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            if images.nbytes < free // 4:
                self.resident = copy_in_chunks(images, device)

    def __len__(self) -> int:
        return len(self.images)

    def gather(self, index: torch.Tensor) -> torch.Tensor:
        """Returns uint8 images B×H×W×C for sorted sample indices `index`, on the device."""
        if self.resident is not None:
            return self.resident[index.to(self.device)]
        batch = torch.from_numpy(np.ascontiguousarray(self.images[index.numpy()]))
        if self.device.type == "cuda":
            return batch.pin_memory().to(self.device, non_blocking=True)
        return batch


def copy_in_chunks(
    images: np.ndarray | ImageArray, device: torch.device, chunk_bytes: int = RESIDENT_CHUNK_BYTES
) -> torch.Tensor:
    """Returns `images` as a uint8 tensor on `device`, copied about `chunk_bytes` of rows at a time.

    The host never holds more than one chunk beyond what `images` itself holds.
    """
    resident = torch.empty(tuple(images.shape), dtype=torch.uint8, device=device)
    row_bytes = max(1, images.nbytes // max(1, len(images)))
    step = max(1, chunk_bytes // row_bytes)
    for start in range(0, len(images), step):
        chunk = np.ascontiguousarray(images[start : start + step], dtype=np.uint8)
        resident[start : start + len(chunk)].copy_(torch.from_numpy(chunk))
    return resident
