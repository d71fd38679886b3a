"""Cross-entropy baseline: train on the given labels, then trust the network's probabilities.

Clean probability is the final network's probability of the given label; the suggested
label is its argmax. This is the "predicted ≠ given" audit every benchmark compares with.
Its history logs how the predictions settle (:mod:`lnlclean.methods.phase`), the signal that
ends the robust methods' warm-ups.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F

from .base import Method, register_method
from .phase import EarlyLearning


@dataclass
class CEHparams:
    """Plain cross-entropy has no hyperparameters of its own."""


@register_method
class CrossEntropy(Method):
    name = "ce"
    description = "plain cross-entropy on the given labels; flags samples whose label the network doubts"
    Hparams = CEHparams

    def __init__(self, hparams, setup):
        super().__init__(hparams, setup)
        self.phase = EarlyLearning(setup, self.state, minimum=None)

    def training_step(self, batch, epoch):
        logits = self.networks[0](batch.weak)
        self.phase.record(batch.index, logits, batch.label)
        return F.cross_entropy(logits, batch.label)

    def end_epoch(self, epoch, evaluate):
        return self.phase.end_epoch(epoch)
