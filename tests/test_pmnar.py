"""PMNAR: the PM loss and adaptive weights on hand-built tables."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from conftest import make_method
from lnlclean.config import method_hparams
from lnlclean.errors import UserError
from lnlclean.methods.pmnar import PMNAR, adaptive_weights, consistency, pm_loss


def test_pm_loss_pushes_the_label_up_and_the_complement_down():
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3]])
    labels = torch.tensor([0, 2])
    complement = torch.tensor([[False, True, True], [True, True, False]])
    expected = [
        -math.log(0.7) - math.log(0.8) - math.log(0.9),
        -math.log(0.3) - math.log(0.9) - math.log(0.4),
    ]
    assert pm_loss(probs, labels, complement).tolist() == pytest.approx(expected, rel=1e-6)


def test_a_label_dropped_from_the_complement_is_no_longer_pushed_down():
    probs = torch.tensor([[0.2, 0.7, 0.1]])
    full = pm_loss(probs, torch.tensor([0]), torch.tensor([[False, True, True]]))
    dropped = pm_loss(probs, torch.tensor([0]), torch.tensor([[False, False, True]]))
    assert (full - dropped).item() == pytest.approx(-math.log(0.3), rel=1e-6)


def test_weights_are_zero_at_the_least_confident_sample_and_keep_the_order():
    confidence = torch.tensor([0.9, 0.15, 0.6, 0.3])
    weights = adaptive_weights(confidence)
    assert weights.tolist() == pytest.approx([0.75, 0.0, 0.45, 0.15])


def test_consistency_is_zero_for_identical_predictions_and_positive_otherwise():
    target = torch.tensor([[0.5, 0.3, 0.2]])
    assert consistency(target, target.log()).item() == pytest.approx(0.0, abs=1e-7)
    assert consistency(target, torch.tensor([[0.2, 0.3, 0.5]]).log()).item() > 0.1


def make_pmnar(given: list[int], n_classes: int = 3, epochs: int = 10, **params) -> PMNAR:
    return make_method(PMNAR, given, n_classes, epochs, **params)


def record(method: PMNAR, index: list[int], probs: list[list[float]], peer: list[list[float]], epoch: int) -> None:
    labels = method.setup.given_labels[index]
    batch = SimpleNamespace(index=torch.tensor(index), label=labels)
    method._record(batch, [torch.tensor(probs), torch.tensor(peer)], epoch)


def test_complement_drops_historical_argmaxes_of_either_network_after_warmup():
    method = make_pmnar([0, 1], warmup=2)
    assert method.complement.tolist() == [[False, True, True], [True, False, True]]
    # during warm-up predictions are not yet trusted
    record(method, [0, 1], [[0.1, 0.8, 0.1], [0.1, 0.8, 0.1]], [[0.1, 0.1, 0.8]] * 2, epoch=1)
    assert method.complement.tolist() == [[False, True, True], [True, False, True]]
    record(method, [0, 1], [[0.1, 0.8, 0.1], [0.1, 0.8, 0.1]], [[0.1, 0.1, 0.8], [0.1, 0.8, 0.1]], epoch=2)
    assert method.complement.tolist() == [[False, False, False], [True, False, True]]
    # a later confident return to the given label does not bring dropped labels back
    record(method, [0], [[0.9, 0.05, 0.05]], [[0.9, 0.05, 0.05]], epoch=3)
    assert method.complement[0].tolist() == [False, False, False]
    assert method.audit(torch.full((2, 3), 1 / 3).numpy())["pmnar_complement_size"].tolist() == [0, 2]


def test_each_network_is_weighted_by_its_peer_once_warmup_ends():
    method = make_pmnar([0, 1, 2], warmup=2)
    f = [[0.9, 0.05, 0.05], [0.3, 0.4, 0.3], [0.1, 0.1, 0.8]]  # f's confidences 0.9, 0.4, 0.8
    f_peer = [[0.2, 0.4, 0.4], [0.1, 0.7, 0.2], [0.0, 0.0, 1.0]]  # f′'s confidences 0.2, 0.7, 1.0
    record(method, [0, 1, 2], f, f_peer, epoch=0)
    logged = method.end_epoch(0, evaluate=None)
    assert method.weight.tolist() == [[1.0, 1.0]] * 3  # still warming up
    assert logged["f_min"] == pytest.approx(0.4) and logged["f_min_peer"] == pytest.approx(0.2)
    method.end_epoch(1, evaluate=None)
    assert method.weight[:, 0].tolist() == pytest.approx([0.0, 0.5, 0.8])  # from f′
    assert method.weight[:, 1].tolist() == pytest.approx([0.5, 0.0, 0.4])  # from f


def test_auto_settings_follow_the_run_and_bad_values_name_the_option():
    method = make_pmnar([0, 1], epochs=100)
    assert (method.phase.minimum, method.beta) == (10, 1.0)
    assert make_pmnar(list(range(3)) * 10, n_classes=30, epochs=3, beta="auto").beta == pytest.approx(1 / 3)
    with pytest.raises(UserError, match="--pmnar-beta"):
        method_hparams(PMNAR, {"beta": "-0.5"})
    with pytest.raises(UserError, match="--pmnar-warmup 'soon': expected an integer or auto"):
        method_hparams(PMNAR, {"warmup": "soon"})
