"""ALR: target refinement and loss on hand-built tensors, its options, and the λ = 0 ablation."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import batch_of, make_method

from lnlclean.config import method_hparams
from lnlclean.errors import UserError
from lnlclean.methods.alr import ALR, alr_loss, entropy, refine_targets


def test_targets_move_a_tenth_of_the_way_to_the_prediction():
    targets = torch.tensor([[1.0, 0.0, 0.0]])
    probs = torch.tensor([[0.2, 0.7, 0.1]])
    assert refine_targets(targets, probs, alpha=0.9).tolist()[0] == pytest.approx([0.92, 0.07, 0.01])
    assert refine_targets(targets, probs, alpha=1.0).tolist() == targets.tolist()


def test_loss_is_soft_cross_entropy_plus_lambda_times_entropy():
    logits = torch.tensor([[2.0, 0.0, -1.0]])
    targets = torch.tensor([[0.6, 0.3, 0.1]])
    probs = logits.softmax(dim=1)[0].tolist()
    soft_ce = -sum(t * math.log(p) for t, p in zip(targets[0].tolist(), probs))
    h = -sum(p * math.log(p) for p in probs)
    assert alr_loss(logits, targets, 0.0).item() == pytest.approx(soft_ce, rel=1e-6)
    assert alr_loss(logits, targets, 0.2).item() == pytest.approx(soft_ce + 0.2 * h, rel=1e-6)
    assert entropy(torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0]])).tolist() == pytest.approx([0.0, math.log(2)])


def test_entropy_term_hardens_a_prediction_that_already_matches_its_target():
    # With t = p the cross-entropy gradient vanishes; the entropy term still raises the top logit.
    logits = torch.tensor([[1.5, 0.5, 0.0]], requires_grad=True)
    targets = logits.detach().softmax(dim=1)
    alr_loss(logits, targets, 0.0).sum().backward()
    assert logits.grad.abs().max().item() < 1e-6
    logits.grad = None
    alr_loss(logits, targets, 0.2).sum().backward()
    assert logits.grad[0, 0].item() < 0 < logits.grad[0, 2].item()


def make_alr(given: list[int], n_classes: int = 3, epochs: int = 20, **params) -> ALR:
    return make_method(ALR, given, n_classes, epochs, **params)


def test_targets_stay_the_given_labels_during_warmup_then_refine_only_the_batch():
    method = make_alr([0, 1, 2, 0], warmup=2)
    one_hot = method.targets[:]
    method.training_step(batch_of(method, [0, 1]), epoch=1)
    assert torch.equal(method.targets[:], one_hot)
    method.networks.eval()  # batch norm in eval mode, so the recomputed prediction is the same
    batch = batch_of(method, [0, 1])
    method.training_step(batch, epoch=2)
    with torch.no_grad():
        probs = method.networks[0](batch.weak).softmax(dim=1)
    torch.testing.assert_close(method.targets[:2], 0.9 * one_hot[:2] + 0.1 * probs)
    assert torch.equal(method.targets[2:], one_hot[2:])
    audit = method.audit(torch.full((4, 3), 1 / 3).numpy())
    assert audit["clean_prob"][2:].tolist() == [1.0, 1.0] and audit["alr_target_entropy"][2:].tolist() == [0.0, 0.0]
    assert audit["clean_prob"][0] == pytest.approx(0.9 + 0.1 * probs[0, 0].item())


def test_auto_warmup_is_fifteen_percent_and_bad_values_name_the_option():
    assert make_alr([0, 1], epochs=200).phase.minimum == 30
    assert make_alr([0, 1], epochs=100).phase.minimum == 15
    assert make_alr([0, 1], epochs=3).phase.minimum == 1
    with pytest.raises(UserError, match="--alr-warmup 5: must be below --epochs 5"):
        make_alr([0, 1], epochs=5, warmup=5)
    assert not make_alr([0, 1], epochs=1).phase.robust(0)  # too short to refine: trains as ce, and the audit warns
    with pytest.raises(UserError, match="--alr-alpha 1.5: must be between 0.0 and 1.0"):
        method_hparams(ALR, {"alpha": "1.5"})
    with pytest.raises(UserError, match="--alr-lambda -1.0: must be at least 0.0"):
        method_hparams(ALR, {"lambda_": "-1"})


def test_without_the_entropy_loss_alr_is_plain_refurbishment_and_differs(digits_benchmark):
    full, refurbish = digits_benchmark("alr"), digits_benchmark("alr", lambda_=0.0)
    assert refurbish["settings"]["method_params"] == {"lambda_": 0.0}
    scores = ("f1", "auroc", "test_accuracy")
    assert [refurbish[k] for k in scores] != [full[k] for k in scores]


def test_run_settings_refuse_a_warmup_that_leaves_no_refinement_before_anything_runs():
    from lnlclean.config import RunConfig

    with pytest.raises(UserError, match="--alr-warmup 3: must be below --epochs 3"):
        RunConfig(method="alr", epochs=3, method_params={"warmup": "3"}).validate()
