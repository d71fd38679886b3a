"""Sizing and watching a run: durations, the time budget, the up-front estimate and progress lines off a terminal."""

from __future__ import annotations

import io
import json

import pytest
from rich.console import Console

from lnlclean import budget, progress
from lnlclean.cli import main
from lnlclean.config import RunConfig
from lnlclean.durations import format_duration, parse_duration
from lnlclean.errors import UserError
from lnlclean.progress import Reporter


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(progress.time, "monotonic", fake)
    monkeypatch.setattr(budget.time, "perf_counter", fake)
    return fake


def log_reporter() -> tuple[Reporter, io.StringIO]:
    """Returns a Reporter writing to a text buffer (not a terminal), and the buffer."""
    reporter = Reporter()
    buffer = io.StringIO()
    reporter.console = Console(file=buffer, force_terminal=False, width=200)
    return reporter, buffer


@pytest.mark.parametrize(
    "text, seconds",
    [("90s", 90), ("10m", 600), ("1h", 3600), ("1h30m", 5400), ("2.5m", 150), ("45", 45), (" 10M ", 600)],
)
def test_durations_parse_as_people_write_them(text, seconds):
    assert parse_duration(text, "--time-budget") == seconds


@pytest.mark.parametrize("text", ["", "ten minutes", "10x", "m10", "0s", "-5m", "10m5"])
def test_a_bad_duration_names_the_option(text):
    with pytest.raises(UserError, match="^--time-budget"):
        parse_duration(text, "--time-budget")


def test_durations_print_at_a_readable_precision():
    assert [format_duration(s) for s in (4.25, 41.4, 192, 7500, None)] == [
        "4.2 s",
        "41 s",
        "3 min 12 s",
        "2 h 05 min",
        "–",
    ]


def test_training_lines_come_once_per_epoch_at_most_every_30_seconds(clock):
    reporter, buffer = log_reporter()
    with reporter.task("training ce on cpu", total=40, by_milestone=True) as task:
        for epoch in range(1, 5):  # 10 steps of 20 s: every epoch is 200 s, so every epoch gets its line
            for _ in range(10):
                clock.now += 20
                task(1)
            task.milestone(epoch=f"{epoch}/4", loss=1.0 / epoch)
    lines = buffer.getvalue().splitlines()
    assert lines[0] == "training ce on cpu (40 steps)"
    assert lines[1] == "training ce on cpu: 10/40  epoch 1/4  loss 1  elapsed 3 min 20 s, ETA 10 min 00 s"
    assert lines[-1] == "training ce on cpu: 40/40  epoch 4/4  loss 0.25  elapsed 13 min 20 s"
    assert len(lines) == 5


def test_short_epochs_are_reported_every_30_seconds_and_at_the_end(clock):
    reporter, buffer = log_reporter()
    with reporter.task("training", total=100, by_milestone=True) as task:
        for epoch in range(1, 101):  # 1 s epochs
            clock.now += 1
            task(1)
            task.milestone(epoch=f"{epoch}/100")
    lines = buffer.getvalue().splitlines()[1:]
    assert [line.split("  ")[1] for line in lines] == ["epoch 30/100", "epoch 60/100", "epoch 90/100", "epoch 100/100"]


def test_step_tasks_report_every_30_seconds_without_milestones(clock):
    reporter, buffer = log_reporter()
    with reporter.task("decoding 600 images", total=600) as advance:
        for _ in range(600):
            clock.now += 0.1
            advance(1)
    lines = buffer.getvalue().splitlines()
    assert lines[0] == "decoding 600 images (600 steps)"
    assert [line.split(":")[1].split()[0] for line in lines[1:]] == ["300/600", "600/600"]


def test_the_estimate_is_printed_once_from_the_first_timed_steps(clock):
    reporter, buffer = log_reporter()
    estimate = budget.EpochEstimate(steps_per_epoch=100, epochs_left=50, reporter=reporter)
    for _ in range(40):
        clock.now += 0.5  # 0.5 s per step: 50 s per epoch
        estimate.step_done()
    assert buffer.getvalue().splitlines() == ["≈ 50 s per epoch, 50 epochs ≈ 41 min 40 s"]


def test_a_budget_buys_the_epochs_that_fit_and_says_so():
    reporter, buffer = log_reporter()
    config = RunConfig(method="ce", epochs=100, time_budget=60.0)
    assert budget.epochs_within(config, seconds_per_epoch=4.0, spent=5.0, reporter=reporter) == 13  # 55 s / 4.2 s
    assert "time budget 1 min 00 s: ≈ 4.2 s per epoch, training 13 epochs ≈ 55 s" in buffer.getvalue()
    capped = RunConfig(method="ce", epochs=10, time_budget=3600.0)
    assert budget.epochs_within(capped, seconds_per_epoch=4.0, spent=5.0, reporter=reporter) == 10
    assert "(all of --epochs 10; more would fit)" in buffer.getvalue()


def test_a_budget_too_small_for_one_epoch_or_for_a_fixed_warmup_names_the_option():
    reporter, _ = log_reporter()
    with pytest.raises(UserError, match=r"--time-budget 10 s: one epoch of ce takes ≈ 21 s here; give at least 31 s"):
        budget.epochs_within(RunConfig(method="ce", time_budget=10.0), 20.0, spent=10.0, reporter=reporter)
    fixed = RunConfig(method="alr", time_budget=10.0, method_params={"warmup": 5})
    with pytest.raises(
        UserError, match=r"--time-budget 10 s fits 4 epoch\(s\) of alr .*--alr-warmup 5: must be below --epochs 4"
    ):
        budget.epochs_within(fixed, 2.0, spent=1.0, reporter=reporter)


def test_an_audit_with_a_time_budget_trains_the_epochs_it_chose_and_records_them(noisy_folder_small, tmp_path, capsys):
    out = tmp_path / "audit"
    code = main(
        [
            "audit",
            str(noisy_folder_small["images"]),
            str(noisy_folder_small["csv"]),
            "--out",
            str(out),
            "--epochs",
            "3",
            "--time-budget",
            "1h",
            "--device",
            "cpu",
            "--cache-dir",
            str(tmp_path / "cache"),
        ]
    )
    assert code == 0
    err = capsys.readouterr().err
    assert (
        "time budget 1 h 00 min: ≈" in err
        and "training 3 epochs" in err
        and "(all of --epochs 3; more would fit)" in err
    )
    summary = json.loads((out / "summary.json").read_text())
    assert (
        summary["settings"]["time_budget"] == 3600
        and summary["settings"]["epochs"] == 3
        and len(summary["history"]) == 3
    )


def test_an_audit_without_a_budget_prints_its_estimate_and_a_line_per_epoch(noisy_folder_small, tmp_path, capsys):
    code = main(
        [
            "audit",
            str(noisy_folder_small["images"]),
            str(noisy_folder_small["csv"]),
            "--out",
            str(tmp_path / "a"),
            "--epochs",
            "2",
            "--batch-size",
            "16",
            "--device",
            "cpu",
            "--cache-dir",
            str(tmp_path / "cache"),
        ]
    )
    assert code == 0
    err = capsys.readouterr().err.splitlines()
    assert sum(line.startswith("≈ ") and "per epoch, 2 epochs ≈" in line for line in err) == 1
    finished = [line for line in err if line.startswith("training ce on cpu") and "epoch 2/2" in line]
    assert len(finished) == 1 and "loss" in finished[0] and "changed" in finished[0] and "ETA" not in finished[0]
