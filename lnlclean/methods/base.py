"""The Method interface, the per-sample state holder, and the method registry.

A method is one file that defines a :class:`Method` subclass and registers it with
:func:`register_method`. The engine owns everything shared — devices, data, optimiser,
schedule, checkpoints, progress — and calls the method at three points:

- ``training_step(batch, epoch)`` returns the loss of one mini-batch;
- ``end_epoch(epoch, evaluate)`` updates per-sample or global state once an epoch ends and
  returns numbers worth logging (``evaluate()`` runs a clean, eval-mode pass over all
  training samples when the method needs one);
- ``audit(probs)`` turns what the method learned into per-sample columns.

Per-sample state lives in a :class:`SampleState`: tensors whose first dimension is the
sample index ``i`` of the manifest, saved in checkpoints with the networks.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from functools import cached_property
from typing import Callable, ClassVar

import numpy as np
import torch
from torch import nn

from ..data.augment import Augmenter
from ..distributed import World
from ..errors import UserError


@dataclass
class Batch:
    """One mini-batch. Views are computed on first use, so a method pays only for what it reads.

    Attributes:
        index: manifest index of each sample (int64, B).
        label: given label of each sample (int64, B).
        raw: uint8 images B×H×W×C on the training device.
        augmenter: turns `raw` into normalised views.
        generator: the epoch's random generator on the training device.
    """

    index: torch.Tensor
    label: torch.Tensor
    raw: torch.Tensor
    augmenter: Augmenter
    generator: torch.Generator

    @cached_property
    def weak(self) -> torch.Tensor:
        """Returns the weakly augmented view (translate + flip)."""
        return self.augmenter.weak(self.raw, self.generator)

    @cached_property
    def strong(self) -> torch.Tensor:
        """Returns the strongly augmented view (weak + colour jitter + cutout)."""
        return self.augmenter.strong(self.raw, self.generator)


@dataclass
class Setup:
    """What a method is told about the run when it is created.

    Attributes:
        n_samples, n_classes: dataset size and number of classes.
        given_labels: the given label of every sample (int64, N, on `device`).
        candidates: candidate-label sets as an N×K {0,1} tensor, or None.
        epochs: the total number of training epochs.
        noise_rate: the share of wrong labels the user expects (``--noise-rate``), or None.
        true_labels: the true labels (int64, N) in benchmarks, else None. Methods may log
            figures computed from them (for example the precision of a selection), never train on them.
        device: the training device.
        build_network: returns a fresh backbone on `device` with `n_classes` outputs.
        world: the processes of the run. A method that sums or averages over a mini-batch
            outside its loss (a class prior, selection counts) uses ``world.sum`` or
            ``world.row_mean``, so every process sees the whole mini-batch.
    """

    n_samples: int
    n_classes: int
    given_labels: torch.Tensor
    candidates: torch.Tensor | None
    epochs: int
    device: torch.device
    build_network: Callable[[], nn.Module]
    noise_rate: float | None = None
    true_labels: torch.Tensor | None = None
    world: World = field(default_factory=World)


class SampleState:
    """Named tensors with one row per sample (leading dimension N), saved with checkpoints.

    In a run of several processes each trains on a part of every mini-batch; after each step
    the engine sends the rows of the samples each process trained on to all the others
    (:meth:`pack`, :meth:`unpack`), so every process holds the same state. That is why a
    ``training_step`` may write only the rows of its own batch (``batch.index``); updates over
    all samples belong in ``end_epoch``, which every process runs on the same state.
    """

    def __init__(self) -> None:
        self._tensors: dict[str, torch.Tensor] = {}

    def add(self, name: str, tensor: torch.Tensor) -> torch.Tensor:
        """Registers `tensor` (first dimension N) under `name`. Returns the tensor."""
        self._tensors[name] = tensor
        return tensor

    def __getitem__(self, name: str) -> torch.Tensor:
        return self._tensors[name]

    def __len__(self) -> int:
        return len(self._tensors)

    def nbytes(self) -> int:
        """Returns the memory the per-sample tensors take, in bytes."""
        return sum(tensor.numel() * tensor.element_size() for tensor in self._tensors.values())

    def pack(self, index: torch.Tensor) -> torch.Tensor:
        """Returns the rows `index` of every tensor as bytes: uint8 B×R, R the bytes of one sample's state."""
        pieces = [tensor[index.to(tensor.device)].reshape(len(index), -1) for tensor in self._tensors.values()]
        return torch.cat([piece.to(index.device).contiguous().view(torch.uint8) for piece in pieces], dim=1)

    def unpack(self, index: torch.Tensor, packed: torch.Tensor) -> None:
        """Writes rows packed by :meth:`pack` back into the tensors at `index`. Returns None."""
        start = 0
        for tensor in self._tensors.values():
            width = tensor[0].numel() * tensor.element_size()
            piece = packed[:, start:start + width].contiguous().view(tensor.dtype).view(len(index), *tensor.shape[1:])
            tensor[index.to(tensor.device)] = piece.to(tensor.device)
            start += width

    def checksum(self) -> str:
        """Returns a SHA-256 hex digest of every tensor's name, shape, dtype and bytes (equal digests, equal state)."""
        digest = hashlib.sha256()
        for name, tensor in self._tensors.items():
            digest.update(f"{name}|{tuple(tensor.shape)}|{tensor.dtype}".encode())
            digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Returns the tensors by name (CPU copies)."""
        return {name: tensor.detach().cpu() for name, tensor in self._tensors.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Copies saved tensors into the registered ones, in place. Returns None."""
        for name, tensor in self._tensors.items():
            tensor.copy_(state[name].to(tensor.device))


class Method:
    """Base class of every learning-with-noisy-labels method.

    Subclasses set the class attributes, define ``training_step``, and may override
    ``end_epoch``, ``predict``, ``audit`` and ``summary``.

    Class attributes:
        name: the ``--method`` value.
        description: one line for ``lnlclean methods``.
        columns: the method's own audit columns, name → meaning.
        num_networks: how many backbones the method trains (1 or 2).
        reads_candidates: whether the method learns from candidate-label sets (a ``candidates``
            column); other methods train on the ``label`` column only.
        unused_parameters: whether a training step may leave some network parameters without
            a gradient (an unused head); DistributedDataParallel then looks for them every step.
        Hparams: a dataclass of hyperparameters with the paper's defaults; every field is
            settable from the command line as ``--<name>-<field>``.
    """

    name: ClassVar[str]
    description: ClassVar[str]
    columns: ClassVar[dict[str, str]] = {}
    num_networks: ClassVar[int] = 1
    reads_candidates: ClassVar[bool] = False
    unused_parameters: ClassVar[bool] = False
    Hparams: ClassVar[type]

    def __init__(self, hparams, setup: Setup):
        self.hparams = hparams
        self.setup = setup
        self.state = SampleState()
        self.networks = nn.ModuleList(setup.build_network() for _ in range(self.num_networks))
        self.history: list[dict] = []

    @classmethod
    def check_settings(cls, hparams, config) -> None:
        """Raises UserError naming the option when `hparams` cannot work with the run settings `config`.

        Called when the run settings are validated, before anything is read or written.
        Returns None; the default accepts every setting.
        """

    def training_step(self, batch: Batch, epoch: int) -> torch.Tensor:
        """Returns the scalar loss of `batch` at `epoch` (0-based)."""
        raise NotImplementedError

    def end_epoch(self, epoch: int, evaluate: Callable[[], torch.Tensor]) -> dict:
        """Updates state after `epoch`. Returns numbers to log for the epoch (may be empty)."""
        return {}

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Returns class probabilities B×K for normalised images `x`: the mean over the networks."""
        return torch.stack([net(x).float().softmax(dim=1) for net in self.networks]).mean(dim=0)

    def audit(self, probs: np.ndarray) -> dict[str, np.ndarray]:
        """Returns per-sample columns from the final probabilities `probs` (N×K).

        Holds ``clean_prob`` (float, N) and ``suggested_label`` (int class index, N); may hold
        ``suggested_prob`` (default: the probability of the suggested label) and the method's
        own columns listed in `columns`. The default trusts `probs`: ``clean_prob`` is the
        probability of the given label and ``suggested_label`` the argmax. Methods with other
        signals override it, usually extending ``super().audit(probs)``.
        """
        given = self.setup.given_labels.cpu().numpy()
        return {"clean_prob": probs[np.arange(len(given)), given], "suggested_label": probs.argmax(axis=1)}

    def summary(self) -> dict:
        """Returns method-specific entries for summary.json (default: none)."""
        return {}

    def state_dict(self) -> dict:
        """Returns everything needed to resume the method: networks and per-sample state."""
        return {"networks": self.networks.state_dict(), "samples": self.state.state_dict(), "history": self.history}

    def load_state_dict(self, state: dict) -> None:
        """Restores what `state_dict` returned. Returns None."""
        self.networks.load_state_dict(state["networks"])
        self.state.load_state_dict(state["samples"])
        self.history = list(state["history"])


def auto_warmup(given: int | None, share: float, epochs: int) -> int:
    """Returns the warm-up length: `given` (a ``--<method>-warmup`` value) or, when it is None, `share` of `epochs`, at least 1."""
    return given if given is not None else max(1, round(share * epochs))


def check_warmup(method: str, given: int | None, warmup: int, epochs: int, then: str, otherwise: str) -> None:
    """Raises UserError when a warm-up of `warmup` epochs leaves none of the `epochs` for the method's main phase.

    `given` is the ``--<method>-warmup`` value (None when auto); `then` names the main phase
    (for an auto warm-up), `otherwise` what goes wrong without it (for a given one). Returns None.
    """
    if warmup < epochs:
        return
    if given is None:
        raise UserError(f"--epochs {epochs}: --method {method} needs at least 2 (warm-up, then {then})")
    raise UserError(f"--{method}-warmup {warmup}: must be below --epochs {epochs}, or {otherwise}")


METHODS: dict[str, type[Method]] = {}


def register_method(cls: type[Method]) -> type[Method]:
    """Class decorator that makes `cls` available as ``--method cls.name``. Returns `cls`."""
    METHODS[cls.name] = cls
    return cls


def hparam_fields(method: type[Method]) -> list[dataclasses.Field]:
    """Returns the hyperparameter fields of `method` (its Hparams dataclass)."""
    return list(dataclasses.fields(method.Hparams))
