"""Several processes: torchrun runs of every method on CPU (gloo), identical state on every rank, and the pieces."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.multiprocessing as mp
from PIL import Image
from sklearn.datasets import load_digits

from lnlclean import distributed
from lnlclean.config import RunConfig
from lnlclean.distributed import World, keep_last
from lnlclean.engine import TrainData, fit, resolve_device, steps_in_epoch
from lnlclean.errors import UserError
from lnlclean.interrupt import Interrupted
from lnlclean.methods import METHODS, usable_methods
from lnlclean.methods.base import SampleState

ALL_METHODS = usable_methods("finetune")  # knn needs --features frozen
N_FOLDER = 120
WRONG = 24


def torchrun(*args, processes: int = 2) -> subprocess.CompletedProcess:
    """Runs ``torchrun --standalone --nproc-per-node <processes> -m lnlclean <args>``. Returns the finished process."""
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={processes}",
        "-m",
        "lnlclean",
        *map(str, args),
    ]
    return subprocess.run(
        command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=900, check=False
    )


@pytest.fixture(scope="module")
def noisy_digits(tmp_path_factory):
    """120 digits as PNG files with a labels CSV in which 24 labels are wrong."""
    root = tmp_path_factory.mktemp("noisy")
    (root / "images").mkdir()
    digits = load_digits()
    rng = np.random.default_rng(1)
    given = digits.target[:N_FOLDER].copy()
    wrong = rng.choice(N_FOLDER, size=WRONG, replace=False)
    given[wrong] = (given[wrong] + rng.integers(1, 10, size=WRONG)) % 10
    paths = []
    for i in range(N_FOLDER):
        paths.append(f"d{i:04d}.png")
        Image.fromarray(np.round(digits.images[i] * 255 / 16).astype(np.uint8), mode="L").save(
            root / "images" / paths[-1]
        )
    pd.DataFrame({"path": paths, "label": given}).to_csv(root / "labels.csv", index=False)
    return root


def test_two_process_benchmark_detects_noise_as_well_as_one_process(tmp_path, digits_benchmark):
    done = torchrun(
        "benchmark",
        "digits",
        "--noise",
        "sym40",
        "--method",
        "all",
        "--epochs",
        60,
        "--train-size",
        600,
        "--device",
        "cpu",
        "--out",
        tmp_path / "bench",
        "--quiet",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("wrote") == 1  # only rank 0 prints and writes
    runs = {run["method"]: run for run in json.loads((tmp_path / "bench" / "benchmark.json").read_text())["runs"]}
    assert sorted(runs) == ALL_METHODS
    for method, run in runs.items():
        single = digits_benchmark(method)
        assert run["device"].endswith("× 2 processes")
        assert abs(run["f1"] - single["f1"]) <= 0.05, (method, run["f1"], single["f1"])


@pytest.mark.parametrize("method", ALL_METHODS)
def test_two_process_audit_has_one_row_per_sample(noisy_digits, tmp_path, method):
    out = tmp_path / "out"
    done = torchrun(
        "audit",
        noisy_digits / "images",
        noisy_digits / "labels.csv",
        "--method",
        method,
        "--epochs",
        3,
        "--device",
        "cpu",
        "--out",
        out,
        "--cache-dir",
        tmp_path / "cache",
        "--quiet",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    audit = pd.read_parquet(out / "audit.parquet")
    expected = pd.read_csv(noisy_digits / "labels.csv")
    assert audit["index"].tolist() == list(range(N_FOLDER))
    assert audit["path"].tolist() == expected["path"].tolist()
    assert audit["clean_prob"].between(0, 1).all()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["device"].endswith("× 2 processes") and len(summary["history"]) == 3
    assert sorted(p.name for p in out.iterdir()) == ["audit.parquet", "report.html", "summary.json"]


def test_every_process_reports_a_bad_option_on_one_line(noisy_digits, tmp_path):
    done = torchrun(
        "audit",
        noisy_digits / "images",
        noisy_digits / "labels.csv",
        "--batch-size",
        2,
        "--epochs",
        2,
        "--device",
        "cpu",
        "--out",
        tmp_path / "out",
        "--cache-dir",
        tmp_path / "cache",
        "--quiet",
    )
    assert done.returncode != 0
    for rank in (0, 1):
        assert f"error: [rank {rank}/2] --batch-size 2: each of the 2 processes needs at least 2 images" in done.stderr
    ours, launcher_report = done.stderr.split(
        "Traceback", 1
    )  # torchrun reports a failed process with its own traceback
    assert "ChildFailedError" in launcher_report and "Traceback" not in launcher_report
    assert [line for line in ours.splitlines() if not re.match(r"[WEI]\d{4} ", line)] == [
        line for line in ours.splitlines() if line.startswith("error: [rank ")
    ]
    assert not (tmp_path / "out").exists()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _join(rank: int, size: int, port: int) -> None:
    """Makes this spawned process rank `rank` of `size`, as torchrun's environment would."""
    os.environ.update(
        WORLD_SIZE=str(size), RANK=str(rank), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    torch.set_num_threads(1)


def _digits_data(n: int) -> TrainData:
    digits = load_digits()
    rng = np.random.default_rng(0)
    labels = digits.target[:n].copy()
    flip = rng.random(n) < 0.3
    labels[flip] = rng.integers(0, 10, size=int(flip.sum()))
    images = np.round(digits.images[:n] * 255 / 16).astype(np.uint8)[..., None]
    return TrainData(images=images, labels=labels, n_classes=10, flip=False)


def _checksums_in_process(rank: int, size: int, port: int, out_dir: str) -> None:
    _join(rank, size, port)
    sums = {}
    for method in ALL_METHODS:
        result = fit(_digits_data(250), RunConfig(method=method, epochs=2, batch_size=64, device="cpu"))
        networks = SampleState()
        for name, tensor in result.method.networks.state_dict().items():
            networks.add(name, tensor)
        sums[method] = {
            "state": result.method.state.checksum(),
            "networks": networks.checksum(),
            "probs": float(result.probs.sum()),
            "history": result.method.history[-1]["loss"],
        }
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as file:
        json.dump(sums, file)


def _stop_or_resume_in_process(rank: int, size: int, port: int, out_dir: str, phase: str) -> None:
    _join(rank, size, port)
    method_cls = METHODS["alr"]
    if phase == "stop" and rank == 1:  # only one process gets the signal, in epoch 2
        calls = {"n": 0}
        original = method_cls.training_step

        def step_then_signal(self, batch, epoch):
            calls["n"] += 1
            if calls["n"] == 6:
                os.kill(os.getpid(), signal.SIGTERM)
            return original(self, batch, epoch)

        method_cls.training_step = step_then_signal
    checkpoint = os.path.join(out_dir, "whole.pt" if phase == "whole" else "checkpoint.pt")
    config = RunConfig(method="alr", epochs=4, batch_size=64, device="cpu")
    try:
        result = fit(_digits_data(250), config, checkpoint_path=Path(checkpoint), resume=phase == "resume")
        outcome = {"state": result.method.state.checksum(), "probs": result.probs.tolist()}
    except Interrupted as stop:
        outcome = {"stopped": [stop.epoch, stop.step]}
    with open(os.path.join(out_dir, f"{phase}{rank}.json"), "w") as file:
        json.dump(outcome, file)


def test_a_signal_to_one_process_stops_all_at_the_same_step_and_resumes_to_the_same_result(tmp_path):
    for phase in ("whole", "stop", "resume"):
        mp.spawn(_stop_or_resume_in_process, args=(2, _free_port(), str(tmp_path), phase), nprocs=2)

    def read(name):
        return json.loads((tmp_path / f"{name}.json").read_text())

    assert read("stop0") == read("stop1") == {"stopped": [2, 2]}
    assert read("resume0") == read("resume1") == read("whole0")


def test_per_sample_state_is_identical_on_every_rank_after_training(tmp_path):
    mp.spawn(_checksums_in_process, args=(2, _free_port(), str(tmp_path)), nprocs=2)
    first, second = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert first == second
    empty = SampleState().checksum()
    assert {m for m, sums in first.items() if sums["state"] == empty} == {
        "confident-learning"
    }  # ce keeps the previous predictions (methods.phase)
    stateful = [sums["state"] for sums in first.values() if sums["state"] != empty]
    assert len(set(stateful)) == len(stateful)  # the digests tell states apart


def test_pack_and_unpack_carry_every_dtype_and_shape():
    state = SampleState()
    soft = state.add("soft", torch.rand(6, 3))
    flags = state.add("flags", torch.rand(6, 2) > 0.5)
    labels = state.add("labels", torch.arange(6) * 7)
    half = state.add("half", torch.rand(6).half())
    other = SampleState()
    copies = {
        name: other.add(name, torch.zeros_like(t))
        for name, t in (("soft", soft), ("flags", flags), ("labels", labels), ("half", half))
    }
    index = torch.tensor([4, 1, 5])
    packed = state.pack(index)
    assert packed.dtype == torch.uint8 and packed.shape == (3, 3 * 4 + 2 + 8 + 2)
    other.unpack(index, packed)
    for name, original in (("soft", soft), ("flags", flags), ("labels", labels), ("half", half)):
        assert torch.equal(copies[name][index], original[index])
        assert not copies[name][[0, 2, 3]].any()


def test_checksum_changes_with_one_value():
    state = SampleState()
    values = state.add("values", torch.zeros(4, 2))
    before = state.checksum()
    values[3, 1] = 1e-6
    assert state.checksum() != before


def test_keep_last_resolves_duplicate_indices_by_the_last_row():
    index = torch.tensor([3, 1, 3, 2, 1])
    rows = torch.tensor([[10], [11], [12], [13], [14]], dtype=torch.uint8)
    kept_index, kept_rows = keep_last(index, rows)
    assert dict(zip(kept_index.tolist(), kept_rows.flatten().tolist())) == {1: 14, 2: 13, 3: 12}


def test_a_world_of_one_returns_its_inputs():
    world = World()
    tensor = torch.tensor([1.0, 2.0])
    assert world.sum(tensor) is tensor and world.max_ints(3, 0) == [3, 0]
    assert torch.equal(world.row_mean(torch.tensor([[1.0, 2.0], [3.0, 4.0]])), torch.tensor([2.0, 3.0]))
    assert distributed.current() == World()


def test_last_batch_too_small_to_split_is_left_out():
    assert steps_in_epoch(130, 64) == 3  # 64, 64, 2
    assert steps_in_epoch(130, 64, processes=2) == 2  # 2 images cannot give 2 processes 2 each
    assert steps_in_epoch(132, 64, processes=2) == 3


def test_batch_size_and_device_are_checked_against_the_processes(monkeypatch):
    monkeypatch.setattr(distributed, "_CURRENT", World(rank=0, size=4))
    with pytest.raises(UserError, match="--batch-size 6: each of the 4 processes"):
        RunConfig(batch_size=6).validate()
    with pytest.raises(UserError, match="--device cuda:1: under torchrun"):
        resolve_device("cuda:1", World(rank=1, size=2, local_rank=1))
    assert resolve_device("cpu", World(rank=1, size=2, local_rank=1)) == torch.device("cpu")
