"""When a method's warm-up ends: the network has left the early-learning phase.

Robust methods refine labels, select samples or reweight them with the network's own
predictions, so they help only once those predictions are worth more than a guess. A network
trained on noisy labels first learns the patterns most labels agree on (early learning) and only
later memorises the wrong labels; how many epochs early learning takes depends on the images,
the labels and the backbone, not on a share of ``--epochs``. On 5,000 CIFAR-10 photos a small
network is still in it after 20 epochs, on scikit-learn's digits it leaves it after a few.

:class:`EarlyLearning` reads the signal from the training pass itself, at no extra cost: after
every epoch, the share of samples whose predicted class changed since the previous epoch
(``prediction_changes``). While the network learns what the images show, its predictions
settle and the share falls from epoch to epoch; once it has learned what it can at the current
learning rate, the share stops falling, and it rises again when the network starts memorising
wrong labels (their predictions swing between the given and the true class). The robust phase
starts at the end of the first epoch, no earlier than the method's paper's own warm-up, after
which the share has set no new low for :data:`PATIENCE` epochs. ``fit_given`` (the share of
samples predicted as their given label) is logged beside it.

Measured with ``lnlclean benchmark … --method ce --diagnose`` (``docs/diagnostics.md``): on
digits with 40 % symmetric noise the share falls from 0.62 to its low of 0.14 at epoch 17 and
then rises (0.16–0.27 from epoch 29 on) while ``ce`` memorises; on 5,000 CIFAR-10 photos it
is still falling at epoch 20 (0.72 → 0.25), so a 20-epoch run never leaves the warm-up and the
method trains as cross-entropy does, and says so. With 60 epochs it stalls while the learning
rate is still high, and the warm-ups end after 25–27 epochs.

A ``--<method>-warmup N`` option fixes the warm-up at N epochs instead. Heads on frozen
features (``--features frozen``) skip the signal and warm up for the paper's share of the epochs:
on 5,000 CIFAR-10 embeddings their share of changed predictions kept falling with the learning
rate, and 6 of 30 robust runs left the warm-up in their last two epochs or never.
"""

from __future__ import annotations

import torch

from ..errors import UserError
from .base import SampleState, Setup

PATIENCE = 3  # epochs without a new low in the share of changed predictions that end the warm-up
UNSEEN = -1  # previous prediction of a sample not yet trained on


class EarlyLearning:
    """Tracks a method's training pass and says when its robust phase starts.

    Args:
        setup: the method's setup (sizes, device, processes).
        state: the method's per-sample state; the previous predictions are kept there, so they
            are checkpointed and shared between processes with the rest.
        minimum: the fewest warm-up epochs (the method's paper's own warm-up); None for a
            method without a warm-up that only logs the signals (cross-entropy).
        fixed: a ``--<method>-warmup`` value: exactly that many warm-up epochs; None for the signal.
    """

    def __init__(self, setup: Setup, state: SampleState, minimum: int | None, fixed: int | None = None):
        self.setup = setup
        self.minimum = minimum
        self.previous = state.add(
            "phase_previous_prediction", torch.full((setup.n_samples,), UNSEEN, dtype=torch.int32, device=setup.device)
        )
        # this epoch's samples seen, predicted as given, seen with a previous prediction, changed since it
        self.counts = torch.zeros(4, device=setup.device)
        if fixed is None and setup.features is not None:
            # a head on pretrained embeddings predicts well from its first epochs, and its share of
            # changed predictions falls with the learning rate alone: the paper's warm-up is the warm-up
            fixed = minimum
        self.fixed = fixed
        self.started: int | None = fixed  # 0-based epoch whose training was the first robust one
        self.changes: list[float] = []  # prediction_changes of every epoch that had one

    def record(self, index: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """Counts one mini-batch's predictions (`logits` B×K of the samples `index`, given `labels`). Returns None."""
        predicted = logits.detach().argmax(dim=1)
        previous = self.previous[index]
        known = previous != UNSEEN
        self.counts += torch.stack(
            [
                torch.ones_like(predicted).sum(),
                (predicted == labels).sum(),
                known.sum(),
                (known & (predicted != previous)).sum(),
            ]
        ).float()
        self.previous[index] = predicted.to(self.previous.dtype)

    def end_epoch(self, epoch: int) -> dict[str, float | None]:
        """Closes `epoch` (0-based): decides whether the next epoch is robust.

        Returns the epoch's signals to log: ``fit_given``, ``prediction_changes`` (None in the
        first epoch, with nothing to compare) and, for a method with a warm-up, ``warmup_over``
        (1.0 from the epoch that ends the warm-up on, else 0.0).
        """
        seen, fit, compared, changed = (float(value) for value in self.setup.world.sum(self.counts))
        self.counts.zero_()
        changes = changed / compared if compared else None
        if changes is not None:
            self.changes.append(changes)
        if self.started is None and self._settled(epoch):
            self.started = epoch + 1
        signals = {"fit_given": fit / seen if seen else None, "prediction_changes": changes}
        if self.minimum is None:
            return signals
        return {**signals, "warmup_over": float(self.robust(epoch + 1))}

    def _settled(self, epoch: int) -> bool:
        """Returns whether the signal ends the warm-up with `epoch` (0-based); a fixed warm-up was set at the start."""
        done = epoch + 1
        if self.minimum is None or done < self.minimum or len(self.changes) <= PATIENCE:
            return False
        return min(self.changes[-PATIENCE:]) >= min(self.changes[:-PATIENCE])

    def robust(self, epoch: int) -> bool:
        """Returns whether `epoch` (0-based) trains in the robust phase."""
        return self.started is not None and epoch >= self.started

    def restore(self, history: list[dict]) -> None:
        """Recovers the signals and when the robust phase started from a resumed run's `history`. Returns None."""
        if self.fixed is None:
            self.started = next((entry["epoch"] for entry in history if entry.get("warmup_over")), None)
        self.changes = [entry["prediction_changes"] for entry in history if entry.get("prediction_changes") is not None]

    def warmup_epochs(self) -> int | None:
        """Returns how many epochs the warm-up lasted, or None while (or if) it never ended."""
        return self.started


def auto_warmup(given: int | None, share: float, epochs: int) -> int:
    """Returns the warm-up length: `given` (a ``--<method>-warmup``
    value) or, when it is None, `share` of `epochs`, at least 1.
    """
    return given if given is not None else max(1, round(share * epochs))


def check_warmup(method: str, given: int | None, warmup: int, epochs: int, otherwise: str) -> None:
    """Raises UserError when a given ``--<method>-warmup`` leaves none of the `epochs` for the method's main phase.

    `given` is the ``--<method>-warmup`` value (None when auto: a run too short for the main
    phase then trains as its warm-up does, and the audit warns ``still-learning``); `otherwise`
    says what goes wrong with the given value. Returns None.
    """
    if given is None or warmup < epochs:
        return
    raise UserError(f"--{method}-warmup {warmup}: must be below --epochs {epochs}, or {otherwise}")
