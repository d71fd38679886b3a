"""LNL-flywheel: E-steps, T_c and γ estimation, the main network's targets on hand-built tensors;
warm-up and epoch updates of a small method; T_c learned from class-dependent flips on digits."""

from __future__ import annotations

import pytest
import torch
from helpers import batch_of, make_method

from lnlclean.config import method_hparams
from lnlclean.errors import UserError
from lnlclean.methods.flywheel import (
    Flywheel,
    clean_probability,
    confidence_regularizer,
    corruption_likelihood,
    estimate_corruption,
    given_label_margin,
    main_targets,
    supervised_contrastive,
    true_class_estimate,
    uniform_corruption,
)


def test_corruption_likelihood_sums_the_auxiliary_belief_times_the_channel_into_the_given_label():
    corruption = torch.tensor([[0.0, 0.8, 0.2], [0.5, 0.0, 0.5], [0.5, 0.5, 0.0]])
    aux_probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    given = torch.tensor([1, 1])
    # ε = Σ_y f[y] T_c[y, 1]: 0.7·0.8 + 0.2·0 + 0.1·0.5 and 0.1·0.8 + 0.1·0 + 0.8·0.5
    assert corruption_likelihood(aux_probs, corruption, given).tolist() == pytest.approx([0.61, 0.48])


def test_clean_probability_is_the_mixture_posterior():
    main_given_prob = torch.tensor([0.9, 0.05, 0.0])
    corruption_prob = torch.tensor([0.1, 0.6, 0.0])
    clean = clean_probability(main_given_prob, corruption_prob, gamma=0.6)
    assert clean[0].item() == pytest.approx(0.54 / (0.54 + 0.04))
    assert clean[1].item() == pytest.approx(0.03 / (0.03 + 0.24))
    assert clean[2].item() == 0.0  # nothing explains the label: not clean, and no division by zero


def test_true_class_estimate_splits_between_the_given_label_and_the_refurbished_belief():
    corruption = uniform_corruption(3)
    aux_probs = torch.tensor([[0.2, 0.6, 0.2], [0.2, 0.6, 0.2]])
    given = torch.tensor([1, 1])
    q = true_class_estimate(aux_probs, corruption, given, torch.tensor([1.0, 0.25]))
    assert q[0].tolist() == pytest.approx([0.0, 1.0, 0.0])
    # the corrupted part drops the given label and renormalises f: (0.5, 0, 0.5)
    assert q[1].tolist() == pytest.approx([0.375, 0.25, 0.375])
    torch.testing.assert_close(q.sum(dim=1), torch.ones(2))


def test_corruption_matrix_estimate_has_an_empty_diagonal_and_unit_rows():
    assert uniform_corruption(3).tolist() == [[0.0, 0.5, 0.5], [0.5, 0.0, 0.5], [0.5, 0.5, 0.0]]
    counts = torch.tensor([[5.0, 0.0, 20.0], [0.0, 0.0, 0.0], [3.0, 1.0, 9.0]])
    corruption = estimate_corruption(counts)
    assert corruption.diagonal().tolist() == [0.0, 0.0, 0.0]
    torch.testing.assert_close(corruption.sum(dim=1), torch.ones(3))
    assert corruption[0, 2].item() == pytest.approx(20.01 / 20.02)
    assert corruption[1].tolist() == pytest.approx([0.5, 0.0, 0.5])  # never seen corrupted: uniform
    assert corruption[2, 0].item() == pytest.approx(3.01 / 4.02)


def test_main_targets_soft_hard_and_agreement():
    clean = torch.tensor([0.9, 0.9, 0.2, 0.6])
    refurbished = torch.tensor([1, 2, 0, 0])
    predicted = torch.tensor([1, 2, 1, 1])
    given = torch.tensor([1, 1, 1, 1])
    keep, relabel = main_targets(clean, refurbished, predicted, given, "soft")
    assert keep.tolist() == pytest.approx([0.9, 0.9, 0.2, 0.6]) and relabel.tolist() == pytest.approx(
        [0.1, 0.1, 0.8, 0.4]
    )
    assert main_targets(clean, refurbished, predicted, given, "hard")[0].tolist() == [1.0, 1.0, 0.0, 1.0]
    # sample 1: both networks say 2 for a given 1, so it is relabelled despite c = 0.9;
    # sample 3: the main network still predicts the given label, so it is kept
    keep, relabel = main_targets(clean, refurbished, predicted, given, "agreement")
    assert keep.tolist() == [1.0, 0.0, 0.0, 1.0] and relabel.tolist() == [0.0, 1.0, 1.0, 0.0]


def test_confidence_regularizer_vanishes_at_the_prior_and_grows_with_collapse():
    prior = torch.tensor([0.5, 0.5])
    balanced = torch.tensor([[3.0, 0.0], [0.0, 3.0]])
    collapsed = torch.tensor([[3.0, 0.0], [3.0, 0.0]])
    assert confidence_regularizer(balanced, prior).item() == pytest.approx(0.0, abs=1e-6)
    assert confidence_regularizer(collapsed, prior).item() > 0.5


def test_supervised_contrastive_rewards_projections_that_group_by_label():
    labels = torch.tensor([0, 0, 1, 1])
    grouped = torch.tensor([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0], [0.1, 1.0]])
    mixed = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.1], [0.1, 1.0]])
    assert supervised_contrastive(grouped, grouped, labels) < supervised_contrastive(mixed, mixed, labels)


def make_flywheel(given, n_classes=3, epochs=6, **params) -> Flywheel:
    return make_method(Flywheel, given, n_classes, epochs, **params)


def test_warmup_records_margins_and_sets_gamma_from_their_mixture():
    method = make_flywheel([0, 1, 2, 0], warmup=1)
    logits = method.main(batch_of(method, [0, 1, 2, 3]).weak).float()
    method.training_step(batch_of(method, [0, 1, 2, 3]), epoch=0)
    assert method.main_margin.tolist() == pytest.approx(
        given_label_margin(logits, method.setup.given_labels).tolist(), abs=1e-4
    )
    assert torch.equal(method.refurbished, method.setup.given_labels)  # nothing refurbished before the EM cycles
    margins = torch.cat([torch.linspace(-3.5, -2.5, 30), torch.linspace(1.5, 2.5, 70)])  # 30 % prefer another label
    method = make_flywheel([0, 1, 2, 0] * 25, warmup=1)
    method.main_margin.copy_(margins)
    logged = method.end_epoch(0, evaluate=None)
    assert method.gamma == pytest.approx(0.7, abs=0.02)
    assert logged["gamma"] == method.gamma and method.summary()["gamma_source"] == "warm-up margin mixture"
    assert torch.equal(method.corruption, uniform_corruption(3))


def test_given_label_margin():
    logits = torch.tensor([[2.0, 0.0, 1.0], [0.0, 3.0, 3.0]])
    margin = given_label_margin(logits, torch.tensor([0, 2]))
    assert margin.tolist() == pytest.approx([1.0, 0.0])


def test_noise_rate_sets_gamma():
    method = make_method(Flywheel, [0, 1, 2, 0], 3, 6, noise_rate=0.3, warmup=1)
    method.end_epoch(0, evaluate=None)
    assert method.gamma == pytest.approx(0.7) and method.summary()["gamma_source"] == "--noise-rate"


def test_em_step_records_the_batch_and_the_epoch_end_reestimates_matrix_and_gamma():
    method = make_flywheel([0, 1, 2, 0, 1, 2], warmup=1, noise_rate=0.5)
    method.end_epoch(0, evaluate=None)
    loss = method.training_step(batch_of(method, [0, 1, 2]), epoch=1)
    assert torch.isfinite(loss)
    assert (method.clean[:3] < 1).all() and (method.clean[3:] == 1).all()
    assert (method.corruption_prob[:3] > 0).all() and (method.corruption_prob[3:] == 0).all()
    assert method.counts.sum().item() == pytest.approx((1 - method.clean[:3]).sum().item(), rel=1e-5)
    assert method.counts.diagonal().abs().max().item() < 1e-6
    counts = method.counts.clone()
    logged = method.end_epoch(1, evaluate=None)
    torch.testing.assert_close(method.corruption, estimate_corruption(counts))
    assert method.gamma == pytest.approx(method.clean.mean().item()) and logged["gamma"] == method.gamma
    assert method.counts.sum().item() == 0


def test_checkpoint_holds_the_matrix_and_gamma():
    method = make_flywheel([0, 1, 2, 0], warmup=1, noise_rate=0.4)
    method.corruption = estimate_corruption(torch.tensor([[0.0, 9.0, 1.0], [1.0, 0.0, 1.0], [2.0, 2.0, 0.0]]))
    method.gamma = 0.42
    restored = make_flywheel([0, 1, 2, 0], warmup=1)
    restored.load_state_dict(method.state_dict())
    assert torch.equal(restored.corruption, method.corruption) and restored.gamma == 0.42
    assert restored.gamma_initial == pytest.approx(0.6)


def test_inference_uses_the_main_network_only():
    method = make_flywheel([0, 1, 2, 0])
    method.networks.eval()
    x = batch_of(method, [0, 1]).weak
    before = method.predict(x)
    with torch.no_grad():
        for parameter in method.aux.parameters():
            parameter.add_(1.0)
    torch.testing.assert_close(method.predict(x), before)
    torch.testing.assert_close(before, method.main(x).softmax(dim=1))


def test_contrastive_term_trains_the_projection_head():
    for contrastive in (False, True):
        method = make_flywheel([0, 1, 2, 0], warmup=1, contrastive=contrastive)
        method.end_epoch(0, evaluate=None)
        method.training_step(batch_of(method, [0, 1, 2, 3]), epoch=1).backward()
        assert (method.aux.aux_head.weight.grad is not None) == contrastive


def test_options_are_checked():
    with pytest.raises(UserError, match="--flywheel-warmup 6"):
        make_flywheel([0, 1, 2], epochs=6, warmup=6)
    with pytest.raises(UserError, match="--flywheel-assignment"):
        method_hparams(Flywheel, {"assignment": "maybe"})
    with pytest.raises(UserError, match="--flywheel-regularizer"):
        method_hparams(Flywheel, {"regularizer": -1.0})


def test_corruption_matrix_finds_the_injected_flips(digits_benchmark):
    run = digits_benchmark("flywheel", noise="asym40")
    corruption = torch.tensor(run["method_summary"]["corruption_matrix"])
    flips = {2: 7, 3: 8, 5: 6, 6: 5, 7: 1}  # the digits asymmetric map
    for source, target in flips.items():
        assert corruption[source].argmax().item() == target
    flip_mass = sum(corruption[s, t].item() for s, t in flips.items()) / len(flips)
    assert flip_mass > 0.5
    assert run["f1"] >= 0.85


def test_refurbished_labels_are_right_on_flagged_noisy_digits(digits_benchmark):
    run = digits_benchmark("flywheel")
    assert run["relabel_accuracy"] >= 0.9
    gammas = [g for g in run["method_summary"]["gamma_per_epoch"] if g is not None]
    assert abs(gammas[-1] - (1 - run["true_noise_rate"])) < 0.1
