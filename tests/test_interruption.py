"""Stopping a run: SIGINT/SIGTERM save a checkpoint mid-epoch, SIGKILL loses at most the epoch under way,
and ``--resume`` finishes with the same audit as an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from helpers import digits_pixels
from PIL import Image

from lnlclean.cli import main
from lnlclean.config import RunConfig
from lnlclean.interrupt import Interrupted, Stopped
from lnlclean.jobs.audit import run_audit
from lnlclean.methods import get_method
from lnlclean.report.audit import read_audit

METHODS = [
    ("ce", {}),
    ("pmnar", {"warmup": 1}),
    ("alr", {"warmup": 1}),
    ("alim", {"warmup": 1}),
    ("promix", {"warmup": 1}),
    ("flywheel", {"warmup": 1}),
    ("confident-learning", {}),
]
BATCH = 16  # 60 images: 4 steps per epoch


@pytest.fixture(autouse=True)
def sigint_raises():
    """Starts every test with Python's own SIGINT handler: a job started in the background has SIGINT ignored."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def signal_at_step(monkeypatch, method: str, signum: int, at_call: int) -> None:
    """Makes the `at_call`-th training step of `method` (1-based) send `signum` to this process."""
    method_cls = get_method(method)
    original = method_cls.training_step
    calls = {"n": 0}

    def step_then_signal(self, batch, epoch):
        calls["n"] += 1
        if calls["n"] == at_call:
            os.kill(os.getpid(), signum)
        return original(self, batch, epoch)

    monkeypatch.setattr(method_cls, "training_step", step_then_signal)


@pytest.mark.parametrize("method, params", METHODS)
def test_signal_mid_epoch_saves_a_checkpoint_that_resumes_to_the_same_audit(
    digits_folder, tmp_path, monkeypatch, method, params
):
    config = dict(method=method, method_params=params, epochs=3, batch_size=BATCH, device="cpu", flip=False, seed=5)
    folder = (digits_folder.root, digits_folder.csv)
    reference = run_audit(*folder, RunConfig(**config), tmp_path / "a", tmp_path / "cache")

    with monkeypatch.context() as patch:
        signal_at_step(patch, method, signal.SIGTERM, at_call=6)  # epoch 2, step 2
        with pytest.raises(Interrupted) as stopped:
            run_audit(*folder, RunConfig(**config), tmp_path / "b", tmp_path / "cache")
    assert (stopped.value.epoch, stopped.value.step, stopped.value.exit_code) == (2, 2, 143)
    saved = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)
    assert (saved["epochs_done"], saved["steps_done"]) == (1, 2)
    assert not (tmp_path / "b" / "audit.parquet").exists()

    resumed = run_audit(*folder, RunConfig(**config), tmp_path / "b", tmp_path / "cache", resume=True)
    assert resumed.summary["resumed_from_epoch"] == 1 and resumed.summary["resumed_at"] == "epoch 2, step 2"
    pd.testing.assert_frame_equal(resumed.audit, reference.audit)
    # The times count the run before the stop too: the whole of epoch 2, and all the training.
    timings = resumed.summary["timings"]
    assert resumed.summary["history"][1]["seconds"] > saved["epoch_seconds"] > 0
    assert timings["train_seconds"] > saved["train_seconds"] > 0
    assert timings["total_seconds"] > timings["train_seconds"]
    assert not (tmp_path / "b" / "checkpoint.pt").exists()  # finished: nothing left to resume


@pytest.mark.parametrize("method, params", [("ce", {}), ("promix", {"warmup": 1})])
def test_a_crash_mid_epoch_resumes_from_the_periodic_checkpoint(digits_folder, tmp_path, monkeypatch, method, params):
    from lnlclean import engine

    config = dict(method=method, method_params=params, epochs=3, batch_size=BATCH, device="cpu", flip=False, seed=5)
    folder = (digits_folder.root, digits_folder.csv)
    reference = run_audit(*folder, RunConfig(**config), tmp_path / "a", tmp_path / "cache")

    method_cls = get_method(method)
    original = method_cls.training_step
    calls = {"n": 0}

    def crash_at_sixth_step(self, batch, epoch):
        calls["n"] += 1
        if calls["n"] == 6:  # epoch 2, step 2: the periodic checkpoint after step 1 is the last one
            raise RuntimeError("simulated crash")
        return original(self, batch, epoch)

    with monkeypatch.context() as patch:
        patch.setattr(engine, "CHECKPOINT_SECONDS", 0.0)
        patch.setattr(method_cls, "training_step", crash_at_sixth_step)
        with pytest.raises(RuntimeError, match="simulated crash"):
            run_audit(*folder, RunConfig(**config), tmp_path / "b", tmp_path / "cache")
    saved = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)
    assert (saved["epochs_done"], saved["steps_done"]) == (1, 1)

    resumed = run_audit(*folder, RunConfig(**config), tmp_path / "b", tmp_path / "cache", resume=True)
    pd.testing.assert_frame_equal(resumed.audit, reference.audit)


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_cli_exits_128_plus_signal_with_a_line_on_how_to_resume(
    digits_folder, tmp_path, monkeypatch, capsys, signum, code
):
    out = tmp_path / "out"
    argv = [
        "audit",
        str(digits_folder.root),
        str(digits_folder.csv),
        "--out",
        str(out),
        "--cache-dir",
        str(tmp_path / "cache"),
        "--epochs",
        "2",
        "--batch-size",
        str(BATCH),
        "--device",
        "cpu",
        "--quiet",
    ]
    signal_at_step(monkeypatch, "ce", signum, at_call=3)
    assert main(argv) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert f"stopped by {signal.Signals(signum).name} in epoch 1 after step 3" in err[0]
    assert str(out / "checkpoint.pt") in err[0] and "--resume" in err[0]
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_second_signal_stops_at_once(digits_folder, tmp_path, monkeypatch):
    method_cls = get_method("ce")
    original = method_cls.training_step

    def signal_twice(self, batch, epoch):
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)
        return original(self, batch, epoch)

    monkeypatch.setattr(method_cls, "training_step", signal_twice)
    with pytest.raises(Stopped):
        run_audit(
            digits_folder.root,
            digits_folder.csv,
            RunConfig(epochs=2, device="cpu"),
            tmp_path / "out",
            tmp_path / "cache",
        )
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- real processes


def lnlclean(*args, **popen) -> subprocess.Popen:
    """Starts ``python -m lnlclean ARGS`` with stderr captured."""
    return subprocess.Popen(
        [sys.executable, "-m", "lnlclean", *map(str, args)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, process.stderr.read()
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def slow_run(tmp_path_factory):
    """Returns (argv(out, *extra), reference audit) for a CPU audit of 60 digits with epochs long enough to stop one."""
    root = tmp_path_factory.mktemp("slow")
    pixels, labels = digits_pixels()
    (root / "images").mkdir()
    for i, image in enumerate(pixels):
        Image.fromarray(image).save(root / "images" / f"{i:02d}.png")
    pd.DataFrame({"path": [f"{i:02d}.png" for i in range(len(labels))], "label": labels}).to_csv(
        root / "labels.csv", index=False
    )

    def argv(out: Path, *extra: str) -> list:
        return [
            "audit",
            root / "images",
            root / "labels.csv",
            "--out",
            out,
            "--cache-dir",
            root / "cache",
            "--image-size",
            "32",
            "--batch-size",
            "4",
            "--epochs",
            "4",
            "--device",
            "cpu",
            "--seed",
            "2",
            "--quiet",
            *extra,
        ]

    reference = lnlclean(*argv(root / "reference"))
    assert reference.wait(timeout=300) == 0, reference.stderr.read()
    return argv, read_audit(root / "reference" / "audit.parquet")[0]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL])
def test_a_process_stopped_by_a_signal_resumes_to_the_same_audit(slow_run, tmp_path, signum):
    argv, reference = slow_run
    out = tmp_path / "stopped"
    process = lnlclean(*argv(out))
    wait_for(out / "checkpoint.pt", process)  # epoch 1 is done: stop during epoch 2
    time.sleep(0.05)
    process.send_signal(signum)
    code = process.wait(timeout=120)
    stderr = process.stderr.read().strip().splitlines()
    saved = torch.load(out / "checkpoint.pt", weights_only=True)
    if signum == signal.SIGKILL:
        assert code == -signal.SIGKILL
        assert saved["epochs_done"] >= 1 and saved["steps_done"] == 0
    else:
        assert code == 128 + signum
        assert len(stderr) == 1 and "--resume" in stderr[0], stderr
        assert saved["steps_done"] >= 1
    assert not (out / "audit.parquet").exists()

    resumed = lnlclean(*argv(out, "--resume"))
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()
    pd.testing.assert_frame_equal(read_audit(out / "audit.parquet")[0], reference)
    assert not list(out.glob(".*.tmp"))


def test_a_signal_while_decoding_stops_at_once_and_leaves_no_cache_file(digits_folder, tmp_path, monkeypatch, capsys):
    from lnlclean.data import decode

    original = decode._decode
    calls = {"n": 0}

    def decode_then_signal(path, size):
        calls["n"] += 1
        if calls["n"] == 5:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.5)  # the handler runs in the main thread meanwhile
        return original(path, size)

    monkeypatch.setattr(decode, "_decode", decode_then_signal)
    argv = [
        "audit",
        str(digits_folder.root),
        str(digits_folder.csv),
        "--out",
        str(tmp_path / "out"),
        "--cache-dir",
        str(tmp_path / "cache"),
        "--workers",
        "1",
        "--epochs",
        "1",
        "--device",
        "cpu",
        "--quiet",
    ]
    assert main(argv) == 143
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["stopped by SIGTERM; unfinished outputs are never written, so run the same command again"]
    assert list((tmp_path / "cache").iterdir()) == [] and not (tmp_path / "out").exists()
