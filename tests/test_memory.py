"""Per-sample tables in float16 or CPU memory, sizes, and the host-memory guard."""

from __future__ import annotations

import pytest
import torch

from lnlclean.errors import UserError
from lnlclean.memory import check_host_memory, format_size, parse_size
from lnlclean.methods.base import SampleState, TablePolicy


@pytest.mark.parametrize(
    "text, size",
    [("64G", 64 * 2**30), ("512MiB", 512 * 2**20), ("1.5 GB", int(1.5 * 2**30)), ("1000", 1000), ("2t", 2 * 2**40)],
)
def test_sizes_are_read_in_powers_of_1024(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["lots", "-1G", "0", "12X", ""])
def test_a_size_that_is_not_one_is_refused_naming_the_option(text):
    with pytest.raises(UserError, match="--max-ram"):
        parse_size(text)


def test_sizes_are_written_in_the_largest_unit():
    assert format_size(3 * 2**30 + 2**29) == "3.5 GiB" and format_size(2048) == "2.0 KiB" and format_size(12) == "12 B"


def test_the_guard_names_what_takes_the_memory():
    needs = {"final probabilities": 3 * 2**30, "per-sample state": 2**30}
    check_host_memory(needs, "8G")
    with pytest.raises(
        UserError,
        match=r"--max-ram 6G: this run needs about 8.0 GiB \(final probabilities 3.0 GiB, per-sample state 1.0 GiB "
        r"for each of 2 processes\); try --state-dtype float16, or raise --max-ram$",
    ):
        check_host_memory(needs, "6G", processes=2, remedies=("--state-dtype float16",))


@pytest.mark.parametrize(
    "budget, expected",
    [
        (None, (torch.float32, "meta")),
        (4_000, (torch.float32, "meta")),  # 1,000 numbers fit as float32
        (3_999, (torch.float16, "meta")),
        (1_999, (torch.float16, "cpu")),  # not even as float16
    ],
)
def test_auto_tables_take_float32_then_float16_then_cpu_memory(budget, expected):
    dtype, device = TablePolicy("auto", "auto", budget).choose(1_000, torch.device("meta"))
    assert (dtype, device.type) == expected


def test_tables_placed_on_the_device_use_up_the_budget():
    policy = TablePolicy("auto", "auto", 6_000)
    assert policy.choose(1_000, torch.device("meta")) == (torch.float32, torch.device("meta"))
    assert policy.choose(1_000, torch.device("meta")) == (torch.float16, torch.device("meta"))
    assert policy.choose(1_000, torch.device("meta")) == (torch.float16, torch.device("cpu"))


def test_explicit_dtype_and_place_win_over_the_budget():
    assert TablePolicy("float16", "device", 10).choose(1_000, torch.device("meta")) == (
        torch.float16,
        torch.device("meta"),
    )
    assert TablePolicy("float32", "cpu", None).choose(1_000, torch.device("meta")) == (
        torch.float32,
        torch.device("cpu"),
    )


def test_a_float16_table_reads_float32_rows_and_stores_float16():
    state = SampleState(torch.device("cpu"), TablePolicy("float16", "device"))
    table = state.add_table("soft", 5, 3)
    table.fill(lambda rows: torch.full((rows.stop - rows.start, 3), 1 / 3))
    table[torch.tensor([1, 4])] = torch.tensor([[0.1, 0.2, 0.7], [1.0, 0.0, 0.0]])
    assert table.data.dtype == torch.float16 and state.nbytes() == 5 * 3 * 2
    rows = table[torch.tensor([0, 1, 4])]
    assert rows.dtype == torch.float32
    torch.testing.assert_close(rows, torch.tensor([[1 / 3] * 3, [0.1, 0.2, 0.7], [1.0, 0.0, 0.0]]), atol=1e-3, rtol=0)
    assert table.map(lambda values, rows: values.argmax(dim=1)).tolist() == [0, 2, 0, 0, 0]


def test_rows_read_from_a_table_are_copies():
    table = SampleState().add_table("soft", 2, 2)
    rows = table[:]
    table[:] = torch.ones(2, 2)
    assert not rows.any()


@pytest.mark.parametrize("method", ["alr", "alim"])
def test_float16_tables_detect_noise_as_well_as_float32(digits_benchmark, method):
    from lnlclean.config import RunConfig
    from lnlclean.data.noise import parse_noise_spec
    from lnlclean.jobs.benchmark import run_benchmark_one

    config = RunConfig(method=method, epochs=60, device="cpu", state_dtype="float16")
    half = run_benchmark_one("digits", parse_noise_spec("sym40"), config, train_size=600)
    assert half["f1"] >= 0.9
    assert abs(half["f1"] - digits_benchmark(method)["f1"]) <= 0.03


@pytest.mark.parametrize(
    "method, formula",
    [
        ("ce", lambda n, k: 4 * n),
        ("alr", lambda n, k: 4 * n * k + 4 * n),
        ("alim", lambda n, k: 4 * n * k + 8 * n),
        ("pmnar", lambda n, k: n * k + 20 * n),
        ("promix", lambda n, k: 30 * n),
        ("flywheel", lambda n, k: 28 * n),
    ],
)
def test_per_sample_state_takes_what_the_readme_formula_says(method, formula):
    from helpers import make_method

    from lnlclean.methods import METHODS

    n, k = 50, 7
    built = make_method(METHODS[method], [i % k for i in range(n)], n_classes=k)
    assert built.state.nbytes() == formula(n, k)
