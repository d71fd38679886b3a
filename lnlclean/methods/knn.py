"""kNN: each given label against the labels of its nearest neighbours in a pretrained embedding (SimiFeat).

Zhu, Dong & Liu, "Detecting Corrupted Labels Without Training a Model to Predict" (ICML 2022):
with features from a pretrained network, a sample whose neighbours mostly carry another label
probably has a wrong one. Nothing is trained, so the verdict cannot memorise the wrong labels,
and a run costs the embedding (cached) plus one k-NN search.

- The neighbours are the k training samples with the highest cosine similarity of their
  standardised embeddings (the sample itself left out), searched in chunks on the training device.
- Each sample's class probabilities are its neighbours' label shares, smoothed by
  ``(votes + 1/K) / (k + 1)`` so that no class is impossible; the given label's share is the
  method's signal, and the audit calibrates ``clean_prob`` from these probabilities like any
  other method's (:mod:`lnlclean.report.verdicts`).
- Departures from the paper: the query is each image's own embedding (not its mirror, see
  :mod:`lnlclean.embeddings`); SimiFeat's repeated votes over random feature views become this
  one vote, and its rank rule (flag the lowest scores, as many as the estimated noise rate) the
  audit's calibration.

Needs ``--features frozen``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import UserError
from .base import Method, register_method

QUERY_CHUNK = 1024  # queries compared with every sample at a time (a chunk × N similarity matrix)


@dataclass
class KNNHparams:
    """kNN hyperparameters."""

    k: int = field(
        default=10,
        metadata={"min": 1, "max": 200, "help": "how many nearest neighbours vote on each label (SimiFeat's k = 10)."},
    )


def neighbour_votes(
    queries: torch.Tensor, keys: torch.Tensor, key_labels: torch.Tensor, n_classes: int, k: int, exclude_self: bool
) -> torch.Tensor:
    """Returns, for each query (B×D), the label counts (B×K) of its `k` most cosine-similar `keys` (N×D).

    With `exclude_self` query i is key i and is not its own neighbour.
    """
    keys = F.normalize(keys.float(), dim=1)
    votes = torch.zeros(len(queries), n_classes, device=keys.device)
    for start in range(0, len(queries), QUERY_CHUNK):
        chunk = F.normalize(queries[start : start + QUERY_CHUNK].float().to(keys.device), dim=1)
        similarity = chunk @ keys.T
        if exclude_self:
            rows = torch.arange(len(chunk), device=keys.device)
            similarity[rows, rows + start] = float("-inf")
        nearest = similarity.topk(min(k, len(keys) - int(exclude_self)), dim=1).indices
        votes[start : start + len(chunk)] = F.one_hot(key_labels[nearest], n_classes).sum(dim=1).float()
    return votes


@register_method
class KNN(Method):
    name = "knn"
    description = (
        "training-free: each label against its k nearest neighbours' labels in the pretrained embedding "
        "(SimiFeat); needs --features frozen"
    )
    num_networks = 0
    needs_embeddings = True
    columns = {"knn_agreement": "share of the k nearest neighbours whose label is the given one"}
    Hparams = KNNHparams

    @classmethod
    def check_settings(cls, hparams, config) -> None:
        """Raises UserError unless the run uses frozen features. Returns None."""
        if config.features != "frozen":
            raise UserError("--method knn: compares samples in a pretrained embedding; add --features frozen")

    def __init__(self, hparams, setup):
        super().__init__(hparams, setup)
        if setup.features is None:
            raise UserError("--method knn: compares samples in a pretrained embedding; add --features frozen")
        self.keys = setup.features
        self.votes = neighbour_votes(
            self.keys, self.keys, setup.given_labels, setup.n_classes, hparams.k, exclude_self=True
        )

    def smoothed(self, votes: torch.Tensor) -> torch.Tensor:
        """Returns vote counts B×K as probabilities: (votes + 1/K) / (k + 1)."""
        return (votes + 1.0 / self.setup.n_classes) / (votes.sum(dim=1, keepdim=True) + 1.0)

    def predict(self, x: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        """Returns the smoothed neighbour votes of training samples `index`, or of the embeddings `x` (test images)."""
        if index is not None:
            return self.smoothed(self.votes[index])
        votes = neighbour_votes(x, self.keys, self.setup.given_labels, self.setup.n_classes, self.hparams.k, False)
        return self.smoothed(votes)

    def audit(self, probs: np.ndarray) -> dict[str, np.ndarray]:
        columns = super().audit(probs)
        votes = self.votes.cpu().numpy()
        given = self.setup.given_labels.cpu().numpy()
        columns["knn_agreement"] = votes[np.arange(len(given)), given] / np.maximum(votes.sum(axis=1), 1)
        return columns
