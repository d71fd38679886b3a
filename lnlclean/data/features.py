"""Embedding batches by sample index, and their views: the data path of ``--features frozen``.

Each sample is V embeddings (the image and, where flips keep the label, its mirror; see
:mod:`lnlclean.embeddings`). :class:`FeatureAugmenter` makes the methods' three views in
feature space, standardised by the dataset's per-dimension mean and std:

- ``clean``: the mean of the sample's V embeddings (what predictions are made on).
- ``weak``: one of the V embeddings at random, plus Gaussian noise of 0.1 std.
- ``strong``: the weak view with a further 0.2 std of noise and 20 % of its dimensions
  dropped (the rest rescaled), so two strong views of a sample differ as two crops would.
"""

from __future__ import annotations

import numpy as np
import torch

WEAK_NOISE = 0.1
STRONG_NOISE = 0.2
STRONG_DROP = 0.2


class FeatureStore:
    """Serves float32 embedding batches B×V×D by sample index, on the training device."""

    def __init__(self, features: np.ndarray, device: torch.device):
        self.features = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32)).to(device)
        self.device = device

    def __len__(self) -> int:
        return len(self.features)

    def gather(self, index: torch.Tensor) -> torch.Tensor:
        """Returns the embeddings of samples `index` (B×V×D) on the device."""
        return self.features[index.to(self.device)]


class FeatureAugmenter:
    """Standardisation statistics and view functions for embeddings.

    It has the interface of :class:`~lnlclean.data.augment.Augmenter`.
    """

    def __init__(self, mean: torch.Tensor, std: torch.Tensor):
        self.mean = mean
        self.std = std

    @classmethod
    def fit(cls, features: torch.Tensor) -> FeatureAugmenter:
        """Returns a FeatureAugmenter with the per-dimension mean and std of the embeddings `features`
        (N×V×D float32, on the training device, as :class:`FeatureStore` holds them), on their device."""
        flat = features.reshape(-1, features.shape[-1])
        return cls(flat.mean(dim=0), flat.std(dim=0).clamp_min(1e-4))

    def clean(self, raw: torch.Tensor) -> torch.Tensor:
        """Returns the standardised mean of each sample's V embeddings (B×D).

        A head is linear after its batch norm, so predicting on the mean predicts the mean of the
        views' logits: the image and its mirror vote together.
        """
        return (raw.mean(dim=1) - self.mean) / self.std

    def weak(self, raw: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Returns one of each sample's V embeddings at random, standardised, with Gaussian noise."""
        pick = torch.randint(raw.shape[1], (len(raw),), device=raw.device, generator=generator)
        chosen = (raw[torch.arange(len(raw), device=raw.device), pick] - self.mean) / self.std
        return chosen + WEAK_NOISE * torch.randn(chosen.shape, device=raw.device, generator=generator)

    def strong(self, raw: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Returns the weak view with more noise and a random 20 % of its dimensions dropped."""
        view = self.weak(raw, generator)
        view = view + STRONG_NOISE * torch.randn(view.shape, device=raw.device, generator=generator)
        keep = torch.rand(view.shape, device=raw.device, generator=generator) >= STRONG_DROP
        return view * keep / (1 - STRONG_DROP)
