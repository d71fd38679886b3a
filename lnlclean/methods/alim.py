"""ALIM: adjusting label importance, for noisy labels and noisy candidate-label sets.

One network. Every sample x has a candidate set S(x) ∈ {0,1}^K — one-hot of the given label for
ordinary data, several labels for partial-label data (a ``candidates`` column) — and a pseudo
target w(x), initialised to S(x) / |S(x)|. Each mini-batch:

- P = softmax of the network on the weak view (detached for the target);
- S̃ = S + λ(1 − S): labels outside the candidate set get weight λ ∈ [0, 1];
- w ← m · w + (1 − m) · Normalize(S̃ ⊙ P), with Normalize ``onehot`` (argmax) or ``scale``
  (z^(1/K) / Σ z^(1/K)); the momentum m falls linearly from 0.95 to 0.8 over the run, and the
  targets start moving in the second epoch, as in the authors' code;
- the loss is the cross-entropy between w and P.

λ is 0 during the warm-up, so the candidate set is trusted fully and, for ordinary data,
training is plain cross-entropy. The authors warm up for a fixed e0 (80 of 1,000 epochs); here
that share, 8 % of the epochs, is the shortest warm-up, and it lasts until the network's
predictions settle (:mod:`lnlclean.methods.phase`). Started at the fixed share on 5,000
CIFAR-10 photos, λ reached 1 by epoch 12 of 20 and the network then trained on targets less
accurate than the given labels (0.585 against 0.600, idn40, ``docs/diagnostics.md``). At the end
of every later epoch λ is set to the η-quantile over the training set of the margin

    r(x) = max_i S_i P_i / max_i (1 − S_i) P_i,

clipped at 1 — the η share of samples whose prediction agrees least with their candidates get
pseudo labels from outside the set. Margins come from the epoch's training forwards, as in the
authors' code, so no extra pass is needed. η is ``--noise-rate`` when given; otherwise it is
estimated again at the end of every epoch from the warm-up's end on, as the weight of the low
component of a two-component mixture fitted to log r (:func:`lnlclean.calibration.mixture_fit`,
the same fit that calibrates every audit). The paper leaves η to the user. lnlclean first
estimated it once, at the end of the warm-up, as the share of samples predicted outside their
candidate set; after a one-epoch warm-up on 3,000 CIFAR-10 photos with 20 % wrong labels that
share was 0.80, λ sat at 1 from the start, and relabelling with the audit lowered label
accuracy from 0.80 to 0.61. A network that has trained one epoch disagrees with most labels
because it has not learned them, not because they are wrong; re-estimating η as the network
learns lets λ follow. ``--alim-lambda X`` fixes λ = X after the warm-up instead (the paper's
manual mode). With λ = 0, ``--alim-normalize scale`` and
``--alim-k 1`` the method is PRODEN.

This is ALIM on a plain classifier (the paper's "RC + ALIM" variant): pseudo labels come from
the network's own predictions, without PiCO's prototypes, contrastive head or mixup, so an epoch
costs one forward and backward, like cross-entropy.

Audit (from the final clean pass and the final λ): ``alim_margin`` is r(x);
``clean_prob`` = r / (r + λ) = max S⊙P / (max S⊙P + λ · max (1−S)⊙P), the share of the
weighted evidence that sits inside the candidate set. It is below 0.5 exactly when r < λ, i.e.
when the λ-weighted pseudo label falls outside the set, and is 1 while λ = 0.
``suggested_label`` is argmax w.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from ..calibration import mixture_fit
from ..errors import UserError
from ..losses import soft_cross_entropy_per_sample
from .base import Method, register_method, target_accuracy
from .phase import EarlyLearning, auto_warmup, check_warmup

MOMENTUM_START, MOMENTUM_END = 0.95, 0.8


@dataclass
class ALIMHparams:
    """ALIM hyperparameters, each described by its metadata ``help``; None means "auto"."""

    normalize: str = field(
        default="onehot",
        metadata={
            "help": "how pseudo targets are normalised: `onehot` (the argmax of S̃ ⊙ P) or `scale` "
            "(z^(1/K) / Σ z^(1/K)).",
            "choices": ("onehot", "scale"),
        },
    )
    k: float = field(
        default=1.0,
        metadata={
            "help": "the exponent K > 0 of the `scale` normaliser; larger is smoother.",
            "min": 0.0,
        },
    )
    lambda_: float | None = field(
        default=None,
        metadata={
            "help": "fix λ after the warm-up (`--alim-lambda`, in [0, 1]); auto: the η-quantile of the margins, "
            "every epoch.",
            "min": 0.0,
            "max": 1.0,
        },
    )
    warmup: int | None = field(
        default=None,
        metadata={
            "help": "epochs e0 with λ = 0, below the epochs (0 needs `--noise-rate`); auto: until the predictions "
            "settle, at least 8 % of the epochs (the authors' 80 of 1,000); with --features frozen exactly that.",
            "min": 0,
        },
    )


def warmup_epochs(hparams: ALIMHparams, epochs: int) -> int:
    """Returns e0, the number of epochs with λ = 0 (`hparams.warmup`, or auto)."""
    return auto_warmup(hparams.warmup, 0.08, epochs)


def weighted_log_candidates(candidates: torch.Tensor, lambda_: float) -> torch.Tensor:
    """Returns log S̃ = log(S + λ(1 − S)) for {0,1} candidate sets B×K (−inf outside S when λ = 0)."""
    weights = candidates + lambda_ * (1 - candidates)
    return weights.log()


def pseudo_targets(
    log_probs: torch.Tensor, candidates: torch.Tensor, lambda_: float, normalize: str, k: float = 1.0
) -> torch.Tensor:
    """Returns Normalize(S̃ ⊙ P) (B×K rows summing to 1) from log-probabilities and candidate sets.

    Works in log space, so labels with weight 0 stay exactly 0 and small probabilities do not
    underflow under the 1/K power.
    """
    log_scores = log_probs + weighted_log_candidates(candidates, lambda_)
    if normalize == "onehot":
        return F.one_hot(log_scores.argmax(dim=1), log_scores.shape[1]).to(log_probs.dtype)
    return (log_scores / k).softmax(dim=1)


def log_margins(log_probs: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """Returns log r(x) = max_{i∈S} log P_i − max_{i∉S} log P_i for each row (B); +inf when S holds every label."""
    inside = log_probs.masked_fill(candidates == 0, float("-inf")).amax(dim=1)
    outside = log_probs.masked_fill(candidates != 0, float("-inf")).amax(dim=1)
    return inside - outside


def quantile_lambda(log_margin: torch.Tensor, eta: float) -> float:
    """Returns λ: the η-quantile (lower order statistic) of
    the margins exp(`log_margin`), clipped at 1; 0 when η = 0.
    """
    if eta <= 0:
        return 0.0
    ordered = log_margin.sort().values
    position = min(int(eta * len(ordered)), len(ordered) - 1)
    return float(ordered[position].clamp(max=0.0).exp())


def clean_probability(log_margin: torch.Tensor, lambda_: float) -> torch.Tensor:
    """Returns r / (r + λ) for margins r = exp(`log_margin`): 1 when λ = 0 or r = inf."""
    if lambda_ <= 0:
        return torch.ones_like(log_margin)
    return torch.sigmoid(log_margin - np.log(lambda_))


def target_momentum(epoch: int, epochs: int) -> float:
    """Returns the pseudo-target momentum m at `epoch`: linear from 0.95 (first epoch) to 0.8 (end)."""
    return MOMENTUM_START + (MOMENTUM_END - MOMENTUM_START) * epoch / epochs


@register_method
class ALIM(Method):
    name = "alim"
    description = "pseudo labels from candidate sets widened by an adaptive λ (ALIM); reads partial labels"
    reads_candidates = True
    columns = {
        "alim_margin": "r(x) = max prob inside the candidate set / max prob outside it (inf when the set holds "
        "every label)",
        "alim_margin_quantile": "share of samples whose margin is at most this one's",
        "alim_lambda": "the final λ (same for every row)",
        "alim_outside_candidates": "true when suggested_label is outside the candidate set",
    }
    progress_figures = {"lambda": "λ"}
    Hparams = ALIMHparams

    def __init__(self, hparams, setup):
        super().__init__(hparams, setup)
        self.phase = EarlyLearning(
            setup, self.state, minimum=warmup_epochs(hparams, setup.epochs), fixed=hparams.warmup
        )
        self.targets = self.state.add_table("targets", setup.n_samples, setup.n_classes)
        self.targets.fill(lambda rows: (sets := self.candidate_rows(rows)) / sets.sum(dim=1, keepdim=True))
        self.log_margin = self.state.add("log_margin", torch.zeros(setup.n_samples, device=setup.device))
        self.lambda_ = 0.0
        self.eta = setup.noise_rate

    @classmethod
    def check_settings(cls, hparams, config):
        if hparams.k <= 0:
            raise UserError(f"--alim-k {hparams.k}: must be positive")
        warmup = warmup_epochs(hparams, config.epochs)
        check_warmup("alim", hparams.warmup, warmup, config.epochs, otherwise="λ never moves")
        if warmup == 0 and hparams.lambda_ is None and config.noise_rate is None:
            raise UserError(
                "--alim-warmup 0: give --noise-rate too; without a warm-up the noise rate cannot be estimated"
            )

    def candidate_rows(self, index) -> torch.Tensor:
        """Returns the candidate sets S of the samples `index` (a tensor or a slice)
        as float {0,1} rows: one-hot of the given label without a candidates column.
        """
        if self.setup.candidates is not None:
            return self.setup.candidates[index].float()
        return F.one_hot(self.setup.given_labels[index], self.setup.n_classes).float()

    def training_step(self, batch, epoch):
        logits = self.networks[0](batch.weak).float()
        log_probs = logits.log_softmax(dim=1)
        candidates = self.candidate_rows(batch.index)
        detached = log_probs.detach()
        self.phase.record(batch.index, detached, batch.label)
        self.log_margin[batch.index] = log_margins(detached, candidates)
        targets = self.targets[batch.index]
        if epoch >= 1:
            fresh = pseudo_targets(detached, candidates, self.lambda_, self.hparams.normalize, self.hparams.k)
            momentum = target_momentum(epoch, self.setup.epochs)
            targets = momentum * targets + (1 - momentum) * fresh
            self.targets[batch.index] = targets
        return soft_cross_entropy_per_sample(log_probs, targets).mean()

    def end_epoch(self, epoch, evaluate):
        outside_share = float((self.log_margin < 0).float().mean())
        phase = self.phase.end_epoch(epoch)
        if self.phase.robust(epoch + 1):
            if self.setup.noise_rate is None and self.hparams.lambda_ is None:
                self.eta = mixture_fit(self.log_margin.cpu().numpy()).noise_rate
            self.lambda_ = (
                self.hparams.lambda_ if self.hparams.lambda_ is not None else quantile_lambda(self.log_margin, self.eta)
            )
        return {
            **phase,
            "lambda": self.lambda_,
            "eta": self.eta,
            "outside_share": outside_share,
            **target_accuracy(self.targets, self.setup.true_labels),
        }

    def audit(self, probs):
        final_probs = torch.from_numpy(probs)

        def per_sample(targets, rows):
            candidates = self.candidate_rows(rows).cpu().double()
            log_margin = log_margins(final_probs[rows].double().clamp_min(1e-300).log(), candidates)
            top, suggested = targets.cpu().double().max(dim=1)
            outside = candidates.gather(1, suggested[:, None]).squeeze(1) == 0
            return torch.stack([log_margin, top, suggested.double(), outside.double()], dim=1)

        log_margin, top, suggested, outside = self.targets.map(per_sample).T
        margin = log_margin.exp().numpy()
        return {
            "clean_prob": clean_probability(log_margin, self.lambda_).numpy(),
            "suggested_label": suggested.numpy().astype(np.int64),
            "suggested_prob": top.numpy(),
            "alim_margin": margin,
            "alim_margin_quantile": pd.Series(margin).rank(pct=True, method="max").to_numpy(),
            "alim_lambda": np.full(len(margin), self.lambda_),
            "alim_outside_candidates": outside.numpy() == 1,
        }

    def summary(self):
        if self.hparams.lambda_ is not None:
            eta_source = "not used: --alim-lambda fixes λ"
        elif self.setup.noise_rate is not None:
            eta_source = "--noise-rate"
        else:
            eta_source = (
                "estimated every epoch from the warm-up on: the low component of a two-component mixture on log r"
            )
        estimates = [h["eta"] if eta_source.startswith("estimated") else None for h in self.history]
        return {
            "warmup": self.phase.warmup_epochs(),
            "normalize": self.hparams.normalize,
            "k": self.hparams.k,
            "eta": self.eta,
            "eta_source": eta_source,
            "final_lambda": self.lambda_,
            "lambda_per_epoch": [h["lambda"] for h in self.history],
            "noise_rate_per_epoch": estimates,
        }

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.phase.restore(self.history)
        if self.history:
            self.lambda_, self.eta = self.history[-1]["lambda"], self.history[-1]["eta"]
