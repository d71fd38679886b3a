"""The one training loop every method runs in.

``fit`` owns the device, data movement, optimiser, learning-rate schedule, mixed precision,
progress, per-epoch checkpoints and the final inference pass. A method only supplies its
loss and its per-sample bookkeeping (see :mod:`lnlclean.methods.base`).

Reproducibility: every epoch draws its sample order and augmentations from generators
seeded by ``(seed, epoch)``, and a checkpoint holds networks, optimiser, method state and
(mid-epoch, after a stop signal) the step and the generator's state, so ``--resume``
continues an interrupted CPU run to the same result.

Several processes (``torchrun``, see :mod:`lnlclean.distributed`): every process draws the
same sample order; each mini-batch is split between the processes (process r takes rows
r, r + P, … of the sorted batch), the networks are wrapped in DistributedDataParallel, which
averages gradients, and after every step the per-sample state rows each process updated are
sent to all (:meth:`~lnlclean.methods.base.SampleState.pack`). ``--batch-size`` is the size of
the whole mini-batch, so the steps, the schedule and the method's epochs are those of a
single-process run. Stop signals and checkpoint times are agreed on every step, so all
processes stop at the same step; only rank 0 writes checkpoints.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
import time
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from . import budget
from .config import RunConfig, method_hparams
from .data.augment import Augmenter
from .data.features import FeatureAugmenter, FeatureStore
from .data.store import ImageStore
from .distributed import World
from .distributed import current as current_world
from .errors import UserError
from .fileio import atomic_path
from .interrupt import Interrupted, deferred_stop
from .memory import available_ram, check_host_memory
from .methods.base import Batch, Method, Setup, TablePolicy
from .models import build_backbone, feature_head, input_stats
from .progress import Reporter

CHECKPOINT_FORMAT = 5
EVAL_BATCH = 512
RESUMABLE_CHANGES = (
    "device",
    "workers",
    "compile",
    "state_dtype",
    "state_on",
    "max_ram",
    "threshold",
)  # settings a resume may change (threshold: a verdict setting)
CHECKPOINT_SECONDS = 600.0  # also checkpoint mid-epoch this often, so a crash or kill -9 loses at most this much


@dataclass
class TrainData:
    """Training images and labels as the engine consumes them.

    Attributes:
        images: uint8 N×H×W×C (a memory map is fine).
        labels: given labels, int64 N.
        n_classes: number of classes K.
        candidates: optional N×K {0,1} candidate sets (partial labels).
        test_images, test_labels: optional held-out split for test accuracy.
        flip: whether horizontal flips are label-preserving for this data.
        true_labels: the true labels in benchmarks (for the methods' logs only), else None.
        fingerprint: identifies the data, so a checkpoint is only resumed on the same data.
        embedded: `images` and `test_images` hold embeddings (float32 N×V×D, see
            :mod:`lnlclean.embeddings`) rather than pixels; the networks are then heads on them.
    """

    images: np.ndarray
    labels: np.ndarray
    n_classes: int
    candidates: np.ndarray | None = None
    test_images: np.ndarray | None = None
    test_labels: np.ndarray | None = None
    flip: bool = True
    fingerprint: str = ""
    true_labels: np.ndarray | None = None
    embedded: bool = False


@dataclass
class FitResult:
    """What training produced.

    Attributes:
        method: the trained method (its networks and per-sample state).
        probs: final eval-mode class probabilities of every training sample (float32 N×K).
        test_accuracy: accuracy on the test split, or None without one.
        history: one dict per epoch (seconds, loss, lr and the method's own numbers).
        seconds: wall time of the whole fit, final inference included, with the training time
            of the runs before a resume.
        device: the device trained on, e.g. ``cpu`` or ``cuda (NVIDIA H100)``.
        resumed_from_epoch: epochs already done in the checkpoint resumed from, else None.
        resumed_at: where a resumed run went on, e.g. ``epoch 2, step 14`` (None when not resumed).
        earlier_seconds: training seconds spent before the resume (0 when not resumed).
        epochs: the epochs trained: ``config.epochs``, or those ``config.time_budget`` chose.
    """

    method: Method
    probs: np.ndarray
    test_accuracy: float | None
    history: list[dict]
    seconds: float
    device: str
    resumed_from_epoch: int | None = None
    resumed_at: str | None = None
    earlier_seconds: float = 0.0
    epochs: int = 0


def resolve_device(name: str, world: World = World()) -> torch.device:
    """Returns the torch device for ``auto`` (CUDA when present), ``cpu``, ``cuda`` or ``cuda:N``.

    In a run of several processes, ``auto`` and ``cuda`` mean GPU ``LOCAL_RANK``. Raises
    UserError when CUDA is asked for and not available, for ``cuda:N`` under torchrun, and when
    torchrun started more processes on this machine than it has GPUs.
    """
    if world.distributed and name != "cpu" and (name != "auto" or torch.cuda.is_available()):
        return _process_gpu(name, world)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {name}: CUDA is not available on this machine; use --device cpu or auto")
    return torch.device(name)


def _process_gpu(name: str, world: World) -> torch.device:
    if name not in ("auto", "cuda"):
        raise UserError(
            f"--device {name}: under torchrun each process takes GPU LOCAL_RANK; pass --device cuda, auto or cpu"
        )
    if not torch.cuda.is_available():
        raise UserError(f"--device {name}: CUDA is not available on this machine; use --device cpu or auto")
    if world.local_rank >= torch.cuda.device_count():
        count = torch.cuda.device_count()
        raise UserError(
            f"--nproc-per-node: this machine has {count} GPU(s), one per process; "
            f"pass --nproc-per-node {count} or --device cpu"
        )
    return torch.device("cuda", world.local_rank)


def device_tag(device: torch.device) -> str:
    """Returns a short file-name tag for `device`: ``cpu`` or
    ``cuda-<gpu name>``, e.g. ``cuda-nvidia-h100-80gb-hbm3``.
    """
    if device.type == "cuda":
        return "cuda-" + torch.cuda.get_device_name(device).lower().replace(" ", "-")
    return "cpu"


def describe_device(device: torch.device, world: World = World()) -> str:
    """Returns a human-readable device name, e.g.
    ``cuda (NVIDIA H100 80GB HBM3)``, ``cpu (2 threads)`` or ``… × 4 processes``.
    """
    if device.type == "cuda":
        name = f"cuda ({torch.cuda.get_device_name(device)})"
    else:
        threads = torch.get_num_threads()
        name = f"cpu ({threads} thread{'s' if threads != 1 else ''})"  # one per process under torchrun
    return f"{name} × {world.size} processes" if world.distributed else name


def build_method(
    config: RunConfig,
    data: TrainData,
    device: torch.device,
    world: World = World(),
    method_cls: type[Method] | None = None,
    features: torch.Tensor | None = None,
) -> Method:
    """Returns the configured method (or `method_cls`, a Method subclass taking
    `config.method`'s settings) with freshly initialised networks on `device`.

    An unchecked `config` is checked first (:meth:`RunConfig.checked`); its parsed hyperparameters
    are used as they are. `features` are the standardised training embeddings a method may read
    (``Setup.features``, with ``--features frozen``).
    """
    config = config.checked()
    method_cls = method_cls or config.method_class
    hparams = config.hparams
    in_channels = data.images.shape[-1]

    def build_network() -> torch.nn.Module:
        if data.embedded:
            net = feature_head(in_channels, data.n_classes)
        else:
            net = build_backbone(config.backbone, data.n_classes, in_channels, config.weights)
        net = net.to(device=device, memory_format=torch.channels_last)
        if config.compile:
            net.compile()  # in place: parameter names, and so checkpoints, stay those of the plain network
        return net

    candidates = None if data.candidates is None else torch.as_tensor(data.candidates, device=device)
    setup = Setup(
        n_samples=len(data.labels),
        n_classes=data.n_classes,
        given_labels=torch.tensor(np.asarray(data.labels), dtype=torch.int64, device=device),
        candidates=candidates,
        epochs=config.epochs,
        device=device,
        build_network=build_network,
        noise_rate=config.noise_rate,
        true_labels=None
        if data.true_labels is None
        else torch.as_tensor(np.asarray(data.true_labels), dtype=torch.int64, device=device),
        world=world,
        tables=TablePolicy(config.state_dtype, config.state_on, device_memory(device) // 4),
        seed=config.seed,
        features=features,
    )
    return method_cls(hparams, setup)


def device_memory(device: torch.device) -> int:
    """Returns the free memory of `device` in bytes: the GPU's, or
    the host's available memory for the CPU (2⁶² when unknown).
    """
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    return available_ram() or 2**62


def host_memory_needs(method: Method, data: TrainData, device: torch.device) -> dict[str, int]:
    """Returns what → bytes of host memory that grow with N·K: the
    final probabilities and the per-sample state kept in CPU memory.
    """
    n_rows = len(data.labels) + (0 if data.test_images is None else len(data.test_images))
    on_host = method.state.nbytes("cpu") if device.type == "cuda" else method.state.nbytes()
    return {"final probabilities": 4 * n_rows * data.n_classes, "per-sample state": on_host}


def learning_rate(config: RunConfig, step: int, total_steps: int, steps_per_epoch: int) -> float:
    """Returns the learning rate at optimiser step `step` (0-based) of `total_steps`.

    ``cosine``: linear warm-up over the first epoch (at most a tenth of training), then cosine
    decay to zero. ``step``: ÷10 at 50% and again at 75% of training. ``constant``: `config.lr`.
    """
    if config.schedule == "constant":
        return config.lr
    if config.schedule == "step":
        passed = sum(step >= fraction * total_steps for fraction in (0.5, 0.75))
        return config.lr * 0.1**passed
    warm = max(1, min(steps_per_epoch, total_steps // 10))
    if step < warm:
        return config.lr * (step + 1) / warm
    progress = (step - warm) / max(1, total_steps - warm)
    return config.lr * 0.5 * (1 + math.cos(math.pi * progress))


def steps_in_epoch(n_samples: int, batch_size: int, processes: int = 1) -> int:
    """Returns the number of mini-batches per epoch: every sample once, except a last
    batch too small to give each of the `processes` two images (batch norm needs two).
    """
    full, rest = divmod(n_samples, batch_size)
    return max(1, full + (rest >= 2 * processes))


def checkpoint_identity(config: RunConfig, data: TrainData) -> dict:
    """Returns what must match for a checkpoint to be resumed: method, settings and data."""
    settings = {k: v for k, v in config.to_dict().items() if k not in RESUMABLE_CHANGES}
    return {"format": CHECKPOINT_FORMAT, "data": data.fingerprint, "settings": settings}


def fit(
    data: TrainData,
    config: RunConfig,
    reporter: Reporter | None = None,
    checkpoint_path: Path | None = None,
    resume: bool = False,
    method_cls: type[Method] | None = None,
    diagnose: Callable[[int, np.ndarray], dict] | None = None,
) -> FitResult:
    """Trains `config.method` (or `method_cls`, an unregistered variant
    of it) on `data` and returns the final per-sample probabilities.

    A checkpoint is written atomically to `checkpoint_path` after every epoch, and within an
    epoch whenever :data:`CHECKPOINT_SECONDS` have passed since the last one. On SIGINT or
    SIGTERM the current step finishes, a checkpoint of that step is written and
    :class:`~lnlclean.interrupt.Interrupted` is raised. With `resume`, training continues from
    the checkpoint, mid-epoch included; it must come from the same method, settings and data
    (else UserError). Raises UserError when training diverges. Under torchrun every process
    calls it; they return the same probabilities, and only rank 0 writes checkpoints.
    With `config.time_budget`, the epochs (at most `config.epochs`) are those that fit in it
    (see :mod:`lnlclean.budget`); a resumed run keeps the epochs its checkpoint chose.
    With `diagnose`, after every epoch ``diagnose(epoch, probs)`` (1-based epoch, the training
    probabilities of a clean pass, reused when the method ran one) returns figures that join
    the epoch's history (see :mod:`lnlclean.report.diagnostics`); their time is logged as
    ``diagnose_seconds``, apart from the epoch's ``seconds``.
    """
    reporter = reporter or Reporter(quiet=True)
    started = time.perf_counter()
    config = config.checked()
    world = current_world()
    device = resolve_device(config.device, world)
    _configure_torch(device, config.seed)
    budget_started = time.perf_counter()  # after torch's one-off imports, which are not training
    store = make_store(data.images, data.embedded, device)
    augmenter = make_augmenter(data, config.backbone, device, store)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()
    steps_per_epoch = steps_in_epoch(len(data.labels), config.batch_size, world.size)
    if config.time_budget is not None and (method_cls or config.method_class).num_networks > 0:
        if resume:
            config = replace(config, epochs=_checkpoint_epochs(checkpoint_path, config)).validate()
        else:
            seconds_per_step = time_steps(data, config, store, augmenter, device, world, autocast, method_cls)
            config = replace(
                config,
                epochs=budget.epochs_within(
                    config, seconds_per_step * steps_per_epoch, time.perf_counter() - budget_started, reporter
                ),
            ).validate()
    method = build_method(config, data, device, world, method_cls, training_features(data, store, augmenter))
    needs = host_memory_needs(method, data, device)
    check_host_memory(needs, config.max_ram, processes_on_this_machine(world), memory_remedies(config, device, needs))
    trains = method.num_networks > 0  # a method without networks (knn) has nothing to train: only the final pass
    optimizer = make_optimizer(method, config, data.embedded) if trains else None
    identity = checkpoint_identity(config, data)
    position = Position()
    if resume:
        position = _load_checkpoint(checkpoint_path, identity, method, optimizer)
        reporter.log(f"resuming from {checkpoint_path} at {position.describe()}")
    trainer = training_module(method, world) if trains else None
    labels = torch.tensor(np.asarray(data.labels), dtype=torch.int64)
    total_steps = steps_per_epoch * config.epochs if trains else 0
    estimate = budget.EpochEstimate(
        steps_per_epoch, config.epochs - position.epoch, reporter, quiet=config.time_budget is not None
    )

    def evaluate_train() -> torch.Tensor:
        return predict_all(method, store, augmenter, autocast, world, training_set=True)

    remaining = total_steps - position.epoch * steps_per_epoch - position.step
    description = f"training {config.method} on {describe_device(device, world)}"
    checkpoints = Checkpointer(checkpoint_path if world.is_main else None, identity, method, optimizer)
    earlier_seconds = position.train_seconds
    session_started = time.perf_counter()

    def trained_seconds() -> float:  # training time of this run and of those before a resume
        return earlier_seconds + time.perf_counter() - session_started

    with reporter.task(description, total=remaining, by_milestone=True) as progress, deferred_stop() as stop:
        for epoch in range(position.epoch, config.epochs if trains else 0):
            epoch_started = time.perf_counter()
            method.networks.train()
            generator = torch.Generator(device=device).manual_seed(augmentation_seed(config.seed, epoch, world.rank))
            order = sample_order(len(labels), config.seed, epoch)
            loss_sum = torch.zeros((), device=device)  # Σ over steps of this process's share of the batch loss
            data_seconds = 0.0  # time spent fetching batches: the training step waits for it
            first_step, epoch_earlier = 0, 0.0
            if epoch == position.epoch and position.step:
                _restore_generator(generator, position, world, reporter)
                if world.is_main:  # the saved sum is over all processes; one of them carries it
                    loss_sum += position.loss_sum.to(device)
                first_step, epoch_earlier = position.step, position.epoch_seconds
            for step_in_epoch in range(first_step, steps_per_epoch):
                fetch_started = time.perf_counter()
                batch, whole = make_batch(
                    order, step_in_epoch, config.batch_size, labels, store, augmenter, generator, device, world
                )
                data_seconds += time.perf_counter() - fetch_started
                for group in optimizer.param_groups:
                    group["lr"] = learning_rate(
                        config, epoch * steps_per_epoch + step_in_epoch, total_steps, steps_per_epoch
                    )
                loss_sum += train_step(trainer, optimizer, batch, epoch, len(batch.index) / whole, world, autocast)
                share_samples(method, batch.index, -(-whole // world.size), world)
                progress(1, epoch=epoch + 1)
                estimate.step_done()
                signum, due = world.max_ints(stop.signum or 0, int(checkpoints.due()))
                if signum or due:
                    states = world.gather_cpu(generator.get_state())
                    checkpoints.save(
                        Position(
                            epoch,
                            step_in_epoch + 1,
                            states,
                            world.sum(loss_sum).detach().cpu(),
                            epoch_earlier + time.perf_counter() - epoch_started,
                            trained_seconds(),
                        )
                    )
                    if signum:
                        raise Interrupted(signum, checkpoint_path, epoch + 1, step_in_epoch + 1)
            mean_loss = float(world.sum(loss_sum)) / steps_per_epoch
            if not math.isfinite(mean_loss):
                raise UserError(
                    f"--lr {config.lr}: training diverged (loss {mean_loss} in epoch {epoch + 1}); lower --lr"
                )
            world.broadcast_from_main(method.networks.buffers())
            passes: list[torch.Tensor] = []  # the clean passes end_epoch ran

            def evaluate_once(passes: list[torch.Tensor] = passes) -> torch.Tensor:
                passes.append(evaluate_train())
                return passes[-1]

            with torch.no_grad():
                logged = method.end_epoch(epoch, evaluate_once)
            epoch_seconds = time.perf_counter() - epoch_started
            if diagnose is not None:
                with torch.no_grad():
                    logged = {**logged, **diagnose(epoch + 1, (passes[-1] if passes else evaluate_train()).numpy())}
                logged["diagnose_seconds"] = time.perf_counter() - epoch_started - epoch_seconds
            method.history.append(
                {
                    "epoch": epoch + 1,
                    "loss": mean_loss,
                    "lr": learning_rate(config, (epoch + 1) * steps_per_epoch - 1, total_steps, steps_per_epoch),
                    "seconds": epoch_earlier + epoch_seconds,
                    "data_seconds": data_seconds,
                    **logged,
                }
            )
            progress.milestone(**epoch_figures(method, method.history[-1], config.epochs))
            saving = time.perf_counter()
            checkpoints.save(Position(epoch + 1, train_seconds=trained_seconds()))
            method.history[-1]["checkpoint_seconds"] = (
                time.perf_counter() - saving
            )  # after the save: the checkpoint's history lacks it
    probs = evaluate_train().numpy()
    test_accuracy = None
    if data.test_images is not None and len(data.test_images):
        test_probs = predict_all(
            method, make_store(data.test_images, data.embedded, device), augmenter, autocast, world
        )
        test_accuracy = float((test_probs.argmax(1).numpy() == data.test_labels).mean())
    return FitResult(
        method=method,
        probs=probs,
        test_accuracy=test_accuracy,
        history=method.history,
        seconds=earlier_seconds + time.perf_counter() - started,
        device=describe_device(device, world),
        resumed_from_epoch=position.epoch if resume else None,
        resumed_at=position.describe() if resume else None,
        earlier_seconds=earlier_seconds,
        epochs=config.epochs,
    )


def make_optimizer(method: Method, config: RunConfig, embedded: bool = False) -> torch.optim.Optimizer:
    """Returns the SGD optimiser (Nesterov momentum when `config.momentum` > 0) of the method's networks.

    Heads on embeddings (`embedded`) decay their weight matrices only: decaying their batch-norm
    scales and biases too flattened every head's probabilities, and the robust methods' sample
    selection with them (benchmarks/frozen_heads.py, docs/training.md).
    """
    params = list(method.networks.parameters())
    if embedded:
        params = [
            {"params": [param for param in params if param.ndim > 1]},
            {"params": [param for param in params if param.ndim <= 1], "weight_decay": 0.0},
        ]
    return torch.optim.SGD(
        params,
        lr=config.lr,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
        nesterov=config.momentum > 0,
    )


def sample_order(n_samples: int, seed: int, epoch: int) -> torch.Tensor:
    """Returns the permutation of the `n_samples` samples that `epoch` visits (the same in every process)."""
    return torch.randperm(n_samples, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))


def training_features(data: TrainData, store, augmenter) -> torch.Tensor | None:
    """Returns the standardised embedding of every training sample (N×D on the device), or None for pixels."""
    return augmenter.clean(store.features) if data.embedded else None


def make_store(images, embedded: bool, device: torch.device) -> ImageStore | FeatureStore:
    """Returns what serves batches of `images` on `device`: embeddings when `embedded`, else pixels."""
    return FeatureStore(images, device) if embedded else ImageStore(images, device)


def make_augmenter(
    data: TrainData, backbone: str, device: torch.device, store: ImageStore | FeatureStore
) -> Augmenter | FeatureAugmenter:
    """Returns the views of `data`.

    They are made in feature space for embeddings, standardised by the statistics of the
    embeddings `store` holds, else in pixels, standardised as `backbone` expects.
    """
    if data.embedded:
        return FeatureAugmenter.fit(store.features)
    return Augmenter.fit(data.images, device, flip=data.flip, stats=input_stats(backbone))


def make_batch(
    order: torch.Tensor,
    step: int,
    batch_size: int,
    labels: torch.Tensor,
    store: ImageStore,
    augmenter: Augmenter,
    generator: torch.Generator,
    device: torch.device,
    world: World,
) -> tuple[Batch, int]:
    """Returns this process's part of mini-batch `step` of `order`, and the size of the whole mini-batch."""
    whole = order[step * batch_size : (step + 1) * batch_size].sort().values
    index = whole[world.rank :: world.size]
    batch = Batch(
        index=index.to(device),
        label=labels[index].to(device),
        raw=store.gather(index),
        augmenter=augmenter,
        generator=generator,
    )
    return batch, len(whole)


def epoch_figures(method: Method, logged: dict, epochs: int) -> dict:
    """Returns what a progress line shows of an epoch: epoch, loss, the share of
    predictions that changed, the method's main figures, and "warm-up" while it lasts.
    """
    figures = {"epoch": f"{logged['epoch']}/{epochs}", "loss": logged["loss"]}
    if logged.get("prediction_changes") is not None:
        figures["changed"] = logged["prediction_changes"]
    figures.update(
        {label: logged[key] for key, label in method.progress_figures.items() if logged.get(key) is not None}
    )
    if logged.get("warmup_over") == 0.0:
        figures["phase"] = "warm-up"
    return figures


def time_steps(
    data: TrainData,
    config: RunConfig,
    store: ImageStore,
    augmenter: Augmenter,
    device: torch.device,
    world: World,
    autocast,
    method_cls: type[Method] | None = None,
) -> float:
    """Returns the seconds one training step takes, timed on a scratch copy of the method that is then thrown away.

    The scratch method starts its robust phase at once (a warm-up of 0 where it has one): that
    phase costs the most per step, so the epochs planned from it fit in the time. Steps are
    timed as :class:`budget.StepTimer` says, for :func:`budget.timing_seconds`.
    """
    params = dict(config.method_params)
    cls = method_cls or config.method_class
    if "warmup" in {f.name for f in dataclasses.fields(cls.Hparams)}:
        params["warmup"] = 0
    scratch_config = replace(config, method_params=params, epochs=max(config.epochs, 2))
    scratch_config.method_class, scratch_config.hparams = (
        config.method_class,
        method_hparams(cls, params),
    )  # unchecked: a warm-up of 0 may be refused
    method = build_method(scratch_config, data, device, world, method_cls, training_features(data, store, augmenter))
    optimizer = make_optimizer(method, scratch_config, data.embedded)
    trainer = training_module(method, world)
    labels = torch.tensor(np.asarray(data.labels), dtype=torch.int64)
    steps = steps_in_epoch(len(labels), config.batch_size, world.size)
    order = sample_order(len(labels), config.seed, 0)
    generator = torch.Generator(device=device).manual_seed(augmentation_seed(config.seed, 0, world.rank))
    timer = budget.StepTimer(steps, budget.timing_seconds(config.time_budget))
    for step in itertools.cycle(range(steps)):  # a short epoch is timed on its second pass
        batch, whole = make_batch(order, step, config.batch_size, labels, store, augmenter, generator, device, world)
        train_step(trainer, optimizer, batch, 1, len(batch.index) / whole, world, autocast)
        share_samples(method, batch.index, -(-whole // world.size), world)
        if world.max_ints(int(timer.step_done()))[0]:  # every process stops at the same step
            return timer.per_step()


def _checkpoint_epochs(path: Path | None, config: RunConfig) -> int:
    """Returns the epochs a ``--time-budget`` run chose, read from
    its checkpoint (`config.epochs` when there is none to read).
    """
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        return int(payload["identity"]["settings"]["epochs"])
    except Exception:  # a missing or foreign checkpoint is reported by _load_checkpoint with its reason
        return config.epochs


class TrainingStep(nn.Module):
    """The method's whole training step as one module call.

    DistributedDataParallel wraps this module rather than each network: a step may run a
    network several times (two views, a mixup pass) or a network's second head, and DDP needs
    all of that inside one forward to know which gradients to average. The per-sample state
    stays on the method, outside the module.
    """

    def __init__(self, method: Method):
        super().__init__()
        self.networks = method.networks
        self.method = method

    def forward(self, batch: Batch, epoch: int) -> torch.Tensor:
        """Returns the method's scalar loss of `batch` at `epoch`."""
        return self.method.training_step(batch, epoch)


def train_step(
    trainer: nn.Module, optimizer, batch: Batch, epoch: int, share: float, world: World, autocast
) -> torch.Tensor:
    """Runs one optimiser step on this process's part of a mini-batch, `share` of it.

    Returns the detached loss × `share`.
    """
    with autocast:
        loss = trainer(batch, epoch)
    optimizer.zero_grad(set_to_none=True)
    # DDP averages gradients over processes; weighting by the share makes that the whole batch's mean.
    (loss * (share * world.size)).backward()
    optimizer.step()
    return loss.detach() * share


def training_module(method: Method, world: World) -> nn.Module:
    """Returns the module whose call runs a training step: wrapped
    in DistributedDataParallel when `world` has several processes.
    """
    step = TrainingStep(method)
    if not world.distributed:
        return step
    return DistributedDataParallel(step, find_unused_parameters=method.unused_parameters, gradient_as_bucket_view=True)


def memory_remedies(config: RunConfig, device: torch.device, needs: dict[str, int]) -> tuple[str, ...]:
    """Returns the options that would shrink the per-sample state in host memory, for the --max-ram message."""
    if not needs["per-sample state"]:
        return ()
    remedies = () if config.state_dtype == "float16" else ("--state-dtype float16",)
    return remedies + (("--state-on device",) if device.type == "cuda" and config.state_on != "device" else ())


def processes_on_this_machine(world: World) -> int:
    """Returns how many processes of the run share this machine's memory (torchrun's ``LOCAL_WORLD_SIZE``)."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", world.size))


def augmentation_seed(seed: int, epoch: int, rank: int) -> int:
    """Returns the seed of the augmentation generator of `epoch` in process `rank` (each process draws its own)."""
    return seed * 1_000_003 + epoch + (rank << 40)


def share_samples(method: Method, index: torch.Tensor, capacity: int, world: World) -> None:
    """Sends the per-sample state rows this process updated (`index`) to every process and takes theirs. Returns None.

    `capacity` is the most rows any process trained on in the step.
    """
    if world.distributed and len(method.state):
        index, rows = world.gather_rows(index, method.state.pack(index), capacity)
        method.state.unpack(index, rows)


@torch.no_grad()
def predict_all(
    method: Method,
    store: ImageStore,
    augmenter: Augmenter,
    autocast,
    world: World = World(),
    training_set: bool = False,
) -> torch.Tensor:
    """Returns eval-mode probabilities (float32 N×K, on the CPU) for every image in `store`.

    With `training_set`, row i of `store` is training sample i, and the method is told so
    (``predict(x, index)``). In a run of several processes each predicts every P-th image and
    all receive every row.
    """
    was_training = method.networks.training
    method.networks.eval()
    n_classes = method.setup.n_classes
    probs = torch.empty(len(store), n_classes)
    whole_chunk = EVAL_BATCH * world.size
    for start in range(0, len(store), whole_chunk):
        chunk = torch.arange(start, min(start + whole_chunk, len(store)))
        mine = chunk[world.rank :: world.size]
        with autocast:
            index = mine.to(store.device) if training_set else None
            predicted = (
                method.predict(augmenter.clean(store.gather(mine)), index).float()
                if len(mine)
                else torch.empty(0, n_classes, device=store.device)
            )
        index, rows = world.gather_rows(
            mine.to(predicted.device), predicted.contiguous().view(torch.uint8), -(-len(chunk) // world.size)
        )
        probs[index.cpu()] = rows.view(torch.float32).cpu()
    method.networks.train(was_training)
    return probs


def _configure_torch(device: torch.device, seed: int) -> None:
    torch.manual_seed(seed)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    else:
        torch.use_deterministic_algorithms(True, warn_only=True)


@dataclass
class Position:
    """Where training stands: `epoch` epochs finished and `step` steps of the next one.

    Mid-epoch (`step` > 0) it also holds the state of every process's augmentation generator
    (in rank order) and the running loss sum, so a resumed run draws the same augmentations
    as an uninterrupted one, and the seconds the unfinished epoch has taken so far.
    `train_seconds` is the training time of the run up to this position (over resumes too).
    """

    epoch: int = 0
    step: int = 0
    generator_states: list[torch.Tensor] | None = None
    loss_sum: torch.Tensor | None = None
    epoch_seconds: float = 0.0
    train_seconds: float = 0.0

    def describe(self) -> str:
        """Returns e.g. ``epoch 3, step 5`` or ``the end of epoch 2``."""
        return f"epoch {self.epoch + 1}, step {self.step}" if self.step else f"the end of epoch {self.epoch}"


class Checkpointer:
    """Writes the run's checkpoints to `path` (nothing when
    `path` is None) and knows when the next periodic one is due.
    """

    def __init__(self, path: Path | None, identity: dict, method: Method, optimizer):
        self.path, self.identity, self.method, self.optimizer = path, identity, method, optimizer
        self.last_saved = time.monotonic()

    def due(self) -> bool:
        """Returns True when CHECKPOINT_SECONDS have passed since the last checkpoint (never without a path)."""
        return self.path is not None and time.monotonic() - self.last_saved >= CHECKPOINT_SECONDS

    def save(self, position: Position) -> None:
        """Writes a checkpoint at `position` atomically. Returns None."""
        if self.path is not None:
            _save_checkpoint(self.path, self.identity, position, self.method, self.optimizer)
            self.last_saved = time.monotonic()


def _save_checkpoint(path: Path, identity: dict, position: Position, method: Method, optimizer) -> None:
    payload = {
        "identity": identity,
        "epochs_done": position.epoch,
        "steps_done": position.step,
        "generator_states": position.generator_states,
        "loss_sum": position.loss_sum,
        "epoch_seconds": position.epoch_seconds,
        "train_seconds": position.train_seconds,
        "method": method.state_dict(),
        "optimizer": optimizer.state_dict(),
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def _load_checkpoint(path: Path | None, identity: dict, method: Method, optimizer) -> Position:
    """Restores a checkpoint into `method` and `optimizer`. Returns the position it was saved at.

    Loads with ``weights_only=True``: tensors and plain containers only, never arbitrary objects.
    """
    if path is None or not path.is_file():
        raise UserError(f"--resume: no checkpoint at {path}; run once without --resume")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols; the outcome is reported below
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location="cpu", weights_only=True)
        saved_identity = payload["identity"]
    except Exception as err:  # a truncated or foreign file fails in many ways; all mean "unusable"
        raise UserError(
            f"--resume: {path} is not a readable lnlclean checkpoint ({type(err).__name__}); "
            "drop --resume and pass --overwrite to start over"
        ) from err
    if saved_identity != identity:
        what = _first_difference(saved_identity, identity)
        raise UserError(
            f"--resume: {path} comes from a different run ({what}); "
            "drop --resume and pass --overwrite to start over, or use another --out"
        )
    method.load_state_dict(payload["method"])
    optimizer.load_state_dict(payload["optimizer"])
    return Position(
        int(payload["epochs_done"]),
        int(payload["steps_done"]),
        payload["generator_states"],
        payload["loss_sum"],
        float(payload["epoch_seconds"]),
        float(payload["train_seconds"]),
    )


def _restore_generator(generator: torch.Generator, position: Position, world: World, reporter: Reporter) -> None:
    """Sets `generator` to this process's saved state; keeps it freshly
    seeded when the checkpoint had another number of processes.
    """
    if len(position.generator_states) == world.size:
        generator.set_state(position.generator_states[world.rank])
    else:
        reporter.log(
            f"the checkpoint was written by {len(position.generator_states)} process(es), this run has {world.size}: "
            "the rest of the epoch draws other augmentations than an uninterrupted run would"
        )


def _first_difference(saved: dict, current: dict) -> str:
    if saved.get("format") != current.get("format"):
        return "written by another lnlclean version"
    if saved.get("data") != current.get("data"):
        return "other images or labels"
    for key, value in current.get("settings", {}).items():
        if saved.get("settings", {}).get(key) != value:
            return f"{key} was {saved['settings'].get(key)!r}, now {value!r}"
    return "other settings"
