"""Run settings: one dataclass shared by audit, relabel and benchmark.

Method hyperparameters sit in ``method_params`` (field → value) and are checked against the
method's ``Hparams`` dataclass by :func:`method_hparams`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import UserError


@dataclass
class RunConfig:
    """Settings of one training run (defaults are the CPU-friendly ones the README lists)."""

    method: str = "ce"
    backbone: str = "small-cnn"
    epochs: int = 40
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
    method_params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Returns the settings as a JSON-ready dict."""
        return asdict(self)

    def validate(self) -> "RunConfig":
        """Returns self after checking value ranges; raises UserError naming the option."""
        checks = [
            (self.epochs >= 1, "--epochs", "must be at least 1"),
            (self.batch_size >= 2, "--batch-size", "must be at least 2"),
            (self.lr > 0, "--lr", "must be positive"),
            (0 <= self.momentum < 1, "--momentum", "must be in [0, 1)"),
            (self.weight_decay >= 0, "--weight-decay", "must not be negative"),
            (self.schedule in ("cosine", "step", "constant"), "--schedule", "must be cosine, step or constant"),
            (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"), "--device", "must be auto, cpu or cuda"),
            (0 < self.threshold < 1, "--threshold", "must be between 0 and 1"),
            (self.image_size is None or 4 <= self.image_size <= 1024, "--image-size", "must be between 4 and 1024"),
        ]
        for ok, option, rule in checks:
            if not ok:
                raise UserError(f"{option} {getattr(self, option[2:].replace('-', '_'))}: {rule}")
        from .methods import get_method

        method_hparams(get_method(self.method), self.method_params)
        return self


def method_hparams(method_cls, params: dict[str, Any]):
    """Returns an instance of `method_cls.Hparams` with `params` (field → value) applied.

    Values given as text are converted to the field's type. Raises UserError naming the
    ``--<method>-<field>`` option for an unknown field or a value of the wrong type.
    """
    fields = {f.name: f for f in dataclasses.fields(method_cls.Hparams)}
    values = {}
    for name, raw in params.items():
        option = f"--{method_cls.name}-{name.replace('_', '-')}"
        if name not in fields:
            known = ", ".join(f"--{method_cls.name}-{n.replace('_', '-')}" for n in fields) or "none"
            raise UserError(f"{option}: unknown option for --method {method_cls.name} (its options: {known})")
        values[name] = _coerce(raw, fields[name], option)
    return method_cls.Hparams(**values)


def _coerce(raw: Any, spec: dataclasses.Field, option: str) -> Any:
    if not isinstance(raw, str):
        return raw
    default = spec.default if spec.default is not dataclasses.MISSING else None
    kind = type(default) if default is not None else str
    try:
        if kind is bool:
            if raw.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(raw)
            return raw.lower() in ("true", "1", "yes")
        return kind(raw)
    except ValueError:
        raise UserError(f"{option} {raw!r}: expected a {kind.__name__}")
