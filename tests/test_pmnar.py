"""PMNAR: the PM loss and adaptive weights on hand-built tables."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from helpers import batch_of, make_method

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


def forwarded_rows(method: PMNAR, batch) -> tuple[list[int], float]:
    """Returns the rows each network was given in one training step on `batch`, and the step's loss."""
    rows = []
    hooks = [
        net.register_forward_hook(lambda module, inputs, output: rows.append(len(inputs[0]))) for net in method.networks
    ]
    loss = method.training_step(batch, epoch=0)
    for hook in hooks:
        hook.remove()
    return rows, float(loss.detach())


def test_alternate_consistency_gives_the_strong_view_to_one_network_with_double_weight():
    given = [0, 1, 2, 0]
    both = make_pmnar(given)
    assert forwarded_rows(both, batch_of(both, [0, 1, 2, 3]))[0] == [8, 8]  # weak + strong for each network
    alternate = make_pmnar(given, consistency="alternate")
    batch = batch_of(alternate, [0, 1, 2, 3])  # one generator, drawn from at every step
    seen = [forwarded_rows(alternate, batch)[0] for _ in range(12)]
    assert all(sorted(rows) == [4, 8] for rows in seen)  # one network takes the strong view
    assert {rows.index(8) for rows in seen} == {0, 1}  # and it is not always the same one
    # Without the consistency term both variants compute the same PM loss on the weak view.
    plain, cheap = make_pmnar(given, beta=0.0), make_pmnar(given, beta=0.0, consistency="alternate")
    cheap.networks.load_state_dict(plain.networks.state_dict())
    for net in [*plain.networks, *cheap.networks]:
        net.eval()  # batch statistics would differ between 4 and 8 rows
    plain_loss = forwarded_rows(plain, batch_of(plain, [0, 1, 2, 3]))[1]
    assert forwarded_rows(cheap, batch_of(cheap, [0, 1, 2, 3]))[1] == pytest.approx(plain_loss, rel=1e-5)
    # The regularised network's term weighs 2β (the test views make the strong view the weak one).
    weighted = make_pmnar(given, beta=0.5, consistency="alternate")
    weighted.networks.load_state_dict(plain.networks.state_dict())
    weighted.networks.eval()
    batch = batch_of(weighted, [0, 1, 2, 3])
    with torch.no_grad():
        probs = [net(batch.weak).softmax(dim=1) for net in weighted.networks]
    rows, loss = forwarded_rows(weighted, batch)
    chosen = rows.index(8)
    term = consistency((probs[0] + probs[1]) / 2, probs[chosen].log()).mean()
    assert loss - plain_loss == pytest.approx(2 * 0.5 * float(term), rel=1e-4)


def test_unknown_consistency_names_the_option():
    with pytest.raises(UserError, match="--pmnar-consistency 'never': choose both or alternate"):
        method_hparams(PMNAR, {"consistency": "never"})
