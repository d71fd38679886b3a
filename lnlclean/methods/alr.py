"""ALR: adaptive label refinement (soft targets from the model's own predictions + entropy loss).

One network. Every sample keeps a soft target t (K probabilities), one-hot of the given label
at the start.

- Warm-up: plain cross-entropy on the given labels until the network has left early learning
  (:mod:`lnlclean.methods.phase`: its predictions stop settling), so refinement starts from
  predictions worth more than the labels.
- Refinement, every later epoch: when a sample is in the mini-batch its target moves towards
  the network's current (detached) prediction p on the weak view,

      t ← α · t + (1 − α) · p,

  and the loss is CE(t, p) + λ · H(p). The soft target keeps the network from memorising a
  wrong label; the entropy term hardens the predictions it is sure of, so clean samples are
  still learned fully. With ``--alr-lambda 0`` the method is plain label refurbishment (the
  paper's "w/o EL" ablation); with ``--alr-alpha 1`` the targets stay the given labels.

The paper warms up for 30 of 200 epochs, before its first learning-rate drop. Here that share of
the budget, 15 % of the epochs (at least 1), is the shortest warm-up, and the warm-up lasts
until the predictions settle: started at the paper's share on 5,000 CIFAR-10 photos, refinement
began at epoch 3 of 20 with a network 38 % accurate and lowered F1 from ``ce``'s 0.522 to 0.465
(idn40, ``docs/diagnostics.md``).

Audit: ``clean_prob`` is t[given] — how much of the given label survived refinement;
``suggested_label`` is argmax t, the refined label.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ..losses import soft_cross_entropy_per_sample
from .base import Method, register_method, target_accuracy
from .phase import EarlyLearning, auto_warmup, check_warmup


@dataclass
class ALRHparams:
    """ALR hyperparameters (the paper's defaults), each described by its metadata ``help``; None means "auto"."""

    alpha: float = field(
        default=0.9,
        metadata={
            "help": "momentum α of the soft targets, in [0, 1]; 1 keeps the given labels.",
            "min": 0.0,
            "max": 1.0,
        },
    )
    lambda_: float = field(
        default=0.2,
        metadata={
            "help": "weight λ of the entropy loss (`--alr-lambda`), at least 0; 0 is plain label refurbishment.",
            "min": 0.0,
        },
    )
    warmup: int | None = field(
        default=None,
        metadata={
            "help": "epochs of cross-entropy on the given labels before refinement, below the epochs; auto: until the "
            "predictions settle, at least 15 % of the epochs (the paper's 30 of 200); with --features frozen "
            "exactly that.",
            "min": 0,
        },
    )


def warmup_epochs(hparams: ALRHparams, epochs: int) -> int:
    """Returns the number of warm-up epochs of an `epochs`-epoch run (`hparams.warmup`, or auto).

    Raises UserError when the warm-up would leave no epoch of refinement.
    """
    warmup = auto_warmup(hparams.warmup, 0.15, epochs)
    check_warmup("alr", hparams.warmup, warmup, epochs, otherwise="no label is refined")
    return warmup


def refine_targets(targets: torch.Tensor, probs: torch.Tensor, alpha: float) -> torch.Tensor:
    """Returns α · targets + (1 − α) · probs (both B×K); `probs` should be detached."""
    return alpha * targets + (1 - alpha) * probs


def entropy(probs: torch.Tensor, log_probs: torch.Tensor | None = None) -> torch.Tensor:
    """Returns the entropy −Σ_k p_k log p_k of each row of `probs` (B×K → B), in nats.

    Pass `log_probs` when they are at hand (more accurate than log of small probabilities).
    """
    if log_probs is None:
        log_probs = probs.clamp_min(1e-12).log()
    return -(probs * log_probs).sum(dim=1)


def alr_loss(logits: torch.Tensor, targets: torch.Tensor, lambda_: float) -> torch.Tensor:
    """Returns the ALR loss of each sample (B): CE(targets, softmax(logits)) + λ · H(softmax(logits))."""
    log_probs = logits.log_softmax(dim=1)
    cross_entropy = soft_cross_entropy_per_sample(log_probs, targets)
    return cross_entropy + lambda_ * entropy(log_probs.exp(), log_probs)


@register_method
class ALR(Method):
    name = "alr"
    description = "soft targets refined from the network's own predictions plus an entropy loss (ALR)"
    columns = {
        "alr_target_entropy": "entropy H(t) of the sample's soft target, in nats (0 = one-hot)",
        "alr_target_max": "largest probability in the soft target (that of suggested_label)",
    }
    progress_figures = {"mean_target_entropy": "target entropy"}
    Hparams = ALRHparams

    def __init__(self, hparams, setup):
        super().__init__(hparams, setup)
        self.phase = EarlyLearning(
            setup, self.state, minimum=warmup_epochs(hparams, setup.epochs), fixed=hparams.warmup
        )
        self.targets = self.state.add_table("targets", setup.n_samples, setup.n_classes)
        self.targets.fill(lambda rows: F.one_hot(setup.given_labels[rows], setup.n_classes).float())

    @classmethod
    def check_settings(cls, hparams, config):
        warmup_epochs(hparams, config.epochs)

    def training_step(self, batch, epoch):
        logits = self.networks[0](batch.weak).float()
        self.phase.record(batch.index, logits, batch.label)
        if not self.phase.robust(epoch):
            return F.cross_entropy(logits, batch.label)
        probs = logits.detach().softmax(dim=1)
        refined = refine_targets(self.targets[batch.index], probs, self.hparams.alpha)
        self.targets[batch.index] = refined
        return alr_loss(logits, refined, self.hparams.lambda_).mean()

    def end_epoch(self, epoch, evaluate):
        return {
            **self.phase.end_epoch(epoch),
            "mean_target_entropy": float(self.targets.map(lambda targets, rows: entropy(targets)).mean()),
            **target_accuracy(self.targets, self.setup.true_labels),
        }

    def audit(self, probs):
        given = self.setup.given_labels

        def per_sample(targets, rows):
            top, suggested = targets.max(dim=1)
            return torch.stack(
                [targets.gather(1, given[rows, None]).squeeze(1), top, suggested.float(), entropy(targets)], dim=1
            )

        given_prob, top, suggested, target_entropy = self.targets.map(per_sample).numpy().T
        return {
            "clean_prob": given_prob,
            "suggested_label": suggested.astype(np.int64),
            "suggested_prob": top,
            "alr_target_entropy": target_entropy,
            "alr_target_max": top,
        }

    def summary(self):
        return {
            "warmup": self.phase.warmup_epochs(),
            "alpha": self.hparams.alpha,
            "lambda": self.hparams.lambda_,
            "mean_target_entropy_per_epoch": [h["mean_target_entropy"] for h in self.history],
        }

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.phase.restore(self.history)
