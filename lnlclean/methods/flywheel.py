"""LNL-flywheel: two interconnected EM cycles, a main network that separates clean from corrupted
labels and an auxiliary network that refurbishes the corrupted ones.

Only the paper's outline is public (abstract, figure captions and the statement of its lemma),
so this is a reconstruction from that outline; every choice below is lnlclean's, not the
authors', and docs/methods.md lists the measurements behind the ones that depart from a literal
reading.

Model. The given label ỹ of x comes from a mixture: with probability γ (the clean prior) from
the main network's class distribution g(x), otherwise from the corruption channel

    ε(x, ỹ) = Σ_y f(x)[y] · T_c[y, ỹ],

where f(x) is the auxiliary network's estimate of the true class and T_c the corruption matrix
(row = true class, column = observed label, diagonal 0, rows sum to 1: where a corrupted label
of class y goes).

Every training step after the warm-up, on a mini-batch:

1. Main E-step: the clean probability c = γ g(x)[ỹ] / (γ g(x)[ỹ] + (1 − γ) ε), with g from its
   training forward on the weak view and f from a forward without gradient on the same view.
2. Auxiliary E-step: the true-class estimate q = c · onehot(ỹ) + (1 − c) · normalise(f(x) ⊙ T_c[:, ỹ]).
   The corrupted part never puts mass on ỹ itself.
3. Auxiliary M-step: f learns q on the strong view (soft cross-entropy), plus, with
   ``--flywheel-contrastive``, a supervised contrastive loss between two strong views whose
   positives share argmax q (a linear projection of f's features, temperature 0.1).
4. Resampling: ŷ = argmax f(x), the refurbished label.
5. Main M-step: g learns ỹ or ŷ on the weak view, plus the confidence regulariser KL(π ‖ p̄)
   (π: the given labels' class frequencies; p̄: g's batch-mean prediction), which keeps g from
   collapsing onto a few classes. Which label g learns is ``--flywheel-assignment``:

   - ``agreement`` (default): ỹ where c ≥ 0.5, ŷ where c < 0.5 — and ŷ also where both networks
     reject ỹ (ŷ ≠ ỹ and g's own argmax is ŷ);
   - ``hard``: ỹ where c ≥ 0.5, else ŷ;
   - ``soft``: ỹ with weight c and ŷ with weight 1 − c, the literal reading of the outline.

   With ``soft`` weights a noisy sample still pulls g towards ỹ with weight c; as g fits it, c
   rises in turn, and γ drifts towards 1 (everything "clean"). ``hard`` holds under symmetric
   noise but not under class-dependent flips: there g after the warm-up gives a flipped label
   the share of its class that was flipped (0.4 under asym40), every c starts above 0.5, and
   nothing is relabelled. The agreement rule lets the refurbisher's argmax, which turns that
   0.6/0.4 split into a clear vote, reach g when g itself agrees.

At the end of every epoch the global parameters are re-estimated from the epoch's E-steps:

- T_c from the expected counts of corrupted labels: sample i adds (1 − c_i) · normalise(f ⊙
  T_c[:, ỹ_i]) to column ỹ_i — the corrupted part of q_i, the EM expectation — with a
  pseudo-count of 0.01 per off-diagonal cell (a class never seen corrupted keeps a uniform
  row), the diagonal dropped and rows normalised. Counting only argmax q (a hard E-step) moves
  T_c only through samples already below c = 0.5, which is too slow to escape the uniform start
  under class-dependent flips;
- γ = mean c, kept in [0.01, 0.99].

Initialisation: both networks train with plain cross-entropy (g on the weak view, f on the
strong view) until g's predictions settle (:mod:`lnlclean.methods.phase`), and at least a tenth
of the epochs. Started after a fixed tenth on 5,000 CIFAR-10 photos, the EM cycles ran from
epoch 3 of 20 with g 25 % accurate: γ fell from 0.67 to 0.22 (truth 0.60) and g learned f's
near-random refurbished labels (``docs/diagnostics.md``). T_c starts uniform off the
diagonal; γ starts at 1 − η, η being ``--noise-rate`` when given, else the weight of the low
component of a two-component mixture fitted to g's log margins log g[ỹ] − log max_{y≠ỹ} g[y]
over the last warm-up epoch (:func:`lnlclean.calibration.mixture_fit`, the fit that calibrates
every audit). lnlclean first
took η as the share of samples whose prediction by g disagreed with the given label; after a
two-epoch warm-up on 20,000 CIFAR-10 photos with 40 % human label noise that gave γ = 0.36
against a true clean share of 0.60, because a network that has barely trained disagrees with
hard images as much as with wrong labels, and the EM stayed near that start.

Cost: per step g trains on one view and f on one, plus a forward of f without gradient for the
E-steps; the contrastive term adds a forward and backward of f on a second strong view.

Only g is needed at inference. Audit: ``clean_prob`` is c recomputed with the final g on the
unaugmented images (the main E-step with the final γ and each sample's last ε);
``suggested_label`` is ŷ; ``flywheel_corruption_prob`` is ε and ``flywheel_refurbished_prob``
max f(x), both from the last epoch. The summary holds γ per epoch and the final T_c.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ..calibration import mixture_fit
from ..losses import soft_cross_entropy
from ..models import TwoHeadNetwork
from .base import Method, register_method
from .phase import EarlyLearning, auto_warmup, check_warmup

GAMMA_RANGE = (0.01, 0.99)
PSEUDO_COUNT = 0.01
PROJECTION_DIM = 64
TEMPERATURE = 0.1


@dataclass
class FlywheelHparams:
    """LNL-flywheel hyperparameters, each described by its metadata ``help``; None means "auto"."""

    warmup: int | None = field(
        default=None,
        metadata={
            "help": "epochs of cross-entropy for both networks before the EM cycles, below the epochs; auto: "
            "until g's predictions settle, at least a tenth of the epochs; with --features frozen exactly that.",
            "min": 0,
        },
    )
    regularizer: float = field(
        default=1.0,
        metadata={
            "help": "weight of the confidence regulariser KL(π ‖ batch-mean prediction of g), at least 0.",
            "min": 0.0,
        },
    )
    contrastive: bool = field(
        default=False,
        metadata={
            "help": "whether to add the supervised contrastive term to the auxiliary network's loss.",
        },
    )
    assignment: str = field(
        default="agreement",
        metadata={
            "help": "how the main network splits each sample between ỹ and ŷ: `hard` (ỹ where c ≥ 0.5, else ŷ), "
            "`agreement` (as `hard`, but ŷ also where both networks reject ỹ) or `soft` (c on ỹ, 1 − c on ŷ).",
            "choices": ("agreement", "hard", "soft"),
        },
    )


def warmup_epochs(hparams: FlywheelHparams, epochs: int) -> int:
    """Returns the warm-up length of an `epochs`-epoch run. Raises UserError when it leaves no EM epoch."""
    warmup = auto_warmup(hparams.warmup, 0.1, epochs)
    check_warmup("flywheel", hparams.warmup, warmup, epochs, otherwise="no label is checked")
    return warmup


def clip_gamma(gamma: float) -> float:
    """Returns `gamma` clipped to GAMMA_RANGE, so neither component of the mixture is ever ruled out."""
    return min(max(gamma, GAMMA_RANGE[0]), GAMMA_RANGE[1])


def uniform_corruption(n_classes: int) -> torch.Tensor:
    """Returns the K×K corruption matrix that sends each class to every other class alike (diagonal 0)."""
    matrix = torch.full((n_classes, n_classes), 1.0 / max(n_classes - 1, 1))
    return matrix.fill_diagonal_(0.0)


def given_label_margin(logits: torch.Tensor, given: torch.Tensor) -> torch.Tensor:
    """Returns log p[ỹ] − log max_{y≠ỹ} p[y] of softmax(logits) for each sample (B)."""
    log_probs = logits.float().log_softmax(dim=1)
    given_log_prob = log_probs.gather(1, given[:, None]).squeeze(1)
    return given_log_prob - log_probs.scatter(1, given[:, None], float("-inf")).amax(dim=1)


def corruption_likelihood(aux_probs: torch.Tensor, corruption: torch.Tensor, given: torch.Tensor) -> torch.Tensor:
    """Returns ε = Σ_y f[y] · T_c[y, ỹ] for each sample (B): how likely the corruption channel emits the given label."""
    return (aux_probs * corruption[:, given].T).sum(dim=1)


def clean_probability(main_given_prob: torch.Tensor, corruption_prob: torch.Tensor, gamma: float) -> torch.Tensor:
    """Returns the main E-step c = γ g[ỹ] / (γ g[ỹ] + (1 − γ) ε) for each sample (B)."""
    clean = gamma * main_given_prob
    return clean / (clean + (1 - gamma) * corruption_prob).clamp_min(1e-12)


def true_class_estimate(
    aux_probs: torch.Tensor, corruption: torch.Tensor, given: torch.Tensor, clean: torch.Tensor
) -> torch.Tensor:
    """Returns the auxiliary E-step q = c · onehot(ỹ) + (1 − c) · normalise(f ⊙ T_c[:, ỹ]) (B×K)."""
    refurbished = aux_probs * corruption[:, given].T
    refurbished = refurbished / refurbished.sum(dim=1, keepdim=True).clamp_min(1e-12)
    one_hot = F.one_hot(given, aux_probs.shape[1]).to(aux_probs.dtype)
    return clean[:, None] * one_hot + (1 - clean[:, None]) * refurbished


def main_targets(
    clean: torch.Tensor, refurbished: torch.Tensor, main_predicted: torch.Tensor, given: torch.Tensor, assignment: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns the main M-step's weights (each B) on the given label ỹ and on the refurbished label ŷ.

    - ``soft``: c on ỹ and 1 − c on ŷ;
    - ``hard``: ỹ where c ≥ 0.5, else ŷ;
    - ``agreement``: as ``hard``, but a sample whose label both networks reject (ŷ ≠ ỹ and the
      main network's own prediction `main_predicted` is ŷ) learns ŷ even when c ≥ 0.5.
    """
    if assignment == "soft":
        return clean, 1 - clean
    keep = clean >= 0.5
    if assignment == "agreement":
        keep &= ~((refurbished != given) & (main_predicted == refurbished))
    keep = keep.float()
    return keep, 1 - keep


def estimate_corruption(counts: torch.Tensor) -> torch.Tensor:
    """Returns T_c from K×K expected counts of (true class, given label):
    diagonal dropped, PSEUDO_COUNT added per other cell, rows normalised.
    """
    smoothed = counts + PSEUDO_COUNT
    smoothed.fill_diagonal_(0.0)
    return smoothed / smoothed.sum(dim=1, keepdim=True).clamp_min(1e-12)


def confidence_regularizer(logits: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
    """Returns KL(prior ‖ mean softmax(logits)): large when the batch's mean prediction leaves classes out."""
    mean_probs = logits.softmax(dim=1).mean(dim=0).clamp_min(1e-12)
    return (prior * (prior.clamp_min(1e-12).log() - mean_probs.log())).sum()


def supervised_contrastive(
    first: torch.Tensor, second: torch.Tensor, labels: torch.Tensor, temperature: float = TEMPERATURE
) -> torch.Tensor:
    """Returns the supervised contrastive loss of two views' projections (each B×d) whose positives share `labels`.

    Each of the 2B projections is an anchor; its positives are the other view of the same sample
    and both views of every other sample with the same label.
    """
    features = F.normalize(torch.cat([first, second]), dim=1)
    labels = labels.repeat(2)
    itself = torch.eye(len(features), dtype=torch.bool, device=features.device)
    log_probs = (features @ features.T / temperature).masked_fill(itself, float("-inf")).log_softmax(dim=1)
    positive = (labels[:, None] == labels[None, :]) & ~itself
    return -(log_probs.masked_fill(~positive, 0.0).sum(dim=1) / positive.sum(dim=1)).mean()


@register_method
class Flywheel(Method):
    name = "flywheel"
    description = (
        "main network with a clean prior + auxiliary refurbisher with a corruption matrix, two linked EM cycles "
        "(LNL-flywheel)"
    )
    num_networks = 2
    progress_figures = {"gamma": "γ"}
    unused_parameters = True  # the auxiliary network's projection head learns only with --flywheel-contrastive
    columns = {
        "flywheel_corruption_prob": "ε: likelihood that the corruption channel emits the given label "
        "(auxiliary network × T_c)",
        "flywheel_refurbished_prob": "the auxiliary network's probability of its refurbished label",
    }
    matrix_axes = {"corruption_matrix": ("true class", "observed label")}
    Hparams = FlywheelHparams

    def __init__(self, hparams, setup):
        super().__init__(hparams, setup)
        n, k, device = setup.n_samples, setup.n_classes, setup.device
        self.networks[1] = TwoHeadNetwork(self.networks[1], PROJECTION_DIM)
        self.phase = EarlyLearning(
            setup, self.state, minimum=warmup_epochs(hparams, setup.epochs), fixed=hparams.warmup
        )
        self.clean = self.state.add("clean", torch.ones(n, device=device))
        self.corruption_prob = self.state.add("corruption_prob", torch.zeros(n, device=device))
        self.refurbished = self.state.add("refurbished", setup.given_labels.clone())
        self.refurbished_prob = self.state.add("refurbished_prob", torch.ones(n, device=device))
        self.corruption = uniform_corruption(k).to(device)
        self.counts = torch.zeros(k, k, device=device)
        self.label_prior = torch.bincount(setup.given_labels, minlength=k).float() / n
        self.gamma = clip_gamma(1.0 - (setup.noise_rate or 0.0))
        self.gamma_initial = self.gamma
        self.gamma_source = "--noise-rate" if setup.noise_rate is not None else "warm-up margin mixture"
        self.main_margin = self.state.add("main_margin", torch.zeros(n, device=device))

    @classmethod
    def check_settings(cls, hparams, config):
        warmup_epochs(hparams, config.epochs)

    @property
    def main(self):
        return self.networks[0]

    @property
    def aux(self) -> TwoHeadNetwork:
        return self.networks[1]

    def training_step(self, batch, epoch):
        main_logits = self.main(batch.weak).float()
        self.phase.record(batch.index, main_logits, batch.label)
        if not self.phase.robust(epoch):
            with torch.no_grad():
                self.main_margin[batch.index] = given_label_margin(main_logits, batch.label)
            return F.cross_entropy(main_logits, batch.label) + F.cross_entropy(
                self.aux(batch.strong).float(), batch.label
            )
        given = batch.label
        with torch.no_grad():
            aux_probs = self.aux(batch.weak).float().softmax(dim=1)
            main_given_prob = main_logits.softmax(dim=1).gather(1, given[:, None]).squeeze(1)
            corruption_prob = corruption_likelihood(aux_probs, self.corruption, given)
            clean = clean_probability(main_given_prob, corruption_prob, self.gamma)
            targets = true_class_estimate(aux_probs, self.corruption, given, clean)
            refurbished_prob, refurbished = aux_probs.max(dim=1)
            self.record(batch.index, clean, corruption_prob, refurbished, refurbished_prob, targets, given)
        aux_loss = self.aux_loss(batch, targets)
        keep, relabel = main_targets(
            clean, refurbished, main_logits.detach().argmax(dim=1), given, self.hparams.assignment
        )
        main_loss = (
            keep * F.cross_entropy(main_logits, given, reduction="none")
            + relabel * F.cross_entropy(main_logits, refurbished, reduction="none")
        ).mean()
        return main_loss + self.hparams.regularizer * confidence_regularizer(main_logits, self.label_prior) + aux_loss

    def aux_loss(self, batch, targets):
        """Returns the auxiliary M-step loss: soft CE of q on
        the strong view, plus the contrastive term when enabled.
        """
        if not self.hparams.contrastive:
            return soft_cross_entropy(self.aux(batch.strong).float(), targets)
        logits, projection = self.aux.both(batch.strong)
        _, second_projection = self.aux.both(batch.augmenter.strong(batch.raw, batch.generator))
        contrastive = supervised_contrastive(projection.float(), second_projection.float(), targets.argmax(dim=1))
        return soft_cross_entropy(logits.float(), targets) + contrastive

    def record(self, index, clean, corruption_prob, refurbished, refurbished_prob, targets, given):
        """Stores the batch's E-step results per sample and adds its expected (true class, ỹ) counts of
        corrupted labels.

        The expected count of (y, ỹ) is (1 − c) · normalise(f ⊙ T_c[:, ỹ])[y], the corrupted part of q;
        the counts of every process's part of the mini-batch are added.
        """
        self.clean[index] = clean
        self.corruption_prob[index] = corruption_prob
        self.refurbished[index] = refurbished
        self.refurbished_prob[index] = refurbished_prob
        corrupted = targets - clean[:, None] * F.one_hot(given, self.setup.n_classes)
        batch_counts = torch.zeros_like(self.counts).index_add_(1, given, corrupted.T)
        self.counts += self.setup.world.sum(batch_counts)

    def end_epoch(self, epoch, evaluate):
        phase = self.phase.end_epoch(epoch)
        if self.phase.robust(epoch):
            self.corruption = estimate_corruption(self.counts)
            self.gamma = float(self.clean.mean())
        elif self.phase.robust(epoch + 1):  # the warm-up ended with this epoch
            if self.setup.noise_rate is None:
                self.gamma = 1.0 - mixture_fit(self.main_margin.cpu().numpy()).noise_rate
            self.gamma_initial = clip_gamma(self.gamma)
        self.counts.zero_()
        self.gamma = clip_gamma(self.gamma)
        if not self.phase.robust(epoch + 1):
            return phase
        return {
            **phase,
            "gamma": self.gamma,
            "flagged_fraction": float((self.clean < 0.5).float().mean()),
            **self.truth_figures(),
        }

    def truth_figures(self) -> dict:
        """Returns, in benchmarks only, how well c separates and ŷ refurbishes (else an empty dict).

        ``selection_accuracy``: share of samples where c ≥ 0.5 exactly when the given label is
        right; ``selection_precision`` and ``selection_recall``: of the samples with c ≥ 0.5, the
        share whose given label is right, and of those with a right label, the share with
        c ≥ 0.5; ``refurbish_accuracy``: share of the samples with c < 0.5 whose ŷ is the true label.
        """
        truth = self.setup.true_labels
        if truth is None:
            return {}
        noisy, flagged = self.setup.given_labels != truth, self.clean < 0.5
        figures = {"selection_accuracy": float((noisy == flagged).float().mean())}
        if (~flagged).any():
            figures["selection_precision"] = float((~noisy[~flagged]).float().mean())
        if (~noisy).any():
            figures["selection_recall"] = float((~flagged[~noisy]).float().mean())
        if flagged.any():
            figures["refurbish_accuracy"] = float((self.refurbished[flagged] == truth[flagged]).float().mean())
        return figures

    def predict(self, x, index=None):
        return self.main(x).float().softmax(dim=1)

    def audit(self, probs):
        given = self.setup.given_labels.cpu()
        main_given_prob = torch.as_tensor(probs, dtype=torch.float32)[torch.arange(len(given)), given]
        clean = clean_probability(main_given_prob, self.corruption_prob.cpu(), self.gamma)
        return {
            "clean_prob": clean.numpy(),
            "suggested_label": self.refurbished.cpu().numpy(),
            "suggested_prob": self.refurbished_prob.cpu().numpy(),
            "flywheel_corruption_prob": self.corruption_prob.cpu().numpy(),
            "flywheel_refurbished_prob": self.refurbished_prob.cpu().numpy(),
        }

    def summary(self):
        return {
            "warmup": self.phase.warmup_epochs(),
            "regularizer": self.hparams.regularizer,
            "contrastive": self.hparams.contrastive,
            "gamma": self.gamma,
            "gamma_initial": self.gamma_initial,
            "gamma_source": self.gamma_source,
            "gamma_per_epoch": [h.get("gamma") for h in self.history],
            "noise_rate_per_epoch": [None if h.get("gamma") is None else 1.0 - h["gamma"] for h in self.history],
            "selection_accuracy_per_epoch": [h.get("selection_accuracy") for h in self.history],
            "refurbish_accuracy_per_epoch": [h.get("refurbish_accuracy") for h in self.history],
            "corruption_matrix": np.round(self.corruption.cpu().numpy(), 6).tolist(),
        }

    def state_dict(self):
        return {
            **super().state_dict(),
            "corruption": self.corruption.cpu(),
            "counts": self.counts.cpu(),
            "gamma": self.gamma,
            "gamma_initial": self.gamma_initial,
        }

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.phase.restore(self.history)
        self.corruption = state["corruption"].to(self.setup.device)
        self.counts.copy_(state["counts"])
        self.gamma, self.gamma_initial = float(state["gamma"]), float(state["gamma_initial"])
