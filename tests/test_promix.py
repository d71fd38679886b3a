"""ProMix: selection, debiasing and the loss posterior on hand-built tensors; one training step's flags."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import batch_of, make_method

from lnlclean.config import RunConfig
from lnlclean.errors import UserError
from lnlclean.methods.promix import (
    ProMix,
    class_wise_selection,
    debiased_margin_loss,
    debiased_pseudo_labels,
    loss_posterior,
    resolve,
)
from lnlclean.models import TwoHeadNetwork, build_backbone


def test_class_wise_selection_keeps_the_smallest_losses_of_each_given_class():
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 2, 0])
    losses = torch.tensor([0.9, 0.1, 0.5, 0.3, 2.0, 1.0, 5.0, 0.2])
    # quota = ceil(8 / 3 · 0.5) = 2 per class; class 2 has one member, which is kept.
    selected = class_wise_selection(losses, labels, 3, 0.5)
    assert selected.tolist() == [False, True, False, False, True, True, True, True]
    assert class_wise_selection(losses, labels, 3, 1.0).tolist() == [False, True, False, True, True, True, True, True]


def test_debiased_margin_loss_adds_alpha_log_prior_to_the_logits():
    logits = torch.tensor([[2.0, 0.5, -1.0]])
    uniform = torch.full((3,), -math.log(3))
    assert debiased_margin_loss(logits, torch.tensor([1]), uniform, 0.8).item() == pytest.approx(
        F.cross_entropy(logits, torch.tensor([1])).item()
    )
    prior = torch.tensor([0.7, 0.2, 0.1]).log()
    expected = F.cross_entropy(logits + 0.8 * prior, torch.tensor([1])).item()
    assert debiased_margin_loss(logits, torch.tensor([1]), prior, 0.8).item() == pytest.approx(expected)
    soft = torch.tensor([[0.0, 1.0, 0.0]])
    assert debiased_margin_loss(logits, soft, prior, 0.8).item() == pytest.approx(expected)


def test_pseudo_labels_remove_the_prior_and_sharpen():
    logits = torch.tensor([[1.0, 1.0, -3.0]])
    prior = torch.tensor([0.6, 0.3, 0.1]).log()
    pseudo = debiased_pseudo_labels(logits, prior, alpha=1.0, temperature=1.0)
    assert pseudo.argmax().item() == 1  # class 0 is favoured by the prior, so it is discounted
    sharp = debiased_pseudo_labels(logits, prior, alpha=1.0, temperature=0.5)
    torch.testing.assert_close(sharp, pseudo**2 / (pseudo**2).sum())


def test_loss_posterior_separates_small_from_large_losses_within_each_class():
    rng = np.random.default_rng(0)
    clean = rng.normal(0.1, 0.05, 80).clip(0)
    noisy = rng.normal(2.0, 0.3, 20)
    labels = torch.tensor([0] * 50 + [1] * 50)
    losses = torch.tensor(np.concatenate([clean[:40], noisy[:10], clean[40:] + 3.0, noisy[10:] + 5.0]))
    posterior = loss_posterior(losses, labels, 2)
    is_noisy = np.r_[np.zeros(40), np.ones(10), np.zeros(40), np.ones(10)].astype(bool)
    assert (posterior[~is_noisy] > 0.5).all() and (posterior[is_noisy] < 0.5).all()


def test_two_head_network_shares_the_features_of_its_backbone():
    net = TwoHeadNetwork(build_backbone("small-cnn", 4, 1), 4)
    x = torch.randn(3, 1, 8, 8)
    net.eval()
    main, aux = net.both(x)
    torch.testing.assert_close(main, net(x))
    assert aux.shape == (3, 4)
    assert {name for name, _ in net.named_parameters()} >= {"aux_head.weight", "aux_head.bias"}


def fixed_logits(method, rows: list[list[float]]):
    """Makes both networks' weak forward return `rows` (as logits, with gradient) for the main and auxiliary head."""
    for net in method.networks:
        net.both = lambda x, rows=rows: (torch.tensor(rows, requires_grad=True), torch.tensor(rows, requires_grad=True))


def test_a_step_flags_mhcs_and_agreement_and_lga_only_late():
    method = make_method(ProMix, [0, 1, 2, 0], epochs=10, warmup=1, lga_start=0.5)
    fixed_logits(method, [[9.0, 0.0, 0.0]] * 4)  # both networks: class 0 at p > 0.99
    batch = batch_of(method, [0, 1, 2, 3])
    loss = method.training_step(batch, epoch=2)
    assert torch.isfinite(loss)
    assert method.flags["mhcs_last"].tolist() == [True, False, False, True]
    assert method.flags["agree_last"].all() and not method.flags["lga_last"].any()
    method.training_step(batch_of(method, [0, 1, 2, 3]), epoch=5)
    assert method.flags["lga_last"].all() and method.lga_label.tolist() == [0, 0, 0, 0]
    audit = method.audit(np.full((4, 3), 1 / 3, dtype=np.float32))
    assert audit["suggested_label"].tolist() == [0, 0, 0, 0] and audit["promix_selected"].all()


def test_auto_settings_and_option_errors():
    assert resolve(ProMix.Hparams(), 10, 600) == (0.99, 10)
    assert resolve(ProMix.Hparams(), 100, 600) == (0.95, 30)
    assert resolve(ProMix.Hparams(), 10, 100)[1] == 2
    with pytest.raises(UserError, match="--promix-warmup 5: must be below --epochs 5"):
        RunConfig(method="promix", epochs=5, method_params={"warmup": "5"}).validate()
    RunConfig(
        method="promix", epochs=1
    ).validate()  # too short for selection: trains as its warm-up, and the audit warns
    with pytest.raises(UserError, match="--promix-ratio 2.0: must be between"):
        RunConfig(method="promix", method_params={"ratio": "2"}).validate()
