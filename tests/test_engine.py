"""Engine mechanics: schedules, batching, devices, and that CE learns on clean digits."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lnlclean.config import RunConfig
from lnlclean.data.datasets import load_digits
from lnlclean.engine import TrainData, fit, learning_rate, resolve_device, steps_in_epoch
from lnlclean.errors import UserError


def test_cosine_schedule_warms_up_then_decays_to_zero():
    config = RunConfig(lr=0.1, schedule="cosine")
    lrs = [learning_rate(config, step, total_steps=100, steps_per_epoch=10) for step in range(100)]
    assert lrs[0] == pytest.approx(0.01) and lrs[9] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))
    assert lrs[-1] < 0.001


def test_step_schedule_divides_by_ten_at_half_and_three_quarters():
    config = RunConfig(lr=0.1, schedule="step")
    assert [learning_rate(config, s, 100, 10) for s in (0, 49, 50, 74, 75, 99)] == pytest.approx(
        [0.1, 0.1, 0.01, 0.01, 0.001, 0.001]
    )


@pytest.mark.parametrize("n, batch, steps", [(256, 128, 2), (257, 128, 2), (258, 128, 3), (5, 128, 1)])
def test_every_sample_is_visited_without_batches_of_one(n, batch, steps):
    assert steps_in_epoch(n, batch) == steps


def test_cuda_request_without_cuda_is_a_user_error(monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    with pytest.raises(UserError, match="--device cuda"):
        resolve_device("cuda")
    assert resolve_device("auto").type == "cpu"


def test_ce_learns_clean_digits_and_reports_history():
    digits = load_digits()
    data = TrainData(
        images=digits.train_images,
        labels=digits.train_labels,
        n_classes=10,
        test_images=digits.test_images,
        test_labels=digits.test_labels,
        flip=False,
    )
    result = fit(data, RunConfig(method="ce", epochs=6, device="cpu"))
    assert result.test_accuracy > 0.9
    assert result.probs.shape == (len(digits.train_labels), 10)
    np.testing.assert_allclose(result.probs.sum(axis=1), 1.0, atol=1e-4)
    assert [h["epoch"] for h in result.history] == list(range(1, 7))
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    assert all(math.isfinite(h["seconds"]) for h in result.history)


def test_diverging_training_is_reported_as_a_learning_rate_problem():
    digits = load_digits()
    data = TrainData(images=digits.train_images[:256], labels=digits.train_labels[:256], n_classes=10, flip=False)
    with pytest.raises(UserError, match="--lr"):
        fit(data, RunConfig(method="ce", epochs=2, device="cpu", lr=1e12))


@pytest.mark.slow
def test_compiled_networks_keep_plain_parameter_names_so_checkpoints_resume_without_compile(tmp_path):
    import torch

    digits = load_digits()
    data = TrainData(images=digits.train_images[:256], labels=digits.train_labels[:256], n_classes=10, flip=False)
    config, checkpoint = dict(method="ce", epochs=2, device="cpu"), tmp_path / "checkpoint.pt"
    fit(data, RunConfig(**config, compile=True), checkpoint_path=checkpoint)
    saved = torch.load(checkpoint, weights_only=True)
    assert not any("_orig_mod" in key for key in saved["method"]["networks"])
    resumed = fit(data, RunConfig(**config), checkpoint_path=checkpoint, resume=True)
    assert resumed.resumed_from_epoch == 2
