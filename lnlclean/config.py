"""Run settings: one dataclass shared by audit, relabel and benchmark.

Method hyperparameters sit in ``method_params`` (field → value, as given); :meth:`RunConfig.validate`
checks them once against the method's ``Hparams`` dataclass (:func:`method_hparams`) and the
checked config carries the result as ``hparams`` and the method as ``method_class``.
"""

from __future__ import annotations

import dataclasses
import keyword
import typing
from dataclasses import asdict, dataclass, field
from typing import Any

from .distributed import current as current_world
from .errors import UserError
from .memory import parse_size

# Settings that take one of a few words: field → the words (the command line offers the same).
CHOICES: dict[str, tuple[str, ...]] = {
    "schedule": ("cosine", "step", "constant"),
    "state_dtype": ("auto", "float32", "float16"),
    "state_on": ("auto", "device", "cpu"),
    "features": ("finetune", "frozen"),
}


# What --features frozen trains with unless the options are given. A head on the (then 1,280-d)
# embeddings memorised the wrong labels of 5,000 CIFAR-10 images within 20 epochs at the pixel
# networks' learning rate and weight decay (every audit then flagged nothing; docs/training.md).
FROZEN_DEFAULTS = {"epochs": 40, "lr": 0.01, "weight_decay": 0.05}
FROZEN_METHOD = "flywheel"  # the default --method with --features frozen (docs/training.md)


@dataclass
class RunConfig:
    """Settings of one training run (defaults are the CPU-friendly ones docs/training.md lists)."""

    method: str = "ce"
    backbone: str = "small-cnn"
    epochs: int = 100
    batch_size: int = 128
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    device: str = "auto"
    seed: int = 0
    image_size: int | None = None
    threshold: float = 0.5
    weights: str | None = None
    flip: bool = True
    workers: int | None = None
    noise_rate: float | None = None
    compile: bool = False
    state_dtype: str = "auto"
    state_on: str = "auto"
    max_ram: str | None = None
    time_budget: float | None = None
    features: str = "finetune"
    method_params: dict[str, Any] = field(default_factory=dict)
    # Set by validate(): the method's class and its parsed hyperparameters. A copy made with
    # dataclasses.replace drops them, so a changed config is checked again before it trains.
    method_class: Any = field(default=None, init=False, repr=False, compare=False)
    hparams: Any = field(default=None, init=False, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """Returns the settings as a JSON-ready dict (the settings as given, not the parsed hyperparameters)."""
        settings = asdict(self)
        del settings["method_class"], settings["hparams"]
        return settings

    def checked(self) -> RunConfig:
        """Returns self when it was validated already, else :meth:`validate`'s checked copy."""
        return self if self.hparams is not None else self.validate()

    def validate(self) -> RunConfig:
        """Returns a checked copy: value ranges checked, `method_params` typed, `method_class` and `hparams` set.

        Raises UserError naming the option of a value out of range or a bad method option.

        Under torchrun the mini-batch is split between the processes, and each needs at least
        two images of it (batch norm needs two), so ``--batch-size`` must be at least twice
        the number of processes.
        """
        processes = current_world().size
        checks = [
            (self.epochs >= 1, "--epochs", "must be at least 1"),
            (self.batch_size >= 2 * processes, "--batch-size", batch_size_rule(processes)),
            (self.lr > 0, "--lr", "must be positive"),
            (0 <= self.momentum < 1, "--momentum", "must be in [0, 1)"),
            (self.weight_decay >= 0, "--weight-decay", "must not be negative"),
            (
                self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"),
                "--device",
                "must be auto, cpu or cuda",
            ),
            (0 < self.threshold < 1, "--threshold", "must be between 0 and 1"),
            (self.image_size is None or 4 <= self.image_size <= 1024, "--image-size", "must be between 4 and 1024"),
            (self.noise_rate is None or 0 <= self.noise_rate < 1, "--noise-rate", "must be in [0, 1)"),
            (self.workers is None or self.workers >= 1, "--workers", "must be at least 1"),
            (self.seed >= 0, "--seed", "must not be negative"),
            (self.time_budget is None or self.time_budget > 0, "--time-budget", "must be longer than zero"),
            *(
                (
                    getattr(self, name) in values,
                    "--" + name.replace("_", "-"),
                    f"must be {', '.join(values[:-1])} or {values[-1]}",
                )
                for name, values in CHOICES.items()
            ),
        ]
        for ok, option, rule in checks:
            if not ok:
                raise UserError(f"{option} {getattr(self, option[2:].replace('-', '_'))}: {rule}")
        if self.max_ram is not None:
            parse_size(self.max_ram)
        if self.features == "frozen":
            from .embeddings import check_embedding_backbone

            check_embedding_backbone(self.backbone)
        from .methods import get_method

        method_cls = get_method(self.method)
        hparams = method_hparams(method_cls, self.method_params)
        method_cls.check_settings(hparams, self)
        # Typed values, so "3" from Python text and 3 are the same run (and the same checkpoint).
        checked = dataclasses.replace(self, method_params={name: getattr(hparams, name) for name in self.method_params})
        checked.method_class, checked.hparams = method_cls, hparams
        return checked


def batch_size_rule(processes: int) -> str:
    """Returns what ``--batch-size`` must satisfy with `processes` processes, for the error message."""
    if processes == 1:
        return "must be at least 2"
    return (
        f"each of the {processes} processes needs at least 2 images of a mini-batch; "
        f"use --batch-size {2 * processes} or more"
    )


def option_name(method: str, field_name: str) -> str:
    """Returns the command-line option of hyperparameter `field_name` of `method`.

    Underscores become dashes; a trailing underscore (fields named after Python keywords,
    such as ``lambda_``) is dropped, so ``lambda_`` of ``alr`` is ``--alr-lambda``.
    """
    return f"--{method}-{field_name.rstrip('_').replace('_', '-')}"


def field_name(option_suffix: str) -> str:
    """Returns the hyperparameter field for the text after ``--<method>-`` (inverse of `option_name`)."""
    name = option_suffix.replace("-", "_")
    return f"{name}_" if keyword.iskeyword(name) else name


def method_hparams(method_cls, params: dict[str, Any]):
    """Returns an instance of `method_cls.Hparams` with `params` (field → value) applied.

    Values given as text are converted to the field's type (``auto`` gives None for optional
    fields). Raises UserError naming the ``--<method>-<field>`` option for an unknown field, a
    value of the wrong type, or one outside the field's ``min``/``max`` metadata.
    """
    fields = {f.name: f for f in dataclasses.fields(method_cls.Hparams)}
    types = typing.get_type_hints(method_cls.Hparams)
    values = {}
    for name, raw in params.items():
        option = option_name(method_cls.name, name)
        if name not in fields:
            known = ", ".join(option_name(method_cls.name, n) for n in fields) or "none"
            raise UserError(f"{option}: unknown option for --method {method_cls.name} (its options: {known})")
        values[name] = _coerce(raw, types[name], option)
        _check_range(values[name], fields[name], option)
    return method_cls.Hparams(**values)


def _check_range(value: Any, spec: dataclasses.Field, option: str) -> None:
    """Raises UserError when `value` is outside the field's ``min``/``max`` or ``choices`` metadata (None passes)."""
    low, high = spec.metadata.get("min"), spec.metadata.get("max")
    choices = spec.metadata.get("choices")
    if value is None:
        return
    if choices is not None and value not in choices:
        raise UserError(f"{option} {value!r}: choose {' or '.join(choices)}")
    if low is not None and value < low or high is not None and value > high:
        bounds = (
            f"between {low} and {high}"
            if low is not None and high is not None
            else (f"at least {low}" if low is not None else f"at most {high}")
        )
        raise UserError(f"{option} {value}: must be {bounds}")


def _coerce(raw: Any, annotation: Any, option: str) -> Any:
    """Converts command-line text to the field's type; ``auto`` is None for optional fields."""
    if not isinstance(raw, str):
        return raw
    members = typing.get_args(annotation) or (annotation,)
    kinds = [kind for kind in members if kind is not type(None)]
    optional = len(kinds) < len(members)
    if optional and raw.lower() == "auto":
        return None
    kind = kinds[0] if kinds else str
    try:
        if kind is bool:
            if raw.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(raw)
            return raw.lower() in ("true", "1", "yes")
        return kind(raw)
    except ValueError:
        expected = {int: "an integer", float: "a number", bool: "true or false"}.get(kind, kind.__name__)
        expected += " or auto" if optional else ""
        raise UserError(f"{option} {raw!r}: expected {expected}") from None
