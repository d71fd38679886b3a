"""PMNAR: positive and multi-negative learning with adaptive reweighting (two networks).

Two networks f and f′ are trained side by side on the same mini-batches. For each sample
(x, y), network f minimises

    w(x) · ℓ_PM(f(x), y, ȳ(x)) + β · KL((f(x) + f′(x)) / 2 ‖ f(Aug(x)))

and f′ the same with the roles swapped, where

- ℓ_PM = −log f_y(x) − Σ_{c ∈ ȳ(x)} log(1 − f_c(x)) pushes the given label up and every label
  in the complement ȳ(x) down;
- ȳ(x) starts as all labels except y and loses, once the warm-up is over, every label that
  either network ever predicted (argmax) for x: a label a network once believed is a plausible
  true label and must not be pushed down. One complement per sample is shared by both
  networks, as in the paper's Algorithm 1 (a single set S);
- w(x) = f′_y(x) − min_x f′_y(x) (and w′ from f symmetrically): each network is weighted by its
  peer's confidence in the given label, so samples the peer finds least plausible get weight
  0. The weights are 1 during the warm-up, which lasts until the networks' predictions settle
  (:mod:`lnlclean.methods.phase`), and at least a tenth of the epochs. Weighting after a fixed
  tenth on 5,000 CIFAR-10 photos separated right from wrong labels (mean weight 0.38 against
  0.08) but cut every gradient to about a third while the networks were weak: test accuracy
  0.42 against ``ce``'s 0.57 (sym40, ``docs/diagnostics.md``);
- Aug is the strong augmentation and x the weak view; the ensemble target is detached.

Cost: each network trains on the weak and the strong view, four forward and backward passes
for every one of ``ce``. ``--pmnar-consistency alternate`` gives the consistency term to one
network per step, drawn at random, with weight 2β so that each network's expected
regularisation is unchanged: three passes instead of four (measured in
``docs/diagnostics.md``). The default keeps the paper's every-step term.

Confidences for the weights come from the training forwards of the epoch (the weak view, each
sample seen once per epoch) and take effect in the next epoch. The paper reads them once per
epoch; reusing the forwards already computed gives the same once-per-epoch lag without an extra
pass over the data, and the minimum over augmented views is, if anything, slightly lower, which
only makes the reweighting milder. Historical argmaxes are taken from the same forwards.

Audit: ``clean_prob`` is the two-network ensemble's probability of the given label (the paper
flags a sample below 0.5); ``suggested_label`` is the ensemble's argmax.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .base import Method, register_method
from .phase import EarlyLearning, auto_warmup, check_warmup


@dataclass
class PMNARHparams:
    """PMNAR hyperparameters, each described by its metadata
    ``help``; None means "auto" (chosen from the run, see `resolve`).
    """

    warmup: int | None = field(
        default=None,
        metadata={
            "help": "epochs trained with weight 1 before reweighting starts, below the epochs; auto: until the "
            "predictions of network f settle, at least a tenth of the epochs; with --features frozen exactly that.",
            "min": 0,
        },
    )
    beta: float | None = field(
        default=None,
        metadata={
            "help": "weight β of the consistency term, at least 0; auto: 1 for up to 10 classes, 10/K beyond "
            "(the paper finds smaller β better with more classes).",
            "min": 0.0,
        },
    )
    consistency: str = field(
        default="both",
        metadata={
            "help": "`both` (the paper: both networks take the consistency term at every step) or `alternate` (one "
            "network per step, drawn at random, with weight 2β: three passes over the batch instead of four).",
            "choices": ("both", "alternate"),
        },
    )


def pm_loss(probs: torch.Tensor, labels: torch.Tensor, complement: torch.Tensor) -> torch.Tensor:
    """Returns the positive and multi-negative loss of each sample (B).

    Args:
        probs: class probabilities B×K.
        labels: given labels (B).
        complement: B×K boolean mask of the labels to push down (never the given label).
    """
    positive = -torch.log(probs.gather(1, labels[:, None]).squeeze(1).clamp_min(1e-7))
    negative = -(torch.log((1 - probs).clamp_min(1e-7)) * complement).sum(dim=1)
    return positive + negative


def adaptive_weights(confidence: torch.Tensor) -> torch.Tensor:
    """Returns w = confidence − min(confidence): 0 at the least-confident sample, ≥ 0 everywhere."""
    return confidence - confidence.min()


def consistency(target: torch.Tensor, log_probs_aug: torch.Tensor) -> torch.Tensor:
    """Returns KL(target ‖ exp(log_probs_aug)) of each sample (B); `target` is treated as fixed."""
    return F.kl_div(log_probs_aug, target, reduction="none").sum(dim=1)


@register_method
class PMNAR(Method):
    name = "pmnar"
    description = "two networks weighted by each other's confidence, positive + multi-negative loss (PMNAR)"
    columns = {
        "pmnar_weight": "weight w of the sample in network f's loss (peer f′ confidence − its minimum)",
        "pmnar_weight_peer": "weight w′ of the sample in network f′'s loss",
        "pmnar_complement_size": "labels left in the sample's complement set (pushed down by the loss)",
    }
    num_networks = 2
    progress_figures = {"mean_weight": "mean weight"}
    Hparams = PMNARHparams

    def __init__(self, hparams, setup):
        super().__init__(hparams, setup)
        minimum, self.beta = self.resolve(hparams, setup)
        self.phase = EarlyLearning(setup, self.state, minimum=minimum, fixed=hparams.warmup)
        n, k = setup.n_samples, setup.n_classes
        given = setup.given_labels
        complement = torch.ones(n, k, dtype=torch.bool, device=setup.device)
        complement[torch.arange(n, device=setup.device), given] = False
        self.complement = self.state.add("complement", complement)
        # Chance level until a sample is first seen (an epoch may leave out one sample, see steps_in_epoch).
        self.confidence = self.state.add("confidence", torch.full((n, 2), 1 / k, device=setup.device))
        self.weight = self.state.add("weight", torch.ones(n, 2, device=setup.device))

    @classmethod
    def check_settings(cls, hparams, config):
        warmup = auto_warmup(hparams.warmup, 0.1, config.epochs)
        check_warmup("pmnar", hparams.warmup, warmup, config.epochs, otherwise="the PMNAR weights are never used")

    @staticmethod
    def resolve(hparams: PMNARHparams, setup) -> tuple[int, float]:
        """Returns (warmup epochs, β) with "auto" values filled in from the run."""
        warmup = auto_warmup(hparams.warmup, 0.1, setup.epochs)
        beta = hparams.beta if hparams.beta is not None else min(1.0, 10 / setup.n_classes)
        return warmup, beta

    def training_step(self, batch, epoch):
        size = len(batch.label)
        regularised = self.regularised_networks(batch)
        both_views = torch.cat([batch.weak, batch.strong])
        logits = [net(both_views if k in regularised else batch.weak).float() for k, net in enumerate(self.networks)]
        probs = [out[:size].softmax(dim=1) for out in logits]
        target = ((probs[0] + probs[1]) / 2).detach()
        complement = self.complement[batch.index]
        beta = self.beta * len(self.networks) / len(regularised)
        loss = 0.0
        for k, out in enumerate(logits):
            weighted_pm = self.weight[batch.index, k] * pm_loss(probs[k], batch.label, complement)
            loss = loss + weighted_pm.mean()
            if k in regularised:
                loss = loss + beta * consistency(target, out[size:].log_softmax(dim=1)).mean()
        self._record(batch, [p.detach() for p in probs], epoch)
        self.phase.record(batch.index, probs[0].detach(), batch.label)
        return loss

    def regularised_networks(self, batch) -> tuple[int, ...]:
        """Returns the indices of the networks that take the consistency term in this step."""
        if self.hparams.consistency == "both":
            return (0, 1)
        return (int(torch.randint(2, (1,), generator=batch.generator, device=batch.generator.device)),)

    def _record(self, batch, probs: list[torch.Tensor], epoch: int) -> None:
        rows = batch.index
        for k, p in enumerate(probs):
            self.confidence[rows, k] = p.gather(1, batch.label[:, None]).squeeze(1)
            if self.phase.robust(epoch):
                self.complement[rows, p.argmax(dim=1)] = False

    def end_epoch(self, epoch, evaluate):
        f_min = self.confidence.min(dim=0).values
        phase = self.phase.end_epoch(epoch)
        if self.phase.robust(epoch + 1):
            # Network f is weighted by its peer f′ (column 1) and f′ by f (column 0).
            self.weight[:, 0] = adaptive_weights(self.confidence[:, 1])
            self.weight[:, 1] = adaptive_weights(self.confidence[:, 0])
        return {
            **phase,
            "f_min": float(f_min[0]),
            "f_min_peer": float(f_min[1]),
            "mean_weight": float(self.weight.mean()),
            "mean_complement_size": float(self.complement.sum(dim=1).float().mean()),
            **self.weight_separation(),
        }

    def weight_separation(self) -> dict[str, float]:
        """Returns, in benchmarks only, the mean weight of network f on the samples
        whose given label is right and on those whose label is wrong (else {}).
        """
        truth = self.setup.true_labels
        if truth is None:
            return {}
        noisy, weight = self.setup.given_labels != truth, self.weight[:, 0]
        figures = {}
        if (~noisy).any():
            figures["weight_of_right_labels"] = float(weight[~noisy].mean())
        if noisy.any():
            figures["weight_of_wrong_labels"] = float(weight[noisy].mean())
        return figures

    def audit(self, probs):
        weight = self.weight.cpu().numpy()
        return {
            **super().audit(probs),
            "pmnar_weight": weight[:, 0],
            "pmnar_weight_peer": weight[:, 1],
            "pmnar_complement_size": self.complement.sum(dim=1).cpu().numpy(),
        }

    def summary(self):
        return {
            "warmup": self.phase.warmup_epochs(),
            "beta": self.beta,
            "f_min_per_epoch": {
                "f": [h["f_min"] for h in self.history],
                "f_peer": [h["f_min_peer"] for h in self.history],
            },
        }

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.phase.restore(self.history)
