"""Batched augmentation on the training device, in plain tensor code.

Images arrive as uint8 ``B×H×W×C`` straight from the image cache. :class:`Augmenter` turns
them into normalised float ``B×C×H×W`` tensors (channels_last), in three views:

- ``clean``: no augmentation (inference).
- ``weak``: random translation by up to H/8 pixels with reflect padding, plus a horizontal
  flip when the data allows it (off for digits, where a mirrored digit is another glyph).
- ``strong``: the weak view plus per-image brightness, contrast and saturation jitter and a
  cutout square of half the image side.

All randomness comes from the `generator` passed in, so a run is reproducible per epoch.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


class Augmenter:
    """Normalisation statistics and view functions for one dataset."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, flip: bool = True):
        self.mean = mean.view(1, -1, 1, 1)
        self.std = std.view(1, -1, 1, 1)
        self.flip = flip

    @classmethod
    def fit(
        cls,
        images: np.ndarray,
        device: torch.device,
        flip: bool = True,
        max_rows: int = 4096,
        stats: tuple[tuple[float, ...], tuple[float, ...]] | None = None,
    ) -> Augmenter:
        """Returns an Augmenter with per-channel mean/std measured on up to `max_rows` evenly spaced images.

        With `stats` (mean, std per channel: what a pretrained network's weights expect) those are used instead.
        """
        if stats is not None:
            mean, std = (torch.tensor(values, dtype=torch.float32, device=device) for values in stats)
            return cls(mean, std, flip)
        rows = np.linspace(0, len(images) - 1, num=min(len(images), max_rows)).astype(np.int64)
        sample = torch.from_numpy(np.asarray(images[rows], dtype=np.float32) / 255.0)
        mean = sample.mean(dim=(0, 1, 2))
        std = sample.std(dim=(0, 1, 2)).clamp_min(1e-3)
        return cls(mean.to(device), std.to(device), flip)

    def to_unit(self, raw: torch.Tensor) -> torch.Tensor:
        """Returns uint8 B×H×W×C as float B×C×H×W in [0, 1], channels_last."""
        return raw.permute(0, 3, 1, 2).float().div_(255.0).contiguous(memory_format=torch.channels_last)

    def normalize(self, unit: torch.Tensor) -> torch.Tensor:
        """Returns [0, 1] images standardised by the dataset's channel mean and std."""
        return ((unit - self.mean) / self.std).contiguous(memory_format=torch.channels_last)

    def clean(self, raw: torch.Tensor) -> torch.Tensor:
        """Returns the un-augmented, normalised view of uint8 images `raw`."""
        return self.normalize(self.to_unit(raw))

    def weak(self, raw: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Returns the weakly augmented view: random translation and (optionally) flip."""
        return self.normalize(self._translate_flip(self.to_unit(raw), generator))

    def strong(self, raw: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Returns the strongly augmented view: weak + colour jitter + cutout."""
        unit = self._translate_flip(self.to_unit(raw), generator)
        unit = color_jitter(unit, generator)
        unit = cutout(unit, generator, fill=self.mean)
        return self.normalize(unit)

    def _translate_flip(self, unit: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        pad = max(1, unit.shape[-1] // 8)
        unit = random_translate(unit, pad, generator)
        if self.flip:
            unit = random_flip(unit, generator)
        return unit


def _uniform(n: int, low: float, high: float, like: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return torch.rand(n, device=like.device, generator=generator) * (high - low) + low


def random_translate(unit: torch.Tensor, pad: int, generator: torch.Generator) -> torch.Tensor:
    """Returns each image shifted by its own random offset in [-pad, pad]², reflect-padded."""
    batch, _, height, width = unit.shape
    padded = F.pad(unit, (pad, pad, pad, pad), mode="reflect")
    dy = torch.randint(0, 2 * pad + 1, (batch,), device=unit.device, generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (batch,), device=unit.device, generator=generator)
    rows = (dy[:, None] + torch.arange(height, device=unit.device))[:, :, None]
    cols = (dx[:, None] + torch.arange(width, device=unit.device))[:, None, :]
    picked = padded[torch.arange(batch, device=unit.device)[:, None, None], :, rows, cols]  # B×H×W×C
    return picked.permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)


def random_flip(unit: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Returns the batch with a random half of the images mirrored left-right."""
    flip = torch.rand(unit.shape[0], device=unit.device, generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], unit.flip(3), unit)


def color_jitter(unit: torch.Tensor, generator: torch.Generator, strength: float = 0.4) -> torch.Tensor:
    """Returns images with random brightness, contrast and (for RGB) saturation factors in 1 ± strength."""
    batch = unit.shape[0]
    brightness = _uniform(batch, 1 - strength, 1 + strength, unit, generator).view(-1, 1, 1, 1)
    contrast = _uniform(batch, 1 - strength, 1 + strength, unit, generator).view(-1, 1, 1, 1)
    unit = unit * brightness
    mean = unit.mean(dim=(1, 2, 3), keepdim=True)
    unit = (unit - mean) * contrast + mean
    if unit.shape[1] == 3:
        saturation = _uniform(batch, 1 - strength, 1 + strength, unit, generator).view(-1, 1, 1, 1)
        gray = unit.mean(dim=1, keepdim=True)
        unit = (unit - gray) * saturation + gray
    return unit.clamp_(0.0, 1.0)


def cutout(unit: torch.Tensor, generator: torch.Generator, fill: torch.Tensor) -> torch.Tensor:
    """Returns images with one square of half the image side (clipped at the border) set to `fill`."""
    batch, _, height, width = unit.shape
    side = max(1, height // 2)
    cy = torch.randint(0, height, (batch,), device=unit.device, generator=generator)
    cx = torch.randint(0, width, (batch,), device=unit.device, generator=generator)
    ys = torch.arange(height, device=unit.device)
    xs = torch.arange(width, device=unit.device)
    top, left = cy - side // 2, cx - side // 2
    in_rows = ((ys[None, :] - top[:, None]) >= 0) & ((ys[None, :] - top[:, None]) < side)
    in_cols = ((xs[None, :] - left[:, None]) >= 0) & ((xs[None, :] - left[:, None]) < side)
    mask = (in_rows[:, :, None] & in_cols[:, None, :])[:, None]
    return torch.where(mask, fill.to(unit.dtype), unit)
