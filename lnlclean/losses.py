"""Loss functions shared by several methods.

- :func:`soft_cross_entropy` takes logits and returns the batch mean;
- :func:`soft_cross_entropy_per_sample` takes log-probabilities a method already has (and may
  reuse for another term) and returns one value per sample.
"""

from __future__ import annotations

import torch


def soft_cross_entropy_per_sample(log_probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Returns −Σ_k targets_k · log_probs_k of each row (B): the cross-entropy of
    `targets` (B×K probabilities) against log-probabilities `log_probs` (B×K).
    """
    return -(targets * log_probs).sum(dim=1)


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Returns the mean cross-entropy of `targets` (B×K probabilities) against softmax(logits); 0 for no rows."""
    if len(logits) == 0:
        return logits.sum()
    return soft_cross_entropy_per_sample(logits.log_softmax(dim=1), targets).mean()
