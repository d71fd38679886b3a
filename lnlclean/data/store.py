"""Image batches by sample index, served on the training device."""

from __future__ import annotations

import numpy as np
import torch


class ImageStore:
    """Serves uint8 image batches by sample index on the training device.

    On CUDA the whole array is moved to GPU memory when it takes under a quarter of the free
    memory; otherwise (and on CPU) batches are gathered from the (memory-mapped) array.
    """

    def __init__(self, images: np.ndarray, device: torch.device):
        self.images = images
        self.device = device
        self.resident = None
        if device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            if images.nbytes < free // 4:
                self.resident = torch.from_numpy(np.ascontiguousarray(images)).to(device)

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
