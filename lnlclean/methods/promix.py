"""ProMix: progressive selection of clean samples and debiased semi-supervised training.

Two networks, each a backbone with a main head h and an auxiliary pseudo-label head h_AP on
the same features. Every step, each network k:

1. forwards the weak view of the batch (both heads, with gradient);
2. selects the batch's labelled set: class-wise small-loss selection (CSS, fixed for the epoch)
   ∪ matched high-confidence selection (MHCS: max p ≥ τ and argmax p = given label) ∪, late in
   training, label guessing by agreement (LGA: both networks ≥ τ and agreeing, with the agreed
   label as target);
3. minimises L_cls + γ (L_aux + L_mix):

   - L_cls: the debiased margin loss on the labelled samples, CE(z + α·log π, y);
   - L_aux: the auxiliary head learns the labelled samples (CE) and the others from the main
     head's sharpened, debiased pseudo label softmax((z − α·log π) / T), T = 0.5;
   - L_mix: mixup (λ ~ Beta(4, 4), λ ≥ 0.5) of the strong views of up to half a batch of
     labelled samples, with the margin loss;
   - γ ramps linearly from 0 to 1 over the epochs after the warm-up.

π is the network's class prior: a moving average (momentum 0.99) of its batch-mean prediction.
CSS: at the end of each epoch, per given class j, the ⌈(n/C)·R⌉ samples (at most all of them)
whose main-head loss on the epoch's training forwards was smallest are selected for the next
epoch. The loss is the network's own, from the forwards it already ran, so selection costs no
extra pass. The warm-up lasts until network 1's predictions settle
(:mod:`lnlclean.methods.phase`), and at least the authors' share of the epochs. During the
warm-up both heads train with cross-entropy on the given labels, plus a negative-entropy
confidence penalty (the authors add it under asymmetric noise; lnlclean cannot know the noise
type, and the penalty only slows memorisation, so it is on by default).

The authors' code learns the selected samples on the weak and the strong view; lnlclean learns
them on the weak view and on mixed strong views of at most half a batch, which keeps an epoch
near three cross-entropy epochs on two networks.

Audit: ``clean_prob`` is the normalised-loss posterior, as in DivideMix: the two networks'
mean main-head loss on the last epoch's training forwards, min-max normalised within each
given class, and the posterior of the low-loss component of a two-component Gaussian mixture
fitted to it. It separates better than the selection frequency, which is exported as
``promix_selection_frequency`` (the share of (network, epoch) pairs over the last tenth of
training that selected the sample with its given label): on digits the frequency flags many
clean samples that CSS's quota and MHCS's τ = 0.99 leave out (see docs/methods.md).
``suggested_label`` is the LGA label where the last epoch had one, else the debiased pseudo
label argmax(log p − α·log π̄) of the final clean pass.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ..losses import soft_cross_entropy, soft_cross_entropy_per_sample
from ..models import TwoHeadNetwork
from .base import Method, register_method
from .phase import EarlyLearning, auto_warmup, check_warmup

PRIOR_MOMENTUM = 0.99
SHARPEN_T = 0.5
MIXUP_ALPHA = 4.0


@dataclass
class ProMixHparams:
    """ProMix hyperparameters, each described by its metadata ``help``; None means "auto"."""

    ratio: float = field(
        default=0.5,
        metadata={
            "help": "R, the share of each class's expected size that CSS selects, in [0, 1].",
            "min": 0.0,
            "max": 1.0,
        },
    )
    tau: float | None = field(
        default=None,
        metadata={
            "help": "confidence threshold τ of MHCS and LGA, in [0, 1]; auto: 0.99 up to 10 classes, else 0.95.",
            "min": 0.0,
            "max": 1.0,
        },
    )
    alpha: float = field(
        default=0.8,
        metadata={
            "help": "α, the strength of the debiasing (logit adjustment by α·log π), at least 0.",
            "min": 0.0,
        },
    )
    warmup: int | None = field(
        default=None,
        metadata={
            "help": "epochs of cross-entropy before selection, below the epochs; auto: until the predictions settle, "
            "at least the authors' 10 of 600 epochs for up to 10 classes, 30 of 600 beyond, and 1; with "
            "--features frozen exactly that.",
            "min": 0,
        },
    )
    lga_start: float = field(
        default=0.4,
        metadata={
            "help": "share of the epochs after which LGA runs, in [0, 1] (the authors start it after 250 of 600).",
            "min": 0.0,
            "max": 1.0,
        },
    )
    penalty: bool = field(
        default=True,
        metadata={
            "help": "whether to add the negative-entropy confidence penalty during the warm-up.",
        },
    )


def resolve(hparams: ProMixHparams, n_classes: int, epochs: int) -> tuple[float, int]:
    """Returns (τ, warm-up epochs) for a run with `n_classes` classes and `epochs` epochs."""
    tau = hparams.tau if hparams.tau is not None else (0.99 if n_classes <= 10 else 0.95)
    share = 10 / 600 if n_classes <= 10 else 30 / 600
    warmup = auto_warmup(hparams.warmup, share, epochs)
    return tau, warmup


def class_wise_selection(losses: torch.Tensor, labels: torch.Tensor, n_classes: int, ratio: float) -> torch.Tensor:
    """Returns the CSS mask (bool N): per given class j, the min(⌈(N/C)·ratio⌉, n_j) smallest `losses`."""
    selected = torch.zeros_like(labels, dtype=torch.bool)
    quota = math.ceil(len(labels) / n_classes * ratio)
    for j in range(n_classes):
        members = torch.nonzero(labels == j).flatten()
        keep = min(quota, len(members))
        if keep:
            selected[members[losses[members].topk(keep, largest=False).indices]] = True
    return selected


def debiased_margin_loss(
    logits: torch.Tensor, targets: torch.Tensor, log_prior: torch.Tensor, alpha: float
) -> torch.Tensor:
    """Returns the mean CE of soft or hard `targets` against softmax(logits + α·log π) (a scalar; 0 for no rows)."""
    if len(logits) == 0:
        return logits.sum()
    log_probs = (logits + alpha * log_prior).log_softmax(dim=1)
    if targets.dim() == 1:
        return F.nll_loss(log_probs, targets)
    return soft_cross_entropy_per_sample(log_probs, targets).mean()


def debiased_pseudo_labels(
    logits: torch.Tensor, log_prior: torch.Tensor, alpha: float, temperature: float = SHARPEN_T
) -> torch.Tensor:
    """Returns softmax((logits − α·log π) / T): the prior-corrected, sharpened prediction (B×K)."""
    return ((logits - alpha * log_prior) / temperature).softmax(dim=1)


def loss_posterior(losses: torch.Tensor, labels: torch.Tensor, n_classes: int) -> np.ndarray:
    """Returns each sample's posterior probability (float N) of the low-loss component of a two-component GMM.

    Losses are min-max normalised within each given class first, so classes that are harder to
    fit are not flagged wholesale.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import GaussianMixture

    loss = losses.double().cpu().numpy()
    labels = labels.cpu().numpy()
    normalised = np.zeros_like(loss)
    for j in range(n_classes):
        members = labels == j
        if members.any():
            low, high = loss[members].min(), loss[members].max()
            normalised[members] = (loss[members] - low) / max(high - low, 1e-12)
    if np.ptp(normalised) < 1e-12:
        return np.ones_like(normalised)  # one loss value: nothing to separate
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # a capped iteration count is fine for a 1-D fit
        mixture = GaussianMixture(2, max_iter=20, tol=1e-2, reg_covar=5e-4, random_state=0).fit(normalised[:, None])
    return mixture.predict_proba(normalised[:, None])[:, mixture.means_.argmin()]


def negative_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Returns the mean Σ_k p_k log p_k over the rows of softmax(logits) (minimising it spreads predictions)."""
    log_probs = logits.log_softmax(dim=1)
    return (log_probs.exp() * log_probs).sum(dim=1).mean()


@register_method
class ProMix(Method):
    name = "promix"
    description = (
        "two networks, class-wise small-loss + high-confidence selection, debiased semi-supervised training (ProMix)"
    )
    num_networks = 2
    progress_figures = {"selected_fraction": "selected"}
    columns = {
        "promix_selected": "selected in the last epoch by either network (CSS, MHCS or LGA)",
        "promix_css": "selected by class-wise small-loss selection in the last epoch",
        "promix_mhcs": "selected by matched high-confidence selection in the last epoch",
        "promix_lga": "labelled by agreement of both networks in the last epoch",
        "promix_agree": "both networks predicted the same label in the last epoch",
        "promix_selection_frequency": "share of (network, epoch) pairs over the last tenth of training that "
        "selected the sample with its given label",
    }
    Hparams = ProMixHparams

    def __init__(self, hparams, setup):
        super().__init__(hparams, setup)
        n, k, device = setup.n_samples, setup.n_classes, setup.device
        self.networks = torch.nn.ModuleList(TwoHeadNetwork(net, k) for net in self.networks)
        self.tau, minimum = resolve(hparams, k, setup.epochs)
        self.phase = EarlyLearning(setup, self.state, minimum=minimum, fixed=hparams.warmup)
        self.lga_from = round(hparams.lga_start * setup.epochs)
        self.window = max(1, round(0.1 * setup.epochs))
        self.log_prior = torch.full((2, k), -math.log(k), device=device)
        self.losses = self.state.add("losses", torch.zeros(n, 2, device=device))
        self.css = self.state.add("css", torch.ones(n, 2, dtype=torch.bool, device=device))
        self.hits = self.state.add("hits", torch.zeros(n, device=device))
        flags = ("css_last", "mhcs_last", "lga_last", "agree_last")
        self.flags = {name: self.state.add(name, torch.zeros(n, dtype=torch.bool, device=device)) for name in flags}
        self.lga_label = self.state.add("lga_label", torch.zeros(n, dtype=torch.int64, device=device))
        self.epoch_counts = torch.zeros(
            4, device=device
        )  # selected, selected and right, seen, seen with a right given label

    def gamma(self, epoch: int) -> float:
        """Returns γ at `epoch`: 0 in the warm-up, then rising linearly to 1 over a tenth of the epochs."""
        started = self.phase.warmup_epochs()
        return 0.0 if started is None else min(1.0, max(0.0, (epoch - started + 1) / self.window))

    @property
    def window_start(self) -> int:
        """Returns the first epoch whose selections count towards
        ``promix_selection_frequency``: the last tenth, after the warm-up.
        """
        started = self.phase.warmup_epochs()
        return max(self.setup.epochs - self.window, self.setup.epochs if started is None else started)

    def training_step(self, batch, epoch):
        outputs = [net.both(batch.weak) for net in self.networks]
        mains = [main.float() for main, _ in outputs]
        auxes = [aux.float() for _, aux in outputs]
        with torch.no_grad():
            for k, main in enumerate(mains):
                self.losses[batch.index, k] = F.cross_entropy(main, batch.label, reduction="none")
        self.phase.record(batch.index, mains[0].detach(), batch.label)
        if not self.phase.robust(epoch):
            return self.warmup_loss(mains, auxes, batch.label)
        return self.selection_loss(batch, mains, auxes, epoch)

    def warmup_loss(self, mains, auxes, labels):
        """Returns the warm-up loss: CE of both heads of both networks, plus the confidence penalty."""
        loss = sum(F.cross_entropy(main, labels) + F.cross_entropy(aux, labels) for main, aux in zip(mains, auxes))
        if self.hparams.penalty:
            loss = loss + sum(negative_entropy(main) for main in mains)
        return loss

    def selection_loss(self, batch, mains, auxes, epoch):
        """Returns the post-warm-up loss of both networks on `batch` (selection, debiasing, mixup)."""
        index, given = batch.index, batch.label
        with torch.no_grad():
            probs = [main.softmax(dim=1) for main in mains]
            confidence, predicted = zip(*(p.max(dim=1) for p in probs))
            agree = predicted[0] == predicted[1]
            lga = agree & (confidence[0] >= self.tau) & (confidence[1] >= self.tau) & (epoch >= self.lga_from)
            targets = torch.where(lga, predicted[0], given)
            self.flags["lga_last"][index], self.flags["agree_last"][index] = lga, agree
            self.lga_label[index] = predicted[0]
            right = None if self.setup.true_labels is None else self.setup.true_labels[index] == targets
        loss = mains[0].new_zeros(())
        gamma = self.gamma(epoch)
        for k in range(2):
            with torch.no_grad():
                css = self.css[index, k]
                mhcs = (confidence[k] >= self.tau) & (predicted[k] == given)
                labelled = css | mhcs | lga
                batch_prior = self.setup.world.row_mean(probs[k])  # over the whole mini-batch, in every process
                self.log_prior[k] = (
                    PRIOR_MOMENTUM * self.log_prior[k].exp() + (1 - PRIOR_MOMENTUM) * batch_prior
                ).log()
                pseudo = debiased_pseudo_labels(mains[k], self.log_prior[k], self.hparams.alpha)
                self.record_selection(k, index, css, mhcs, labelled, right, epoch)
            log_prior = self.log_prior[k]
            classify = debiased_margin_loss(mains[k][labelled], targets[labelled], log_prior, self.hparams.alpha)
            aux = (
                F.cross_entropy(auxes[k][labelled], targets[labelled]) if labelled.any() else auxes[k].sum() * 0
            ) + soft_cross_entropy(auxes[k][~labelled], pseudo[~labelled])
            mix = self.mixup_loss(k, batch, labelled, targets, log_prior)
            loss = loss + classify + gamma * (aux + mix)
        return loss

    def mixup_loss(self, k, batch, labelled, targets, log_prior):
        """Returns the margin loss of network `k` on mixed strong views of up to half the batch's labelled samples."""
        rows = torch.nonzero(labelled).flatten()[: max(2, len(labelled) // 2)]
        if len(rows) < 2:
            return log_prior.new_zeros(())
        strong = batch.augmenter.strong(batch.raw[rows], batch.generator)
        # Drawn through the epoch's generator, so a resumed run mixes exactly like an uninterrupted one.
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=batch.generator, device=rows.device))
        weight = float(np.random.default_rng(seed).beta(MIXUP_ALPHA, MIXUP_ALPHA))
        weight = max(weight, 1 - weight)
        order = torch.randperm(len(rows), generator=batch.generator, device=rows.device)
        one_hot = F.one_hot(targets[rows], self.setup.n_classes).float()
        mixed = weight * strong + (1 - weight) * strong[order]
        mixed_targets = weight * one_hot + (1 - weight) * one_hot[order]
        return debiased_margin_loss(self.networks[k](mixed).float(), mixed_targets, log_prior, self.hparams.alpha)

    def record_selection(self, k, index, css, mhcs, labelled, right, epoch):
        """Keeps network `k`'s selection flags for the audit and adds to the epoch's selection statistics.

        `right` marks the batch rows whose target is the true label (None outside benchmarks).
        """
        for name, value in (("css_last", css), ("mhcs_last", mhcs)):
            previous = self.flags[name][index] if k == 1 else torch.zeros_like(value)
            self.flags[name][index] = previous | value
        if epoch >= self.window_start:
            self.hits[index] += 0.5 * (css | mhcs).float()
        correct = labelled if right is None else labelled & right
        clean = (
            torch.zeros((), device=labelled.device)
            if self.setup.true_labels is None
            else (self.setup.true_labels[index] == self.setup.given_labels[index]).sum()
        )
        counts = torch.stack(
            [labelled.sum(), correct.sum(), torch.tensor(len(index), device=labelled.device), clean]
        ).float()
        self.epoch_counts += self.setup.world.sum(counts)

    def end_epoch(self, epoch, evaluate):
        logged = {}
        selected, correct, seen, clean = self.epoch_counts.tolist()
        if seen:
            logged["selected_fraction"] = selected / seen
            if self.setup.true_labels is not None and selected:
                logged["selected_precision"] = correct / selected
            if self.setup.true_labels is not None and clean:
                logged["selected_recall"] = correct / clean
        self.epoch_counts.zero_()
        logged.update(self.phase.end_epoch(epoch))
        if self.phase.robust(epoch + 1):
            for k in range(2):
                self.css[:, k] = class_wise_selection(
                    self.losses[:, k], self.setup.given_labels, self.setup.n_classes, self.hparams.ratio
                )
        return logged

    def audit(self, probs):
        epochs_counted = max(1, self.setup.epochs - self.window_start)
        log_prior = self.log_prior.exp().mean(dim=0).log().cpu().numpy()
        debiased = np.log(np.clip(probs, 1e-12, None)) - self.hparams.alpha * log_prior
        suggested = np.where(
            self.flags["lga_last"].cpu().numpy(), self.lga_label.cpu().numpy(), debiased.argmax(axis=1)
        )
        flags = {name: tensor.cpu().numpy() for name, tensor in self.flags.items()}
        posterior = loss_posterior(self.losses.mean(dim=1), self.setup.given_labels, self.setup.n_classes)
        frequency = (self.hits / epochs_counted).clamp(max=1.0).cpu().numpy()
        return {
            "clean_prob": posterior,
            "promix_selection_frequency": frequency,
            "suggested_label": suggested,
            "promix_selected": flags["css_last"] | flags["mhcs_last"] | flags["lga_last"],
            "promix_css": flags["css_last"],
            "promix_mhcs": flags["mhcs_last"],
            "promix_lga": flags["lga_last"],
            "promix_agree": flags["agree_last"],
        }

    @classmethod
    def check_settings(cls, hparams, config):
        # The auto warm-up depends on the class count, unknown here;
        # it is below the epochs for any count once there are 2.
        _, warmup = resolve(hparams, 2, config.epochs)
        check_warmup("promix", hparams.warmup, warmup, config.epochs, otherwise="nothing is selected")

    def state_dict(self):
        return {**super().state_dict(), "log_prior": self.log_prior.cpu(), "epoch_counts": self.epoch_counts.cpu()}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.phase.restore(self.history)
        self.log_prior.copy_(state["log_prior"])
        self.epoch_counts.copy_(state["epoch_counts"])

    def summary(self):
        return {
            "warmup": self.phase.warmup_epochs(),
            "tau": self.tau,
            "ratio": self.hparams.ratio,
            "alpha": self.hparams.alpha,
            "lga_from_epoch": self.lga_from,
            "selection_window": self.window,
            "selected_fraction_per_epoch": [h.get("selected_fraction") for h in self.history],
            "selected_precision_per_epoch": [h.get("selected_precision") for h in self.history],
        }
