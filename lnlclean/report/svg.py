"""Plots written as inline SVG: line charts, stacked histograms and heatmaps.

The report draws its plots itself rather than through matplotlib. It needs three kinds of plot,
each a few dozen lines of SVG. Written by hand, a plot is a few kilobytes of text in the page
(not a base64 PNG), stays sharp at any zoom, takes its colours from the page's stylesheet, and
carries a tooltip (``<title>``) on every bar, cell and point, plus the data attributes the page's
script uses to filter the gallery when a heatmap cell is clicked. It also keeps a large plotting
dependency, and its font cache built on first import, out of the install.

Every function returns one ``<svg>`` element as a string. Colours come from CSS classes
(``series-0`` …) defined in ``assets/report.css``; heatmap cells carry their fill inline.
"""

from __future__ import annotations

import base64
import io
import json
import math
from collections.abc import Callable, Sequence
from html import escape

import numpy as np
from PIL import Image

MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 48, 12, 12, 34
FLAT_SPAN = 1e-6  # relative spread below which a series is flat: float32 rounding noise, not a trend
FLAT_BAND = 0.2  # a flat series is drawn in a band this share of its value either side of it


def nice_ticks(low: float, high: float, count: int = 5, integer: bool = False) -> list[float]:
    """Returns about `count` round tick values covering [low, high] (1, 2, 2.5 or 5 times a power of ten apart).

    With `integer` the ticks are whole numbers (for epochs): no step below 1, and no 2.5.
    A flat range (one value, or a spread within rounding noise of it) gets the band of
    :func:`flat_band` around its value.
    """
    low, high = flat_band(low, high)
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    steps = (1, 2, 5, 10) if integer else (1, 2, 2.5, 5, 10)
    step = next(m * magnitude for m in steps if m * magnitude >= raw)
    if integer:
        step = max(1, round(step))
    # Ticks are k * step, rounded well below the step, so no sum drifts and tiny scales survive.
    digits = 6 - math.floor(math.log10(step))
    first, last = math.floor(low / step + 1e-9), math.ceil(high / step - 1e-6)
    return [round(k * step, digits) for k in range(first, last + 1)]


def flat_band(low: float, high: float) -> tuple[float, float]:
    """Returns (low, high) in order, widened where they are (nearly) one value to a band around it.

    The band is :data:`FLAT_BAND` of the value either side of it (0.25 → 0.2–0.3,
    1500 → 1200–1800), or −1 to 1 around zero; non-finite bounds give 0 to 1.
    """
    if not (math.isfinite(low) and math.isfinite(high)):
        return 0.0, 1.0
    low, high = min(low, high), max(low, high)
    if high - low > FLAT_SPAN * max(abs(low), abs(high)):
        return low, high
    # The spread is noise, so centre on the value its first six digits give (0.2500001 → 0.25),
    # where a round value puts the band on round ticks.
    middle = float(f"{(low + high) / 2:.6g}")
    half = abs(middle) * FLAT_BAND or 1.0
    return middle - half, middle + half


def format_number(value: float, digits: int = 4) -> str:
    """Returns `value` in at most `digits` significant digits (two
    fewer below 1e-3 or from 1e5 up), without trailing zeros.
    """
    if value == 0:
        return "0"
    if abs(value) >= 1e5 or abs(value) < 1e-3:
        return f"{value:.{digits - 2}g}"
    return f"{value:.{digits}g}"


def tick_labels(ticks: Sequence[float]) -> list[str]:
    """Returns a label per tick: :func:`format_number`'s, with more digits where four would leave two
    labels alike or round a tick (1.25e-05 to 1.2e-05)."""
    if len(ticks) < 2:
        return [format_number(tick) for tick in ticks]
    step = min(abs(b - a) for a, b in zip(ticks, ticks[1:]))
    for digits in range(4, 18):
        labels = [format_number(tick, digits) for tick in ticks]
        exact = all(abs(float(label) - tick) <= step * 1e-3 for label, tick in zip(labels, ticks))
        if exact and len(set(labels)) == len(labels):
            break
    return labels


def _linear(domain: tuple[float, float], extent: tuple[float, float]) -> Callable[[float], float]:
    (d0, d1), (r0, r1) = domain, extent
    span = d1 - d0 or 1.0
    return lambda v: r0 + (v - d0) / span * (r1 - r0)


def _open(width: int, height: int, label: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="plot" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-label="{escape(label)}">'
    )


def _axes(width: int, height: int, x_ticks, x, y_ticks, y, x_label: str, y_label: str) -> list[str]:
    """Returns the SVG elements of both axes: grid lines, tick labels and axis titles."""
    left, bottom = MARGIN_LEFT, height - MARGIN_BOTTOM
    parts = [f'<line class="axis" x1="{left}" y1="{bottom}" x2="{width - MARGIN_RIGHT}" y2="{bottom}"/>']
    for tick, text in zip(y_ticks, tick_labels(y_ticks)):
        ty = y(tick)
        parts.append(f'<line class="grid" x1="{left}" y1="{ty:.1f}" x2="{width - MARGIN_RIGHT}" y2="{ty:.1f}"/>')
        parts.append(f'<text class="tick" x="{left - 4}" y="{ty + 3:.1f}" text-anchor="end">{text}</text>')
    for tick, text in zip(x_ticks, tick_labels(x_ticks)):
        tx = x(tick)
        parts.append(f'<text class="tick" x="{tx:.1f}" y="{bottom + 13}" text-anchor="middle">{text}</text>')
    parts.append(
        f'<text class="label" x="{(left + width - MARGIN_RIGHT) / 2:.0f}" y="{height - 4}" '
        f'text-anchor="middle">{escape(x_label)}</text>'
    )
    if y_label:
        parts.append(
            f'<text class="label" transform="translate(11 {(MARGIN_TOP + bottom) / 2:.0f}) rotate(-90)" '
            f'text-anchor="middle">{escape(y_label)}</text>'
        )
    return parts


def _legend(width: int, names: Sequence[str]) -> list[str]:
    """Returns legend entries (a swatch and a name per series) along the top right."""
    parts = []
    right = width - MARGIN_RIGHT
    for k, name in reversed(list(enumerate(names))):
        text_width = 5.6 * len(name)
        parts.append(
            f'<rect class="series-{k}" x="{right - text_width - 12:.0f}" y="{MARGIN_TOP - 8}" width="9" height="9"/>'
        )
        parts.append(f'<text class="tick" x="{right:.0f}" y="{MARGIN_TOP}" text-anchor="end">{escape(name)}</text>')
        right -= text_width + 22
    return parts


def line_chart(
    x_values: Sequence[float],
    series: dict[str, Sequence[float | None]],
    title: str,
    x_label: str = "epoch",
    y_label: str = "",
    width: int = 340,
    height: int = 190,
) -> str:
    """Returns an SVG line chart of each of `series` (name → one value or None per x) against `x_values`.

    None values leave a gap in the line. Every point has a tooltip with its x and value.
    """
    finite = [v for values in series.values() for v in values if v is not None and math.isfinite(v)]
    y_ticks = nice_ticks(min(finite, default=0.0), max(finite, default=1.0), 4)
    first, last = min(x_values, default=0), max(x_values, default=1)
    whole = all(float(v).is_integer() for v in x_values)
    x_ticks = [t for t in nice_ticks(first, last, 5, integer=whole) if first <= t <= last] or [first]
    x = _linear((first, last), (MARGIN_LEFT + 4, width - MARGIN_RIGHT))
    y = _linear((y_ticks[0], y_ticks[-1]), (height - MARGIN_BOTTOM, MARGIN_TOP + 6))
    parts = [_open(width, height, title), *_axes(width, height, x_ticks, x, y_ticks, y, x_label, y_label)]
    for k, (name, values) in enumerate(series.items()):
        points = [(xv, v) for xv, v in zip(x_values, values)]
        for run in _unbroken_runs(points):
            coords = " ".join(f"{x(a):.1f},{y(b):.1f}" for a, b in run)
            parts.append(f'<polyline class="line series-{k}" points="{coords}"/>')
        for a, b in points:
            if b is not None and math.isfinite(b):
                parts.append(
                    f'<circle class="point series-{k}" cx="{x(a):.1f}" cy="{y(b):.1f}" r="2.2">'
                    f"<title>{escape(name)}, {escape(x_label)} {format_number(a)}: {format_number(b)}</title></circle>"
                )
    if len(series) > 1:
        parts += _legend(width, list(series))
    return "".join(parts) + "</svg>"


def _unbroken_runs(points: list[tuple[float, float | None]]) -> list[list[tuple[float, float]]]:
    """Returns the maximal runs of consecutive points whose value is a finite number."""
    runs, current = [], []
    for a, b in points:
        if b is None or not math.isfinite(b):
            if current:
                runs.append(current)
            current = []
        else:
            current.append((a, b))
    return runs + ([current] if current else [])


def stacked_histogram(
    edges: np.ndarray,
    groups: dict[str, np.ndarray],
    title: str,
    x_label: str,
    marker: float | None = None,
    marker_label: str = "",
    width: int = 520,
    height: int = 220,
) -> str:
    """Returns an SVG histogram with one bar per bin of `edges`, stacked from `groups` (name → count per bin).

    A dashed vertical line marks `marker` (e.g. the flagging threshold). Every bar segment has a
    tooltip with its bin, group and count.
    """
    totals = np.sum(list(groups.values()), axis=0)
    y_ticks = nice_ticks(0, max(1, int(totals.max(initial=0))), 4)
    x_ticks = nice_ticks(float(edges[0]), float(edges[-1]), 5)
    x = _linear((float(edges[0]), float(edges[-1])), (MARGIN_LEFT, width - MARGIN_RIGHT))
    y = _linear((0, y_ticks[-1]), (height - MARGIN_BOTTOM, MARGIN_TOP + 6))
    parts = [_open(width, height, title), *_axes(width, height, x_ticks, x, y_ticks, y, x_label, "samples")]
    base = np.zeros(len(edges) - 1)
    for k, (name, counts) in enumerate(groups.items()):
        for b, count in enumerate(counts):
            if count <= 0:
                continue
            x0, x1 = x(edges[b]) + 0.5, x(edges[b + 1]) - 0.5
            top, bottom = y(base[b] + count), y(base[b])
            parts.append(
                f'<rect class="series-{k}" x="{x0:.1f}" y="{top:.1f}" width="{max(x1 - x0, 0.5):.1f}" '
                f'height="{bottom - top:.1f}">'
                f"<title>{escape(x_label)} {format_number(edges[b])}–{format_number(edges[b + 1])}: "
                f"{int(count)} {escape(name)}</title></rect>"
            )
        base += counts
    if marker is not None:
        mx = x(marker)
        parts.append(
            f'<line class="marker" x1="{mx:.1f}" y1="{MARGIN_TOP}" x2="{mx:.1f}" y2="{height - MARGIN_BOTTOM}"/>'
        )
        parts.append(f'<text class="tick" x="{mx + 3:.1f}" y="{MARGIN_TOP + 18}">{escape(marker_label)}</text>')
    parts += _legend(width, list(groups))
    return "".join(parts) + "</svg>"


HEAT_STOPS = np.array([(255, 255, 255), (158, 202, 225), (49, 130, 189), (8, 48, 107)], dtype=np.float64)
DIAGONAL_RGB = (228, 231, 236)
CELL_LIMIT = 30  # above this many classes a heatmap is one inline PNG, not a shape per cell


def heat_colours(shares: np.ndarray) -> np.ndarray:
    """Returns uint8 RGB (shape of `shares` + (3,)) for `shares`
    of the colour scale (0–1): white through blue to deep navy.
    """
    position = np.clip(np.asarray(shares, dtype=np.float64), 0.0, 1.0) * (len(HEAT_STOPS) - 1)
    stops = np.arange(len(HEAT_STOPS))
    channels = [np.interp(position, stops, HEAT_STOPS[:, c]) for c in range(3)]
    return np.round(np.stack(channels, axis=-1)).astype(np.uint8)


def heatmap(
    values: np.ndarray,
    labels: Sequence[str],
    title: str,
    row_title: str,
    column_title: str,
    tooltip: Callable[[int, int], str],
    cell_text: Callable[[int, int], str] | None = None,
    skip_diagonal: bool = False,
    pick_pairs: bool = False,
) -> str:
    """Returns an SVG heatmap of the square matrix `values`, one row and one column per label.

    Colour is proportional to the value over the largest value shown. With `skip_diagonal`
    the diagonal is drawn in grey and left out of the colour scale, so off-diagonal structure
    stays visible. With `pick_pairs`, off-diagonal cells holding a value carry ``data-given`` /
    ``data-suggested`` (row and column), which the page's script turns into gallery filters.

    Up to :data:`CELL_LIMIT` labels every cell is a shape with its tooltip `tooltip(i, j)` and,
    when there is room, its text `cell_text(i, j)`. Beyond that the colours are one inline PNG
    (a pixel per cell) so the page stays light, and the values travel as JSON in ``data-values``
    for the page's script to show on hover.
    """
    n = len(labels)
    off = ~np.eye(n, dtype=bool) if skip_diagonal else np.ones((n, n), dtype=bool)
    top_value = float(values[off].max(initial=0.0)) or 1.0
    rgb = heat_colours(values / top_value)
    if skip_diagonal:
        rgb[~off] = DIAGONAL_RGB
    cell = max(3, min(34, 440 // max(n, 1)))
    show_labels = n <= 60
    gutter = 16 + (7 * max((len(str(label)) for label in labels), default=1) + 6 if show_labels else 0)
    size = gutter + n * cell
    parts = [_open(size + 8, size + 8, title)]
    if n <= CELL_LIMIT:
        parts += _heat_cells(
            values, rgb, gutter, cell, tooltip, cell_text if cell >= 22 else None, off, top_value, pick_pairs
        )
    else:
        parts.append(_heat_image(values, rgb, labels, gutter, cell, row_title, column_title, pick_pairs))
    if show_labels:
        for k, label in enumerate(labels):
            middle = gutter + k * cell + cell / 2
            parts.append(
                f'<text class="tick" x="{gutter - 4}" y="{middle + 3:.1f}" '
                f'text-anchor="end">{escape(str(label))}</text>'
            )
            parts.append(
                f'<text class="tick" transform="translate({middle + 3:.1f} {gutter - 4}) '
                f'rotate(-90)">{escape(str(label))}</text>'
            )
    parts.append(
        f'<text class="label" transform="translate(9 {gutter + n * cell / 2:.0f}) rotate(-90)" '
        f'text-anchor="middle">{escape(row_title)} ↓</text>'
    )
    parts.append(
        f'<text class="label" x="{gutter + n * cell / 2:.0f}" y="10" '
        f'text-anchor="middle">{escape(column_title)} →</text>'
    )
    return "".join(parts) + "</svg>"


def _heat_cells(values, rgb, gutter, cell, tooltip, cell_text, off, top_value, pick_pairs) -> list[str]:
    """Returns one ``<rect>`` per cell, with its tooltip and, where given, its text."""
    parts = []
    for i in range(len(values)):
        for j in range(len(values)):
            r, g, b = rgb[i, j]
            pick = f' data-given="{i}" data-suggested="{j}"' if pick_pairs and off[i, j] and values[i, j] else ""
            cx, cy = gutter + j * cell, gutter + i * cell
            parts.append(
                f'<rect class="cell" x="{cx}" y="{cy}" width="{cell}" height="{cell}" '
                f'fill="#{r:02x}{g:02x}{b:02x}"{pick}>'
                f"<title>{escape(tooltip(i, j))}</title></rect>"
            )
            text = cell_text(i, j) if cell_text else ""
            if text:
                dark = off[i, j] and values[i, j] / top_value > 0.45
                parts.append(
                    f'<text class="cell-text{" on-dark" if dark else ""}" x="{cx + cell / 2:.1f}" '
                    f'y="{cy + cell / 2 + 3.5:.1f}" text-anchor="middle">{escape(text)}</text>'
                )
    return parts


def _heat_image(values, rgb, labels, gutter, cell, row_title, column_title, pick_pairs) -> str:
    """Returns the heatmap's cells as one pixelated inline PNG, with the values and labels for the hover script."""
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG", optimize=True)
    uri = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    side = len(labels) * cell
    data = {
        "values": json.dumps([[_compact(float(v)) for v in row] for row in values], separators=(",", ":")),
        "labels": json.dumps([str(label) for label in labels], separators=(",", ":")),
        "row-title": row_title,
        "column-title": column_title,
    }
    attributes = "".join(f' data-{key}="{escape(value)}"' for key, value in data.items())
    pick = ' data-pick="pairs"' if pick_pairs else ""
    return (
        f'<image class="heat" x="{gutter}" y="{gutter}" width="{side}" height="{side}" preserveAspectRatio="none" '
        f'href="{uri}"{attributes}{pick}><title>{escape(row_title)} → {escape(column_title)}</title></image>'
    )


def _compact(value: float) -> int | float:
    """Returns `value` as an int when it is whole, else rounded to four significant digits (for JSON in the page)."""
    return int(value) if value.is_integer() else float(format_number(value))
