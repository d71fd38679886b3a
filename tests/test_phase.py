"""The warm-up ends when the network's predictions stop settling (lnlclean.methods.phase)."""

import pytest
import torch

from lnlclean.methods.base import SampleState, Setup
from lnlclean.methods.phase import PATIENCE, EarlyLearning

LABELS = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])


def make_phase(minimum=1, fixed=None, features=None):
    setup = Setup(
        n_samples=len(LABELS),
        n_classes=3,
        given_labels=LABELS,
        candidates=None,
        epochs=30,
        device=torch.device("cpu"),
        build_network=lambda: torch.nn.Identity(),
        features=features,
    )
    return EarlyLearning(setup, SampleState(), minimum=minimum, fixed=fixed)


def one_epoch(phase, epoch, predicted):
    """Trains one epoch whose predictions are `predicted` (in two mini-batches); returns the logged signals."""
    logits = torch.nn.functional.one_hot(torch.as_tensor(predicted), 3).float()
    for rows in (torch.arange(0, 5), torch.arange(5, 10)):
        phase.record(rows, logits[rows], LABELS[rows])
    return phase.end_epoch(epoch)


def changing(count):
    """Returns predictions equal to the labels except the first `count` samples, shifted by one class."""
    predicted = LABELS.clone()
    predicted[:count] = (predicted[:count] + 1) % 3
    return predicted


def test_signals_are_the_fit_and_the_share_of_changed_predictions():
    phase = make_phase()
    first = one_epoch(phase, 0, changing(4))
    assert first == {"fit_given": 0.6, "prediction_changes": None, "warmup_over": 0.0}
    second = one_epoch(phase, 1, changing(1))
    assert second["fit_given"] == pytest.approx(0.9) and second["prediction_changes"] == pytest.approx(0.3)


def test_the_warmup_lasts_while_the_changes_keep_falling_and_ends_when_they_stop():
    phase = make_phase()
    alternating = [changing(5), LABELS]  # 5 of 10 predictions change every epoch: never a new low
    falling = [
        changing(8),
        changing(2),
        LABELS.clone(),
        changing(1),
        LABELS.clone(),
    ]  # changes 0.6 … then no lower than 0.1
    ended = []
    for epoch, predicted in enumerate(falling + alternating * 3):
        ended.append(one_epoch(phase, epoch, predicted)["warmup_over"])
        assert phase.robust(epoch) == (epoch > ended.index(1.0) if 1.0 in ended else False)
    lows = phase.changes
    assert lows[:3] == pytest.approx([0.6, 0.2, 0.1])
    first = ended.index(1.0)
    assert min(lows[first - PATIENCE : first]) >= min(lows[: first - PATIENCE])  # the rule, where it fired
    assert phase.warmup_epochs() == first + 1


def test_a_network_whose_predictions_keep_settling_never_leaves_the_warmup():
    phase = make_phase()
    predicted = LABELS.clone()
    for epoch in range(10):
        predicted = predicted.clone()
        predicted[: 10 - epoch] = (predicted[: 10 - epoch] + 1) % 3  # one fewer change every epoch
        one_epoch(phase, epoch, predicted)
    assert phase.changes == pytest.approx([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1])
    assert not phase.robust(10) and phase.warmup_epochs() is None


def test_the_minimum_and_a_fixed_warmup_are_honoured():
    short = make_phase(minimum=8)
    for epoch in range(7):
        one_epoch(short, epoch, LABELS)  # settled from the start
    assert not short.robust(7)
    one_epoch(short, 7, LABELS)
    assert short.robust(8) and short.warmup_epochs() == 8
    fixed = make_phase(fixed=2)
    one_epoch(fixed, 0, changing(9))
    assert not fixed.robust(1)
    one_epoch(fixed, 1, changing(1))
    assert fixed.robust(2) and fixed.warmup_epochs() == 2


def test_restore_recovers_the_phase_from_a_resumed_history():
    phase = make_phase()
    history = []
    for epoch in range(8):
        history.append({"epoch": epoch + 1, **one_epoch(phase, epoch, [LABELS, changing(3)][epoch % 2])})
    resumed = make_phase()
    resumed.restore(history)
    assert resumed.started == phase.started and resumed.changes == pytest.approx(phase.changes)


def test_cross_entropy_logs_the_signals_without_a_warmup():
    phase = make_phase(minimum=None)
    for epoch in range(8):
        logged = one_epoch(phase, epoch, LABELS)
    assert logged == {"fit_given": 1.0, "prediction_changes": 0.0} and not phase.robust(8)


def digits_run(method):
    from lnlclean.config import RunConfig
    from lnlclean.data.noise import parse_noise_spec
    from lnlclean.jobs.benchmark import run_benchmark_one

    config = RunConfig(method=method, epochs=3, batch_size=64, device="cpu", flip=False, seed=1)
    return run_benchmark_one("digits", parse_noise_spec("sym40"), config, train_size=300)


@pytest.mark.parametrize("method", ["alr", "alim"])
def test_a_one_network_method_still_in_its_warmup_trains_exactly_as_cross_entropy(method):
    """Three epochs cannot show PATIENCE epochs without a new low, so the warm-up never ends."""
    ce, robust = digits_run("ce"), digits_run(method)
    assert [entry["prediction_changes"] for entry in robust["history"]] == [
        entry["prediction_changes"] for entry in ce["history"]
    ]
    assert (robust["f1"], robust["auroc"], robust["test_accuracy"]) == (ce["f1"], ce["auroc"], ce["test_accuracy"])


@pytest.mark.parametrize("method", ["alr", "alim", "pmnar", "promix", "flywheel"])
def test_a_method_that_never_left_its_warmup_says_so(method):
    run = digits_run(method)
    assert run["method_summary"]["warmup"] is None
    assert [entry["warmup_over"] for entry in run["history"]] == [0.0, 0.0, 0.0]
    assert "still-learning" in [warning["code"] for warning in run["warnings"]]


def test_cross_entropy_never_warns_that_it_is_still_learning():
    assert "still-learning" not in [warning["code"] for warning in digits_run("ce")["warnings"]]


def test_heads_on_embeddings_warm_up_for_the_minimum_even_while_their_predictions_settle():
    phase = make_phase(minimum=3, features=torch.zeros(len(LABELS), 4))
    predicted = LABELS.clone()
    signals = []
    for epoch in range(6):
        predicted = predicted.clone()
        predicted[: 10 - epoch] = (predicted[: 10 - epoch] + 1) % 3  # still settling: the signal would wait
        signals.append(one_epoch(phase, epoch, predicted)["warmup_over"])
    assert signals == [0.0, 0.0, 1.0, 1.0, 1.0, 1.0]
    assert [phase.robust(epoch) for epoch in range(5)] == [False, False, False, True, True]
    assert phase.warmup_epochs() == 3
