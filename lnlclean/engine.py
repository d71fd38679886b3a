"""The one training loop every method runs in.

``fit`` owns the device, data movement, optimiser, learning-rate schedule, mixed precision,
progress, per-epoch checkpoints and the final inference pass. A method only supplies its
loss and its per-sample bookkeeping (see :mod:`lnlclean.methods.base`).

Reproducibility: every epoch draws its sample order and augmentations from generators
seeded by ``(seed, epoch)``, and a checkpoint holds networks, optimiser, method state and
(mid-epoch, after a stop signal) the step and the generator's state, so ``--resume``
continues an interrupted CPU run to the same result.
"""

from __future__ import annotations

import math
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .config import RunConfig, method_hparams
from .data.augment import Augmenter
from .data.store import ImageStore
from .errors import UserError
from .fileio import atomic_path
from .interrupt import Interrupted, deferred_stop
from .methods import get_method
from .methods.base import Batch, Method, Setup
from .models import build_backbone
from .progress import Reporter

CHECKPOINT_FORMAT = 2
EVAL_BATCH = 512
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


@dataclass
class FitResult:
    """What training produced.

    Attributes:
        method: the trained method (its networks and per-sample state).
        probs: final eval-mode class probabilities of every training sample (float32 N×K).
        test_accuracy: accuracy on the test split, or None without one.
        history: one dict per epoch (seconds, loss, lr and the method's own numbers).
        seconds: wall time of the whole fit, final inference included.
        device: the device trained on, e.g. ``cpu`` or ``cuda (NVIDIA H100)``.
        resumed_from_epoch: epochs already done in the checkpoint resumed from, else None.
    """

    method: Method
    probs: np.ndarray
    test_accuracy: float | None
    history: list[dict]
    seconds: float
    device: str
    resumed_from_epoch: int | None = None


def resolve_device(name: str) -> torch.device:
    """Returns the torch device for ``auto`` (CUDA when present), ``cpu``, ``cuda`` or ``cuda:N``.

    Raises UserError when CUDA is asked for and not available.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {name}: CUDA is not available on this machine; use --device cpu or auto")
    return torch.device(name)


def device_tag(device: torch.device) -> str:
    """Returns a short file-name tag for `device`: ``cpu`` or ``cuda-<gpu name>``, e.g. ``cuda-nvidia-h100-80gb-hbm3``."""
    if device.type == "cuda":
        return "cuda-" + torch.cuda.get_device_name(device).lower().replace(" ", "-")
    return "cpu"


def describe_device(device: torch.device) -> str:
    """Returns a human-readable device name, e.g. ``cuda (NVIDIA H100 80GB HBM3)`` or ``cpu (2 threads)``."""
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({torch.get_num_threads()} threads)"


def build_method(config: RunConfig, data: TrainData, device: torch.device) -> Method:
    """Returns the configured method with freshly initialised networks on `device`."""
    method_cls = get_method(config.method)
    hparams = method_hparams(method_cls, config.method_params)
    in_channels = data.images.shape[-1]

    def build_network() -> torch.nn.Module:
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
        true_labels=None if data.true_labels is None else torch.as_tensor(np.asarray(data.true_labels), dtype=torch.int64, device=device),
    )
    return method_cls(hparams, setup)


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


def steps_in_epoch(n_samples: int, batch_size: int) -> int:
    """Returns the number of mini-batches per epoch: every sample once, but no batch of one (batch norm needs two)."""
    full, rest = divmod(n_samples, batch_size)
    return max(1, full + (rest >= 2))


def checkpoint_identity(config: RunConfig, data: TrainData) -> dict:
    """Returns what must match for a checkpoint to be resumed: method, settings and data."""
    settings = {k: v for k, v in config.to_dict().items() if k not in ("device", "workers", "compile")}
    return {"format": CHECKPOINT_FORMAT, "data": data.fingerprint, "settings": settings}


def fit(
    data: TrainData,
    config: RunConfig,
    reporter: Reporter | None = None,
    checkpoint_path: Path | None = None,
    resume: bool = False,
) -> FitResult:
    """Trains `config.method` on `data` and returns the final per-sample probabilities.

    A checkpoint is written atomically to `checkpoint_path` after every epoch, and within an
    epoch whenever :data:`CHECKPOINT_SECONDS` have passed since the last one. On SIGINT or
    SIGTERM the current step finishes, a checkpoint of that step is written and
    :class:`~lnlclean.interrupt.Interrupted` is raised. With `resume`, training continues from
    the checkpoint, mid-epoch included; it must come from the same method, settings and data
    (else UserError). Raises UserError when training diverges.
    """
    reporter = reporter or Reporter(quiet=True)
    started = time.perf_counter()
    device = resolve_device(config.device)
    _configure_torch(device, config.seed)
    store = ImageStore(data.images, device)
    augmenter = Augmenter.fit(data.images, device, flip=data.flip)
    method = build_method(config, data, device)
    optimizer = torch.optim.SGD(
        method.networks.parameters(), lr=config.lr, momentum=config.momentum,
        weight_decay=config.weight_decay, nesterov=config.momentum > 0,
    )
    identity = checkpoint_identity(config, data)
    position = Position()
    if resume:
        position = _load_checkpoint(checkpoint_path, identity, method, optimizer)
        reporter.log(f"resuming from {checkpoint_path} at {position.describe()}")
    labels = torch.tensor(np.asarray(data.labels), dtype=torch.int64)
    n_samples = len(labels)
    steps_per_epoch = steps_in_epoch(n_samples, config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()

    def evaluate_train() -> torch.Tensor:
        return predict_all(method, store, augmenter, autocast)

    remaining = total_steps - position.epoch * steps_per_epoch - position.step
    description = f"training {config.method} on {describe_device(device)}"
    checkpoints = Checkpointer(checkpoint_path, identity, method, optimizer)
    with reporter.task(description, total=remaining) as advance, deferred_stop() as stop:
        for epoch in range(position.epoch, config.epochs):
            epoch_started = time.perf_counter()
            method.networks.train()
            generator = torch.Generator(device=device).manual_seed(config.seed * 1_000_003 + epoch)
            order = torch.randperm(n_samples, generator=torch.Generator().manual_seed(config.seed * 1_000_003 + epoch))
            loss_sum = torch.zeros((), device=device)
            data_seconds = 0.0  # time spent fetching batches: the training step waits for it
            first_step = 0
            if epoch == position.epoch and position.step:
                generator.set_state(position.generator_state)
                loss_sum += position.loss_sum.to(device)
                first_step = position.step
            for step_in_epoch in range(first_step, steps_per_epoch):
                fetch_started = time.perf_counter()
                index = order[step_in_epoch * config.batch_size:(step_in_epoch + 1) * config.batch_size].sort().values
                batch = Batch(
                    index=index.to(device), label=labels[index].to(device), raw=store.gather(index),
                    augmenter=augmenter, generator=generator,
                )
                data_seconds += time.perf_counter() - fetch_started
                lr = learning_rate(config, epoch * steps_per_epoch + step_in_epoch, total_steps, steps_per_epoch)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                with autocast:
                    loss = method.training_step(batch, epoch)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                loss_sum += loss.detach()
                advance(1, epoch=epoch + 1)
                if stop.signum is not None or checkpoints.due():
                    checkpoints.save(Position(epoch, step_in_epoch + 1, generator.get_state(), loss_sum.detach().cpu()))
                    if stop.signum is not None:
                        raise Interrupted(stop.signum, checkpoint_path, epoch + 1, step_in_epoch + 1)
            mean_loss = float(loss_sum) / steps_per_epoch
            if not math.isfinite(mean_loss):
                raise UserError(f"--lr {config.lr}: training diverged (loss {mean_loss} in epoch {epoch + 1}); lower --lr")
            with torch.no_grad():
                logged = method.end_epoch(epoch, evaluate_train)
            method.history.append({
                "epoch": epoch + 1, "loss": mean_loss, "lr": learning_rate(config, (epoch + 1) * steps_per_epoch - 1, total_steps, steps_per_epoch),
                "seconds": time.perf_counter() - epoch_started, "data_seconds": data_seconds, **logged,
            })
            checkpoints.save(Position(epoch + 1))
    probs = evaluate_train().cpu().numpy()
    test_accuracy = None
    if data.test_images is not None and len(data.test_images):
        test_probs = predict_all(method, ImageStore(data.test_images, device), augmenter, autocast)
        test_accuracy = float((test_probs.argmax(1).cpu().numpy() == data.test_labels).mean())
    return FitResult(
        method=method, probs=probs, test_accuracy=test_accuracy, history=method.history,
        seconds=time.perf_counter() - started, device=describe_device(device),
        resumed_from_epoch=position.epoch if resume else None,
    )


@torch.no_grad()
def predict_all(method: Method, store: ImageStore, augmenter: Augmenter, autocast) -> torch.Tensor:
    """Returns eval-mode probabilities (float32 N×K, on the device) for every image in `store`."""
    was_training = method.networks.training
    method.networks.eval()
    chunks = []
    for start in range(0, len(store), EVAL_BATCH):
        index = torch.arange(start, min(start + EVAL_BATCH, len(store)))
        with autocast:
            chunks.append(method.predict(augmenter.clean(store.gather(index))).float())
    method.networks.train(was_training)
    return torch.cat(chunks)


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

    Mid-epoch (`step` > 0) it also holds the epoch's random-generator state and its running
    loss sum, so a resumed run draws the same augmentations as an uninterrupted one.
    """

    epoch: int = 0
    step: int = 0
    generator_state: torch.Tensor | None = None
    loss_sum: torch.Tensor | None = None

    def describe(self) -> str:
        """Returns e.g. ``epoch 3, step 5`` or ``the end of epoch 2``."""
        return f"epoch {self.epoch + 1}, step {self.step}" if self.step else f"the end of epoch {self.epoch}"


class Checkpointer:
    """Writes the run's checkpoints to `path` (nothing when `path` is None) and knows when the next periodic one is due."""

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
        "identity": identity, "epochs_done": position.epoch, "steps_done": position.step,
        "generator_state": position.generator_state, "loss_sum": position.loss_sum,
        "method": method.state_dict(), "optimizer": optimizer.state_dict(),
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
        raise UserError(f"--resume: {path} is not a readable lnlclean checkpoint ({type(err).__name__}); drop --resume and pass --overwrite to start over")
    if saved_identity != identity:
        what = _first_difference(saved_identity, identity)
        raise UserError(f"--resume: {path} comes from a different run ({what}); drop --resume and pass --overwrite to start over, or use another --out")
    method.load_state_dict(payload["method"])
    optimizer.load_state_dict(payload["optimizer"])
    return Position(int(payload["epochs_done"]), int(payload["steps_done"]), payload["generator_state"], payload["loss_sum"])


def _first_difference(saved: dict, current: dict) -> str:
    if saved.get("format") != current.get("format"):
        return "written by another lnlclean version"
    if saved.get("data") != current.get("data"):
        return "other images or labels"
    for key, value in current.get("settings", {}).items():
        if saved.get("settings", {}).get(key) != value:
            return f"{key} was {saved['settings'].get(key)!r}, now {value!r}"
    return "other settings"
