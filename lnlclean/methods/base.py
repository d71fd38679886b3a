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
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from ..data.augment import Augmenter
from ..distributed import World


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
        tables: where the method's N×K per-sample tables go (``--state-dtype``, ``--state-on``);
            the default, without a budget, keeps them float32 on `device`.
        seed: the run's ``--seed``, for a method's own random choices (such as folds).
        features: with ``--features frozen``, the standardised embedding of every training sample
            (float32 N×D on `device`), for a method that reads them directly; else None.
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
    tables: TablePolicy = field(default_factory=lambda: TablePolicy())
    seed: int = 0
    features: torch.Tensor | None = None


TABLE_CHUNK = 65_536  # rows per pass when a table is filled or read whole


@dataclass
class TablePolicy:
    """Where per-sample tables (N×K floats such as soft labels) are kept.

    Attributes:
        dtype: ``float32``, ``float16`` or ``auto`` (float32 while the tables fit in `budget`,
            else float16).
        place: ``device`` (the training device), ``cpu`` (CPU memory, pinned when training on
            CUDA) or ``auto`` (the device while the tables fit in `budget`, else the CPU).
        budget: bytes of the training device the tables may take in ``auto`` (None: no limit).
    """

    dtype: str = "auto"
    place: str = "auto"
    budget: int | None = None

    def choose(self, entries: int, device: torch.device) -> tuple[torch.dtype, torch.device]:
        """Returns (dtype, device) for a new table of `entries` numbers
        and takes its bytes from the budget when it goes on `device`.
        """
        fits = lambda size: self.budget is None or entries * size <= self.budget  # noqa: E731
        dtype = {"float32": torch.float32, "float16": torch.float16}.get(self.dtype) or (
            torch.float32 if fits(4) else torch.float16
        )
        size = torch.finfo(dtype).bits // 8
        on_device = self.place == "device" or (self.place == "auto" and fits(size))
        if not on_device:
            return dtype, torch.device("cpu")
        if self.budget is not None:
            self.budget -= entries * size
        return dtype, device


class SampleTable:
    """An N×K table of per-sample floats, stored as `data` where its :class:`TablePolicy` put it.

    Rows are read and written a mini-batch at a time as float32 on the training device, so a
    method's code is the same whether the table is float32 on the GPU or float16 in CPU memory.
    """

    def __init__(self, data: torch.Tensor, device: torch.device):
        self.data = data
        self.device = device

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index) -> torch.Tensor:
        """Returns a float32 copy of the rows `index` (a tensor or a slice) on the training device."""
        return self.data[self._locate(index)].to(self.device, torch.float32, non_blocking=True, copy=True)

    def __setitem__(self, index, values: torch.Tensor) -> None:
        self.data[self._locate(index)] = values.to(self.data.device, self.data.dtype)

    def _locate(self, index):
        return index.to(self.data.device) if isinstance(index, torch.Tensor) else index

    def chunks(self) -> list[slice]:
        """Returns the row slices of `TABLE_CHUNK` rows (the last one shorter) that cover the table."""
        return [slice(start, min(start + TABLE_CHUNK, len(self))) for start in range(0, len(self), TABLE_CHUNK)]

    def fill(self, rows_of: Callable[[slice], torch.Tensor]) -> None:
        """Sets every row, a chunk at a time, to `rows_of(rows)` (float rows for the slice `rows`). Returns None."""
        for rows in self.chunks():
            self[rows] = rows_of(rows)

    def map(self, function: Callable[[torch.Tensor, slice], torch.Tensor]) -> torch.Tensor:
        """Returns `function(values, rows)` over the table, a
        chunk of float32 rows at a time, concatenated on the CPU.
        """
        return torch.cat([function(self[rows], rows).cpu() for rows in self.chunks()])


class SampleState:
    """Named tensors with one row per sample (leading dimension N), saved with checkpoints.

    In a run of several processes each trains on a part of every mini-batch; after each step
    the engine sends the rows of the samples each process trained on to all the others
    (:meth:`pack`, :meth:`unpack`), so every process holds the same state. That is why a
    ``training_step`` may write only the rows of its own batch (``batch.index``); updates over
    all samples belong in ``end_epoch``, which every process runs on the same state.
    """

    def __init__(self, device: torch.device | None = None, tables: TablePolicy | None = None) -> None:
        self._tensors: dict[str, torch.Tensor] = {}
        self.device = device or torch.device("cpu")
        self.tables = tables or TablePolicy()  # no budget: float32 tables on `device`

    def add(self, name: str, tensor: torch.Tensor) -> torch.Tensor:
        """Registers `tensor` (first dimension N) under `name`. Returns the tensor."""
        self._tensors[name] = tensor
        return tensor

    def add_table(self, name: str, rows: int, columns: int) -> SampleTable:
        """Registers a zero rows×columns float table under `name`,
        stored as the table policy says. Returns the table.
        """
        dtype, device = self.tables.choose(rows * columns, self.device)
        pin = device.type == "cpu" and self.device.type == "cuda"
        data = torch.zeros(rows, columns, dtype=dtype, device=device, pin_memory=pin)
        return SampleTable(self.add(name, data), self.device)

    def __getitem__(self, name: str) -> torch.Tensor:
        return self._tensors[name]

    def __len__(self) -> int:
        return len(self._tensors)

    def nbytes(self, device_type: str | None = None) -> int:
        """Returns the memory the per-sample tensors take, in bytes
        (only those on `device_type` when given, e.g. ``cpu``).
        """
        return sum(
            tensor.numel() * tensor.element_size()
            for tensor in self._tensors.values()
            if device_type is None or tensor.device.type == device_type
        )

    def pack(self, index: torch.Tensor) -> torch.Tensor:
        """Returns the rows `index` of every tensor as bytes: uint8 B×R, R the bytes of one sample's state."""
        pieces = [tensor[index.to(tensor.device)].reshape(len(index), -1) for tensor in self._tensors.values()]
        return torch.cat([piece.to(index.device).contiguous().view(torch.uint8) for piece in pieces], dim=1)

    def unpack(self, index: torch.Tensor, packed: torch.Tensor) -> None:
        """Writes rows packed by :meth:`pack` back into the tensors at `index`. Returns None."""
        start = 0
        for tensor in self._tensors.values():
            width = tensor[0].numel() * tensor.element_size()
            piece = packed[:, start : start + width].contiguous().view(tensor.dtype).view(len(index), *tensor.shape[1:])
            tensor[index.to(tensor.device)] = piece.to(tensor.device)
            start += width

    def checksum(self) -> str:
        """Returns a SHA-256 hex digest of every tensor's name, shape, dtype and bytes (equal digests, equal state)."""
        digest = hashlib.sha256()
        for name, tensor in self._tensors.items():
            digest.update(f"{name}|{tuple(tensor.shape)}|{tensor.dtype}".encode())
            digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
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
        matrix_axes: K×K matrices of the method's summary(), key → (what rows are, what columns are).
        num_networks: how many backbones the method trains (0 for a method that trains nothing).
        progress_figures: figures of the epoch's log shown in progress lines, key → label.
        needs_embeddings: whether the method only works on ``--features frozen`` (it reads the
            embeddings themselves, ``Setup.features``).
        reads_candidates: whether the method learns from candidate-label sets (a ``candidates``
            column); other methods train on the ``label`` column only.
        unused_parameters: whether a training step may leave some network parameters without
            a gradient (an unused head); DistributedDataParallel then looks for them every step.
        option_aliases: short command-line options for Hparams fields, option → field (for
            example ``{"--folds": "folds"}``).
        Hparams: a dataclass of hyperparameters with the paper's defaults; every field is
            settable from the command line as ``--<name>-<field>`` and described by its
            metadata ``help`` (with ``min``/``max`` or ``choices`` where it has a range).
    """

    name: ClassVar[str]
    description: ClassVar[str]
    columns: ClassVar[dict[str, str]] = {}
    matrix_axes: ClassVar[dict[str, tuple[str, str]]] = {}
    num_networks: ClassVar[int] = 1
    progress_figures: ClassVar[dict[str, str]] = {}
    needs_embeddings: ClassVar[bool] = False
    reads_candidates: ClassVar[bool] = False
    unused_parameters: ClassVar[bool] = False
    option_aliases: ClassVar[dict[str, str]] = {}
    Hparams: ClassVar[type]

    def __init__(self, hparams, setup: Setup):
        self.hparams = hparams
        self.setup = setup
        self.state = SampleState(setup.device, setup.tables)
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

    def predict(self, x: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        """Returns class probabilities B×K for normalised images `x`: the mean over the networks.

        `index` holds the training-sample index of each image in the final pass over the
        training set (None for other images); a method whose answer depends on the sample (out-of-fold
        predictions) reads it, the others ignore it.
        """
        return torch.stack([net(x).float().softmax(dim=1) for net in self.networks]).mean(dim=0)

    def audit(self, probs: np.ndarray) -> dict[str, np.ndarray]:
        """Returns per-sample columns from the final probabilities `probs` (N×K).

        Holds ``clean_prob`` (float, N: the method's own signal that the given label is right,
        higher meaning more likely; it becomes the audit's ``label_score``, while the audit's
        ``clean_prob`` is calibrated from `probs`, see :mod:`lnlclean.report.verdicts`),
        ``suggested_label`` (int class index, N: the method's refurbished label) and the method's
        own columns listed in `columns`.
        The default trusts `probs`: ``clean_prob`` is the probability of the given label and
        ``suggested_label`` the argmax. Methods with other signals override it, usually
        extending ``super().audit(probs)``.
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


def target_accuracy(targets: SampleTable, true_labels: torch.Tensor | None) -> dict[str, float]:
    """Returns ``{"target_accuracy": share of samples whose soft target's top
    class is the true label}``, or {} without true labels (benchmarks only).
    """
    if true_labels is None:
        return {}
    hits = targets.map(lambda rows_targets, rows: (rows_targets.argmax(dim=1) == true_labels[rows]).float())
    return {"target_accuracy": float(hits.mean())}


METHODS: dict[str, type[Method]] = {}


def register_method(cls: type[Method]) -> type[Method]:
    """Class decorator that makes `cls` available as ``--method cls.name``. Returns `cls`."""
    METHODS[cls.name] = cls
    return cls


def hparam_fields(method: type[Method]) -> list[dataclasses.Field]:
    """Returns the hyperparameter fields of `method` (its Hparams dataclass)."""
    return list(dataclasses.fields(method.Hparams))
