"""The report's line-chart axes: flat and near-flat series get a sensible band; tick labels never repeat."""

from __future__ import annotations

import re

import pytest

from lnlclean.report import svg

EPOCHS = [1, 2, 3, 4, 5, 6]


def y_axis(chart: str) -> list[str]:
    """Returns the y tick labels of a chart, bottom to top."""
    return re.findall(r'<text class="tick" [^>]*text-anchor="end">([^<]*)</text>', chart)


def grid_rows(chart: str) -> list[float]:
    """Returns the y coordinate of each horizontal grid line, bottom to top."""
    return [float(y) for y in re.findall(r'<line class="grid" [^>]*y1="([^"]+)"', chart)]


def point_rows(chart: str) -> list[float]:
    """Returns the y coordinate of each plotted point."""
    return [float(y) for y in re.findall(r'<circle [^>]*cy="([^"]+)"', chart)]


def constant_chart(value: float) -> str:
    """Returns the line chart of `value` at every epoch."""
    return svg.line_chart(EPOCHS, {"eta": [value] * len(EPOCHS)}, "eta (η)")


def test_constant_series_sits_on_the_middle_tick_of_a_band_around_it():
    chart = constant_chart(0.25)
    assert y_axis(chart) == ["0.2", "0.225", "0.25", "0.275", "0.3"]
    rows = grid_rows(chart)
    assert set(point_rows(chart)) == {rows[2]}


def test_constant_zero_series_is_centred_in_minus_one_to_one():
    chart = constant_chart(0.0)
    assert y_axis(chart) == ["-1", "-0.5", "0", "0.5", "1"]
    assert set(point_rows(chart)) == {grid_rows(chart)[2]}


@pytest.mark.parametrize(
    "value, labels",
    [
        (1500, ["1200", "1400", "1600", "1800"]),
        (1e-4, ["8e-05", "9e-05", "0.0001", "0.00011", "0.00012"]),
        (-3, ["-4", "-3.5", "-3", "-2.5", "-2"]),
    ],
)
def test_constant_series_band_follows_the_value_scale(value, labels):
    chart = constant_chart(value)
    assert y_axis(chart) == labels
    rows = grid_rows(chart)
    assert all(rows[-1] < y < rows[0] for y in point_rows(chart))


def test_rounding_noise_is_drawn_flat():
    chart = svg.line_chart(EPOCHS, {"eta": [0.25, 0.2500001] * 3}, "eta")
    assert y_axis(chart) == ["0.2", "0.225", "0.25", "0.275", "0.3"]
    assert max(point_rows(chart)) - min(point_rows(chart)) < 0.2


def test_small_real_spread_gets_distinct_exact_labels():
    ticks = svg.nice_ticks(0.25, 0.250001, 4)
    labels = svg.tick_labels(ticks)
    assert len(set(labels)) == len(labels) and [float(label) for label in labels] == pytest.approx(ticks, abs=1e-12)
    assert svg.tick_labels([1e-5, 1.25e-5, 1.5e-5]) == ["1e-05", "1.25e-05", "1.5e-05"]


def test_missing_values_do_not_move_a_constant_axis():
    chart = svg.line_chart(EPOCHS, {"eta": [None, 0.25, float("nan"), 0.25, None, 0.25]}, "eta")
    assert y_axis(chart) == ["0.2", "0.225", "0.25", "0.275", "0.3"]
    assert y_axis(svg.line_chart(EPOCHS, {"eta": [None] * 6}, "eta")) == ["0", "0.25", "0.5", "0.75", "1"]


def test_rising_series_axis_is_unchanged():
    chart = svg.line_chart(EPOCHS, {"loss": [2.3, 1.7, 1.2, 0.9, 0.75, 0.6]}, "loss")
    assert y_axis(chart) == ["0.5", "1", "1.5", "2", "2.5"]
    assert svg.nice_ticks(1, 12, integer=True) == [0, 5, 10, 15] and svg.nice_ticks(1, 1, integer=True) == [0, 1, 2]
