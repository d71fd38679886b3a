"""ALIM: pseudo targets, margins and λ on hand-built tensors, the PRODEN special case, and partial labels."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from helpers import batch_of, make_method

from lnlclean.config import RunConfig, method_hparams
from lnlclean.data.noise import partial_candidates
from lnlclean.errors import UserError
from lnlclean.methods.alim import (
    ALIM,
    clean_probability,
    log_margins,
    pseudo_targets,
    quantile_lambda,
    target_momentum,
)

PROBS = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.6, 0.3]])
SETS = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])


def test_pseudo_targets_weigh_labels_outside_the_candidate_set_by_lambda():
    log_probs = PROBS.log()
    # λ = 0: only candidates count; scale with K = 1 is S ⊙ P renormalised (PRODEN's target).
    proden = pseudo_targets(log_probs, SETS, 0.0, "scale", k=1.0)
    torch.testing.assert_close(proden, torch.tensor([[0.625, 0.375, 0.0], [1.0, 0.0, 0.0]]))
    assert pseudo_targets(log_probs, SETS, 0.0, "onehot").tolist() == [[1, 0, 0], [1, 0, 0]]
    # Row 2: inside 0.1, outside 0.6 → with λ = 0.5 the outside label wins (0.3 > 0.1).
    assert pseudo_targets(log_probs, SETS, 0.5, "onehot").tolist() == [[1, 0, 0], [0, 1, 0]]
    scaled = pseudo_targets(log_probs, SETS, 0.5, "scale", k=2.0)
    expected = torch.tensor([0.1, 0.3, 0.15]).sqrt()
    torch.testing.assert_close(scaled[1], expected / expected.sum())


def test_margins_lambda_and_clean_probability():
    log_margin = log_margins(PROBS.log(), SETS)
    torch.testing.assert_close(log_margin.exp(), torch.tensor([0.5 / 0.2, 0.1 / 0.6]))
    everything = log_margins(PROBS.log(), torch.ones(2, 3))
    assert everything.isinf().all() and (everything > 0).all()
    margins = torch.tensor([0.1, 0.2, 0.5, 2.0, 4.0]).log()
    assert quantile_lambda(margins, 0.4) == pytest.approx(0.5)
    assert quantile_lambda(margins, 0.8) == pytest.approx(1.0)  # 4.0, clipped at 1
    assert quantile_lambda(margins, 0.0) == 0.0
    probs = clean_probability(margins, 0.5).tolist()
    assert (
        probs[2] == pytest.approx(0.5) and probs[0] == pytest.approx(0.1 / 0.6) and probs[4] == pytest.approx(4 / 4.5)
    )
    assert clean_probability(margins, 0.0).tolist() == [1.0] * 5


def test_with_lambda_zero_and_scale_k1_alim_is_proden():
    candidates = [[1, 1, 0], [0, 1, 1], [1, 0, 1], [1, 1, 1]]
    method = make_method(ALIM, [0, 1, 2, 0], candidates=candidates, epochs=10, lambda_=0.0, normalize="scale", k=1.0)
    start = method.targets[:]
    torch.testing.assert_close(
        start, torch.tensor(candidates, dtype=torch.float) / torch.tensor([[2.0], [2.0], [2.0], [3.0]])
    )
    method.networks.eval()
    batch = batch_of(method, [0, 1, 2, 3])
    loss = method.training_step(batch, epoch=3)
    with torch.no_grad():
        probs = method.networks[0](batch.weak).softmax(dim=1)
    proden = probs * torch.tensor(candidates)
    proden = proden / proden.sum(dim=1, keepdim=True)
    m = target_momentum(3, 10)
    torch.testing.assert_close(method.targets[:], m * start + (1 - m) * proden)
    assert loss.item() == pytest.approx(-(method.targets[:] * probs.log()).sum(dim=1).mean().item(), rel=1e-5)
    for epoch in range(10):
        method.end_epoch(epoch, evaluate=None)
        assert method.lambda_ == 0.0


def test_lambda_is_zero_in_warmup_then_the_noise_rate_quantile_of_the_epoch_margins():
    method = make_method(ALIM, [0] * 5, epochs=20, noise_rate=0.4, warmup=2)
    method.log_margin.copy_(torch.tensor([0.1, 0.2, 0.5, 2.0, 4.0]).log())
    assert method.end_epoch(0, evaluate=None)["lambda"] == 0.0
    logged = method.end_epoch(1, evaluate=None)
    assert logged["lambda"] == pytest.approx(0.5) and logged["eta"] == 0.4
    assert method.summary()["eta_source"] == "--noise-rate"


def test_without_a_noise_rate_eta_is_re_estimated_every_epoch_from_the_margin_mixture():
    method = make_method(ALIM, [0] * 50, epochs=20, warmup=2)
    spread = torch.linspace(-0.5, 0.5, 10)
    low, high = (
        torch.cat([spread - 3.0] * 3),
        torch.cat([spread + 2.0] * 2),
    )  # 30 samples prefer another label, 20 their own
    method.log_margin.copy_(torch.cat([low, high]))
    assert (
        method.end_epoch(0, evaluate=None)["eta"] is None
    )  # still warming up: no estimate from a network that has barely trained
    logged = method.end_epoch(1, evaluate=None)
    assert logged["eta"] == pytest.approx(0.6, abs=0.02) and logged["lambda"] == pytest.approx(1.0)
    method.log_margin.copy_(
        torch.cat([low[:10], high, high[:10] + 1.0, high[:10]])
    )  # the network has learned: 10 of 50 still doubted
    logged = method.end_epoch(2, evaluate=None)
    assert logged["eta"] == pytest.approx(0.2, abs=0.02) and logged["lambda"] < 0.5
    assert method.eta == logged["eta"]


def test_audit_columns_on_a_hand_built_probability_table():
    method = make_method(ALIM, [0, 1], candidates=[[1, 0, 0], [0, 1, 1]], epochs=10, lambda_=0.5)
    method.lambda_ = 0.5
    method.targets[:] = torch.tensor([[0.1, 0.8, 0.1], [0.0, 0.3, 0.7]])
    audit = method.audit(np.array([[0.2, 0.7, 0.1], [0.1, 0.3, 0.6]], dtype=np.float32))
    assert audit["alim_margin"] == pytest.approx([0.2 / 0.7, 0.6 / 0.1], rel=1e-5)
    assert audit["clean_prob"] == pytest.approx([(0.2 / 0.7) / (0.2 / 0.7 + 0.5), 6 / 6.5], rel=1e-5)
    assert audit["suggested_label"].tolist() == [1, 2]
    assert audit["alim_outside_candidates"].tolist() == [True, False]
    assert audit["alim_margin_quantile"].tolist() == [0.5, 1.0] and audit["alim_lambda"].tolist() == [0.5, 0.5]


def test_options_are_checked_before_anything_runs():
    with pytest.raises(UserError, match="--alim-normalize 'soft': choose onehot or scale"):
        method_hparams(ALIM, {"normalize": "soft"})
    with pytest.raises(UserError, match="--alim-k 0.0: must be positive"):
        RunConfig(method="alim", method_params={"k": "0"}).validate()
    with pytest.raises(UserError, match="--alim-warmup 0: give --noise-rate too"):
        RunConfig(method="alim", method_params={"warmup": "0"}).validate()
    RunConfig(method="alim", noise_rate=0.2, method_params={"warmup": "0"}).validate()
    with pytest.raises(UserError, match="--noise-rate 1.5: must be in"):
        RunConfig(method="alim", noise_rate=1.5).validate()
    assert make_method(ALIM, [0, 1], epochs=100).phase.minimum == 8


def test_partial_candidates_follow_the_protocol():
    true = np.repeat(np.arange(10), 200)
    clean = partial_candidates(true, 0.3, 0.0, 10, seed=0)
    assert clean[np.arange(len(true)), true].all()
    wrong_share = (clean.sum() - len(true)) / (9 * len(true))
    assert abs(wrong_share - 0.3) < 0.02
    noisy = partial_candidates(true, 0.3, 0.2, 10, seed=0)
    outside = ~noisy[np.arange(len(true)), true]
    assert abs(outside.mean() - 0.2) < 0.03
    assert (noisy.sum(axis=1) == clean.sum(axis=1)).all()  # a swap keeps the set's size
    assert np.array_equal(partial_candidates(true, 0.3, 0.2, 10, seed=0), noisy)


def test_alim_disambiguates_noisy_partial_labels_better_than_proden(digits_benchmark):
    alim = digits_benchmark("alim", "sym20", partial_rate=0.3)
    proden = digits_benchmark("alim", "sym20", partial_rate=0.3, lambda_=0.0, normalize="scale", k=1.0)
    assert alim["true_noise_rate"] == pytest.approx(proden["true_noise_rate"]) and alim["true_noise_rate"] > 0.1
    assert alim["test_accuracy"] > proden["test_accuracy"]
    assert alim["f1"] > 0.5 and alim["f1"] > proden["f1"]
    assert math.isfinite(alim["label_accuracy_after"]) and alim["label_accuracy_after"] > alim["label_accuracy_before"]
