"""Confident learning (cleanlab) on out-of-fold probabilities from K cross-entropy networks.

Confident learning needs predicted probabilities that are *out of sample*: for every image,
from a model that never trained on it. Here the samples are split into K folds (stratified by
given label, shuffled by ``--seed``) and K networks train side by side with plain
cross-entropy, network f on every sample outside fold f. One run of the engine therefore does
the K-fold cross-validation: each step costs about K − 1 cross-entropy steps.

Early stopping on the held-out fold (``--confident-learning-select best``, the default): after
every epoch each network predicts its own fold, and its weights are kept from the epoch where
those predictions agree most with the fold's given labels, noisy as they are; the last epoch
restores them. A network trained with cross-entropy on noisy labels learns the noise as it goes
on, so its held-out predictions get worse late in training; the given labels of the held-out
fold are the only validation data there is, and no true label is read. ``last`` keeps the final
weights.

The final pass over the training images takes each sample's probabilities from the network
that did not train on it (``predict(x, index)``), so the audit's probabilities are
out-of-fold; test images get the mean of the K networks.

Audit: the out-of-fold probabilities are calibrated like every method's (see
:mod:`lnlclean.report.verdicts`), so ``clean_prob``, ``is_label_issue`` and ``--threshold`` mean
the same as elsewhere. cleanlab 2.x reads the same probabilities:

- ``label_score`` and ``cl_label_quality``: ``cleanlab.rank.get_label_quality_scores`` (self
  confidence: the out-of-fold probability of the given label);
- ``cl_label_issue``: ``cleanlab.filter.find_label_issues(labels, pred_probs)`` (pruning by
  noise rate), cleanlab's own flags. On CIFAR-10 (5,000 images, 20 epochs) they reached F1
  0.729 under symmetric noise where the calibrated flags reached 0.774, and cleanlab's noise
  rate was 0.65 against a true 0.40;
- ``suggested_label``: the out-of-fold argmax.

The summary adds cleanlab's estimate of the noise rate, 1 − trace of the estimated joint
distribution of given and true labels (``cleanlab.count.estimate_joint``); it is filled in
when the audit has been computed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from .base import Method, register_method


@dataclass
class ConfidentLearningHparams:
    """Confident-learning hyperparameters, each described by its metadata ``help``."""

    folds: int = field(
        default=4,
        metadata={
            "help": "K of the K-fold split (`--folds`), from 2 to 20: K cross-entropy networks, each held out from "
            "one fold.",
            "min": 2,
            "max": 20,
        },
    )
    select: str = field(
        default="best",
        metadata={
            "help": "which weights each network ends with: `best` (the epoch whose held-out predictions agree "
            "most with the fold's given labels) or `last` (the final weights).",
            "choices": ("best", "last"),
        },
    )


def stratified_folds(labels: torch.Tensor, folds: int, seed: int) -> torch.Tensor:
    """Returns the fold (0…folds−1) of each sample: within each class, a
    shuffled round-robin, so every fold holds about 1/folds of every class.
    """
    generator = torch.Generator().manual_seed(seed)
    labels = labels.cpu()
    fold = torch.empty(len(labels), dtype=torch.int64)
    for k in labels.unique().tolist():
        members = torch.nonzero(labels == k).flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        fold[members] = (torch.arange(len(members)) + k) % folds  # the offset spreads the remainders over the folds
    return fold


@register_method
class ConfidentLearning(Method):
    name = "confident-learning"
    description = (
        "K-fold cross-entropy networks give out-of-fold probabilities; cleanlab's confident learning finds the "
        "label issues"
    )
    columns = {
        "cl_label_quality": "cleanlab's label quality score (self confidence) of the given label",
        "cl_label_issue": "cleanlab's own flag (find_label_issues, pruning by noise rate)",
        "cl_fold": "the fold the sample was held out in (the network that predicted it)",
    }
    progress_figures = {"held_out_agreement": "held-out agreement"}
    num_networks = ConfidentLearningHparams.folds
    option_aliases = {"--folds": "folds"}
    unused_parameters = True  # a process's share of a batch may hold no sample outside some fold
    Hparams = ConfidentLearningHparams

    def __init__(self, hparams, setup):
        self.num_networks = hparams.folds
        super().__init__(hparams, setup)
        self.fold = stratified_folds(setup.given_labels, hparams.folds, setup.seed).to(setup.device)
        self.best_agreement = torch.full((hparams.folds,), -1.0)
        self.best_epoch = torch.zeros(hparams.folds, dtype=torch.int64)
        self.best_weights = [cpu_copy(net) for net in self.networks]
        self.estimates: dict = {}

    def training_step(self, batch, epoch):
        views, fold = batch.weak, self.fold[batch.index]
        loss = views.new_zeros(())
        for f, net in enumerate(self.networks):
            trains_on = fold != f
            if trains_on.any():
                loss = loss + F.cross_entropy(net(views[trains_on]), batch.label[trains_on])
        return loss

    def end_epoch(self, epoch, evaluate):
        probs = evaluate()  # out of fold: each sample from the network that does not train on it
        fold = self.fold.cpu()
        hits = (probs.argmax(dim=1) == self.setup.given_labels.cpu()).float()
        agreement = torch.stack([hits[fold == f].mean() for f in range(self.hparams.folds)])
        if self.hparams.select == "best":
            for f in torch.nonzero(agreement > self.best_agreement).flatten().tolist():
                self.best_agreement[f], self.best_epoch[f] = agreement[f], epoch + 1
                self.best_weights[f] = cpu_copy(self.networks[f])
            if epoch + 1 == self.setup.epochs:
                for net, weights in zip(self.networks, self.best_weights):
                    net.load_state_dict(weights)
        return {"held_out_agreement": float(agreement.mean())}

    def predict(self, x, index=None):
        if index is None:
            return super().predict(x)
        fold = self.fold[index]
        probs = torch.empty(len(x), self.setup.n_classes, device=x.device)
        for f, net in enumerate(self.networks):
            held_out = fold == f
            if held_out.any():
                probs[held_out] = net(x[held_out]).float().softmax(dim=1)
        return probs

    def audit(self, probs):
        # imported here: cleanlab takes seconds to import, which every other command would pay
        from cleanlab.count import estimate_joint
        from cleanlab.filter import find_label_issues
        from cleanlab.rank import get_label_quality_scores

        given = self.setup.given_labels.cpu().numpy()
        pred_probs = np.asarray(probs, dtype=np.float64)
        pred_probs /= pred_probs.sum(axis=1, keepdims=True)
        quality = get_label_quality_scores(given, pred_probs)
        issues = find_label_issues(given, pred_probs, n_jobs=1)
        joint = estimate_joint(given, pred_probs)
        self.estimates = {
            "cleanlab_noise_rate": float(1.0 - np.trace(joint)),
            "cleanlab_label_issues": int(issues.sum()),
        }
        return {
            "clean_prob": quality,
            "suggested_label": pred_probs.argmax(axis=1),
            "cl_label_quality": quality,
            "cl_label_issue": issues,
            "cl_fold": self.fold.cpu().numpy(),
        }

    def summary(self):
        sizes = torch.bincount(self.fold, minlength=self.hparams.folds).tolist()
        chosen = {"best_epochs": self.best_epoch.tolist()} if self.hparams.select == "best" else {}
        return {
            "folds": self.hparams.folds,
            "fold_sizes": sizes,
            "select": self.hparams.select,
            **chosen,
            **self.estimates,
        }

    def state_dict(self):
        best = {"agreement": self.best_agreement, "epoch": self.best_epoch, "weights": self.best_weights}
        return {**super().state_dict(), "best": best}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.best_agreement = state["best"]["agreement"].clone()
        self.best_epoch = state["best"]["epoch"].clone()
        self.best_weights = state["best"]["weights"]


def cpu_copy(network) -> dict:
    """Returns a CPU copy of `network`'s state dict (weights and batch-norm buffers)."""
    return {name: tensor.detach().cpu().clone() for name, tensor in network.state_dict().items()}
