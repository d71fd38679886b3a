"""The HTML report (``report.html``): one self-contained page about an audit.

The page inlines everything it shows (stylesheet, script, plots as SVG, thumbnails as
``data:`` URIs), so it opens from disk in any browser with no server and can be mailed or
attached to a CI run as one file. Sections, by element id:

    headline     the audit's warnings (see :mod:`lnlclean.report.trust`), samples, classes, estimated
                 noise rate, health score, method, settings, duration
    classes      per-class table (sortable): samples, flagged, estimated noise rate, top suggestion
    transitions  heatmap of given → suggested label over flagged samples, and any K×K matrix
                 the method estimates itself (LNL-flywheel's corruption matrix T_c)
    clean-prob   histogram of clean_prob split by flagged / kept, and by truly clean / noisy
                 when the true labels are known (benchmark runs, or a ``true_label`` column)
    gallery      thumbnails of the samples with the lowest clean_prob, with given and suggested
                 label, clean_prob and the method's signals; filter by class or label pair
    training     loss and the method's own statistics per epoch

Page weight does not grow with the dataset: plots are aggregates, and the gallery holds at
most ``gallery_size`` thumbnails of at most 64 px (``benchmarks/report_weight.py`` measures it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from html import escape
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from .. import __version__
from ..durations import format_duration
from ..fileio import atomic_path
from ..history import BOOKKEEPING, SETTLING_SIGNALS
from . import svg
from .audit import CORE_COLUMNS
from .consensus import CONSENSUS
from .diagnostics import PREFIX
from .metrics import detection_metrics
from .thumbnails import ImageSource, try_thumbnail

GALLERY_SIZE = 300
PAGE_SIZE = 48
HISTOGRAM_BINS = 20
GENERATOR = "lnlclean"
NOT_PLOTTED = (*BOOKKEEPING, "lr")  # the loss and learning rate get charts of their own
GREEK = {"lambda": "λ", "gamma": "γ", "eta": "η", "alpha": "α", "beta": "β", "tau": "τ"}


@dataclass(frozen=True)
class MethodInfo:
    """What the report needs to know of the audited method.

    Attributes:
        columns: the method's own audit columns (shown on each gallery card).
        matrix_axes: K×K matrices of its summary, key → (what rows are, what columns are).
    """

    columns: tuple[str, ...] = ()
    matrix_axes: dict[str, tuple[str, str]] = field(default_factory=dict)


@dataclass
class ReportInputs:
    """What the report is built from.

    Attributes:
        audit: the audit table, one row per sample (see :mod:`lnlclean.report.audit`).
        summary: the run summary (summary.json): method, settings, device, timings, history,
            method_summary.
        class_names: class names in index order.
        images: where the gallery's images are read (see :mod:`lnlclean.report.thumbnails`).
        is_noisy: which given labels are known to be wrong, or None to take it from a
            ``true_label`` column of `audit` when there is one.
        source: what was audited, shown under the title (a folder, or a benchmark run).
        method: the method's own columns and matrices (columns named ``<method>_*`` are
            recognised without it).
    """

    audit: pd.DataFrame
    summary: dict
    class_names: list[str]
    images: ImageSource
    is_noisy: np.ndarray | None = None
    source: str = ""
    method: MethodInfo = field(default_factory=MethodInfo)


@dataclass
class Labels:
    """The audit's label columns as class indices, computed once for every section.

    `true_labels` holds the ``true_label`` column as text (None without one); `is_noisy` is
    known when the caller gives it or every row has a true label.
    """

    given: np.ndarray
    suggested: np.ndarray
    clean_prob: np.ndarray
    flagged: np.ndarray
    threshold: float
    is_noisy: np.ndarray | None
    true_labels: np.ndarray | None


def read_labels(inputs: ReportInputs) -> Labels:
    """Returns the audit's given and suggested labels as indices, clean_prob, flags, and what is known of the truth."""
    index_of = {name: k for k, name in enumerate(inputs.class_names)}
    frame = inputs.audit
    given_text = frame["given_label"].astype(str)
    true_labels = is_noisy = None
    if "true_label" in frame.columns:
        true_column = frame["true_label"]
        true_labels = np.where(true_column.isna(), "", true_column.astype(str)).astype(object)
        if true_column.notna().all():
            is_noisy = (given_text != true_column.astype(str)).to_numpy()
    if inputs.is_noisy is not None:
        is_noisy = np.asarray(inputs.is_noisy, dtype=bool)
    return Labels(
        given=given_text.map(index_of).to_numpy(dtype=np.int64),
        suggested=frame["suggested_label"].astype(str).map(index_of).to_numpy(dtype=np.int64),
        clean_prob=frame["clean_prob"].to_numpy(dtype=np.float64),
        flagged=frame["is_label_issue"].to_numpy(dtype=bool),
        threshold=float(inputs.summary.get("settings", {}).get("threshold", 0.5)),
        is_noisy=is_noisy,
        true_labels=true_labels,
    )


@dataclass
class RenderedReport:
    """A rendered page and how many of its gallery images could not be read (shown as placeholders)."""

    html: str
    unreadable_images: int


def render_report(inputs: ReportInputs, gallery_size: int = GALLERY_SIZE) -> RenderedReport:
    """Returns the report page for `inputs` as one HTML document (see the module docs for its sections).

    The gallery shows the `gallery_size` samples with the lowest clean_prob.
    """
    labels = read_labels(inputs)
    method = inputs.summary.get("method", "")
    gallery, unreadable = gallery_section(inputs, labels, gallery_size)
    body = "".join(
        (
            headline_section(inputs, labels),
            class_section(inputs.class_names, labels),
            transition_section(inputs, labels),
            clean_prob_section(labels),
            gallery,
            training_section(inputs.summary.get("history") or []),
        )
    )
    title = f"lnlclean report: {method}" + (f" on {inputs.source}" if inputs.source else "")
    page = PAGE.format(
        title=escape(title),
        generator=f"{GENERATOR} {__version__}",
        css=_asset("report.css"),
        js=_asset("report.js"),
        heading=escape(title),
        body=body,
        page_size=PAGE_SIZE,
        version=__version__,
    )
    return RenderedReport(page, unreadable)


def write_report(path: Path, report: RenderedReport) -> None:
    """Writes the page of `report` to `path` atomically (UTF-8). Returns None."""
    with atomic_path(path) as tmp:
        tmp.write_text(report.html, encoding="utf-8")


def is_report(path: Path) -> bool:
    """Returns True when `path` is a page this tool wrote (its generator meta tag says so)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            head = handle.read(2048)
    except OSError:
        return False
    return f'<meta name="generator" content="{GENERATOR} ' in head


def _asset(name: str) -> str:
    return resources.files("lnlclean.report").joinpath("assets", name).read_text(encoding="utf-8")


def _section(section_id: str, title: str, content: str, note: str = "") -> str:
    intro = f'<p class="note">{note}</p>' if note else ""
    return f'<section id="{section_id}"><h2>{escape(title)}</h2>{intro}{content}</section>'


def _stat(label: str, value: str, hint: str = "") -> str:
    title = f' title="{escape(hint)}"' if hint else ""
    return (
        f'<div class="stat"{title}><div class="value">{escape(value)}</div>'
        f'<div class="name">{escape(label)}</div></div>'
    )


def headline_section(inputs: ReportInputs, labels: Labels) -> str:
    """Returns the headline section: counts, estimated noise rate, health score, method, duration; settings folded."""
    summary, n = inputs.summary, len(labels.given)
    noise_rate = float(1.0 - labels.clean_prob.mean()) if n else 0.0
    settings = summary.get("settings", {})
    stats = [
        _stat("samples", f"{n:,}"),
        _stat("classes", str(len(inputs.class_names))),
        _stat("label issues", f"{int(labels.flagged.sum()):,}", f"clean_prob < {labels.threshold:g}"),
        _stat(
            "estimated noise rate", f"{noise_rate:.1%}", "expected share of wrong labels: the mean of 1 − clean_prob"
        ),
        _stat("health score", f"{1 - noise_rate:.3f}", "1 − estimated noise rate"),
        _stat("method", str(summary.get("method", "–"))),
        _stat(
            "duration",
            format_duration(summary.get("timings", {}).get("total_seconds")),
            "training and inference, with image decoding",
        ),
    ]
    if labels.is_noisy is not None:
        scores = detection_metrics(labels.is_noisy, labels.clean_prob, labels.threshold, labels.flagged)
        stats += [
            _stat("true noise rate", f"{labels.is_noisy.mean():.1%}"),
            _stat(
                "detection F1",
                f"{scores['f1']:.3f}",
                f"precision {scores['precision']:.3f}, recall {scores['recall']:.3f}",
            ),
            _stat(
                "AUROC",
                "–" if scores["auroc"] is None else f"{scores['auroc']:.3f}",
                "ranking noisy above clean by 1 − clean_prob",
            ),
        ]
    facts = [
        ("device", summary.get("device")),
        ("backbone", settings.get("backbone")),
        ("epochs", settings.get("epochs")),
        ("images", summary.get("images")),
        ("labels", summary.get("labels_csv")),
        ("unreadable images skipped", summary.get("n_skipped") or None),
        ("resumed at", summary.get("resumed_at")),
    ]
    fact_items = "".join(f"<dt>{escape(k)}</dt><dd>{escape(str(v))}</dd>" for k, v in facts if v not in (None, ""))
    setting_rows = "".join(
        f"<tr><th>{escape(str(k))}</th><td>{escape(_setting_text(v))}</td></tr>" for k, v in settings.items()
    )
    warnings = "".join(f'<p class="warning">{escape(w["message"])}</p>' for w in summary.get("warnings") or [])
    content = (
        f'{warnings}<div class="stats">{"".join(stats)}</div><dl class="facts">{fact_items}</dl>'
        f'<details><summary>all settings</summary><table class="settings">{setting_rows}</table></details>'
    )
    return _section("headline", "Headline", content)


def _setting_text(value) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items()) or "–"
    return "–" if value is None else str(value)


def class_section(class_names: list[str], labels: Labels) -> str:
    """Returns the per-class table (sortable): samples, flagged,
    estimated noise rate, and the label most often suggested instead.
    """
    header = ["class", "samples", "flagged", "estimated noise rate", "most common suggested label"]
    if labels.is_noisy is not None:
        header.append("true noise rate")
    numeric = {"samples", "flagged", "estimated noise rate", "true noise rate"}
    head = "".join(f'<th data-type="{"number" if h in numeric else "text"}">{escape(h)}</th>' for h in header)
    rows = []
    for k, name in enumerate(class_names):
        members = labels.given == k
        count, flagged = int(members.sum()), int((members & labels.flagged).sum())
        rate = float(1.0 - labels.clean_prob[members].mean()) if count else 0.0
        relabelled = members & labels.flagged & (labels.suggested != k)
        suggestions = np.bincount(labels.suggested[relabelled], minlength=len(class_names))
        top = int(suggestions.argmax())
        top_text = f"{class_names[top]} ({suggestions[top]})" if relabelled.any() else "–"
        cells = [
            _cell(name, name),
            _cell(f"{count:,}", count),
            _cell(f"{flagged:,}", flagged),
            _cell(f"{rate:.1%}", rate),
            _cell(top_text, class_names[top] if relabelled.any() else ""),
        ]
        if labels.is_noisy is not None:
            true_rate = float(labels.is_noisy[members].mean()) if count else 0.0
            cells.append(_cell(f"{true_rate:.1%}", true_rate))
        rows.append(f"<tr>{''.join(cells)}</tr>")
    table = (
        f'<div class="table-scroll"><table class="sortable" id="class-table"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )
    note = (
        "Estimated noise rate: the mean of 1 − clean_prob over the class. Most common suggested label: among the "
        "class's flagged samples, the other label the method suggests most often (with its count). Click a column "
        "title to sort by it."
    )
    return _section("classes", "Classes", table, note)


def _cell(text: str, sort_value) -> str:
    return f'<td data-value="{escape(str(sort_value))}">{escape(text)}</td>'


def transition_section(inputs: ReportInputs, labels: Labels) -> str:
    """Returns the transition heatmaps: given → suggested over flagged samples, then the method's own K×K matrices."""
    names, k = inputs.class_names, len(inputs.class_names)
    counts = np.zeros((k, k), dtype=np.int64)
    np.add.at(counts, (labels.given[labels.flagged], labels.suggested[labels.flagged]), 1)
    class_sizes = np.bincount(labels.given, minlength=k)

    def tooltip(i: int, j: int) -> str:
        share = counts[i, j] / class_sizes[i] if class_sizes[i] else 0.0
        return f"given {names[i]} → suggested {names[j]}: {counts[i, j]} flagged ({share:.1%} of {names[i]})"

    figures = [
        _figure(
            svg.heatmap(
                counts,
                names,
                "given → suggested label",
                "given label",
                "suggested label",
                tooltip,
                cell_text=lambda i, j: str(counts[i, j]) if counts[i, j] else "",
                skip_diagonal=True,
                pick_pairs=True,
            ),
            "Flagged samples by given (row) and suggested (column) label. Click a cell to see those samples in the "
            "gallery.",
        )
    ]
    for key, matrix in method_matrices(inputs.summary.get("method_summary") or {}, k):
        rows_are, columns_are = inputs.method.matrix_axes.get(key, ("row", "column"))
        figures.append(
            _figure(
                svg.heatmap(
                    matrix,
                    names,
                    key,
                    rows_are,
                    columns_are,
                    lambda i, j, m=matrix, r=rows_are, c=columns_are: f"{r} {names[i]}, {c} {names[j]}: {m[i, j]:.4f}",
                    cell_text=lambda i, j, m=matrix: f"{m[i, j]:.2f}".lstrip("0") if m[i, j] >= 0.005 else "",
                ),
                f"The method's own estimate: {escape(key)} (from summary.json, method_summary.{escape(key)}).",
            )
        )
    return _section("transitions", "Class transitions", f'<div class="figures">{"".join(figures)}</div>')


def method_matrices(method_summary: dict, n_classes: int) -> list[tuple[str, np.ndarray]]:
    """Returns (key, matrix) for every entry of the method's
    summary that is an `n_classes`×`n_classes` table of numbers.
    """
    found = []
    for key, value in method_summary.items():
        if (
            isinstance(value, list)
            and len(value) == n_classes
            and all(isinstance(row, list) and len(row) == n_classes for row in value)
        ):
            try:
                found.append((key, np.asarray(value, dtype=np.float64)))
            except (TypeError, ValueError):
                continue
    return found


def _figure(plot: str, caption: str) -> str:
    return f"<figure>{plot}<figcaption>{caption}</figcaption></figure>"


def clean_prob_section(labels: Labels) -> str:
    """Returns the clean_prob histograms: flagged against kept, and truly noisy against truly clean when known."""
    edges = np.linspace(0.0, 1.0, HISTOGRAM_BINS + 1)
    values = np.clip(labels.clean_prob, 0.0, 1.0)

    def counts(mask: np.ndarray) -> np.ndarray:
        return np.histogram(values[mask], bins=edges)[0]

    marker = f"threshold {labels.threshold:g}"
    figures = [
        _figure(
            svg.stacked_histogram(
                edges,
                {"kept": counts(~labels.flagged), "flagged": counts(labels.flagged)},
                "clean_prob by flag",
                "clean_prob",
                labels.threshold,
                marker,
            ),
            "clean_prob of every sample; those below the threshold are flagged as label issues.",
        )
    ]
    if labels.is_noisy is not None:
        figures.append(
            _figure(
                svg.stacked_histogram(
                    edges,
                    {"truly clean": counts(~labels.is_noisy), "truly noisy": counts(labels.is_noisy)},
                    "clean_prob by truth",
                    "clean_prob",
                    labels.threshold,
                    marker,
                ),
                "The same samples split by whether the given label is really wrong: noisy samples left of the "
                "threshold are caught.",
            )
        )
    return _section("clean-prob", "clean_prob", f'<div class="figures">{"".join(figures)}</div>')


def gallery_section(inputs: ReportInputs, labels: Labels, gallery_size: int) -> tuple[str, int]:
    """Returns the gallery of the `gallery_size` samples with the lowest clean_prob
    (with its filters and pager), and how many images could not be read.
    """
    frame, names = inputs.audit, inputs.class_names
    order = np.lexsort((np.arange(len(frame)), labels.clean_prob))[:gallery_size]
    method = inputs.summary.get("method", "")
    signal_columns = method_columns(frame, method, inputs.method.columns)
    cards, unreadable = [], 0
    for row in order:
        uri, size, problem = try_thumbnail(inputs.images, int(row))
        unreadable += uri is None
        cards.append(_card(frame, int(row), labels, names, signal_columns, uri, size, problem, method))
    shown = (
        f"{len(order):,} samples with the lowest clean_prob (of {len(frame):,}; {int(labels.flagged.sum()):,} flagged)"
    )
    note = f"The {shown}, most suspect first. Filters apply to these."
    if unreadable:
        note += (
            f" {unreadable} image(s) could not be read (moved or deleted?); run lnlclean report with --images to "
            "point at them."
        )
    controls = _gallery_controls(labels, order, names)
    content = (
        f'{controls}<div class="gallery" id="gallery-cards">{"".join(cards)}</div>'
        '<p class="empty" id="gallery-empty" hidden>No sample in the gallery matches these filters.</p>'
        '<nav class="pager" id="gallery-pager"></nav>'
    )
    return _section("gallery", "Most suspect samples", content, escape(note)), unreadable


def _gallery_controls(labels: Labels, order: np.ndarray, names: list[str]) -> str:
    """Returns the gallery's filter menus: given class, and
    given → suggested pair, each with its count in the gallery.
    """
    class_counts = pd.Series(labels.given[order]).value_counts()
    class_options = "".join(
        f'<option value="{k}">{escape(names[k])} ({class_counts.get(k, 0)})</option>'
        for k in range(len(names))
        if class_counts.get(k, 0)
    )
    pairs = pd.Series(list(zip(labels.given[order], labels.suggested[order]))).value_counts()
    pair_options = "".join(
        f'<option value="{g}-{s}">{escape(names[g])} → {escape(names[s])} ({count})</option>'
        for (g, s), count in pairs.items()
        if g != s
    )
    return (
        '<div class="controls">'
        f'<label>given label <select id="filter-class"><option value="">all</option>{class_options}</select></label>'
        '<label>given → suggested <select id="filter-pair"><option value="">all</option>'
        f"{pair_options}</select></label>"
        '<span id="gallery-count"></span></div>'
    )


def method_columns(frame: pd.DataFrame, method: str, known: tuple[str, ...] = ()) -> list[str]:
    """Returns the columns of `frame` that are `method`'s own signals.

    Those are its `known` columns and those named ``<method>_*``; for a consensus, also each
    member's ``<member>_clean_prob``.
    """
    members = method == CONSENSUS
    return [
        c
        for c in frame.columns
        if c not in CORE_COLUMNS
        and (c in known or c.startswith(f"{method}_") or (members and c.endswith("_clean_prob")))
    ]


def _card(
    frame: pd.DataFrame,
    row: int,
    labels: Labels,
    names: list[str],
    signal_columns: list[str],
    uri: str | None,
    size: tuple[int, int] | None,
    problem: str | None,
    method: str,
) -> str:
    """Returns one gallery card: thumbnail, given → suggested label, clean_prob, the method's signals, path."""
    given, suggested = int(labels.given[row]), int(labels.suggested[row])
    path = str(frame["path"].iat[row])
    if uri is None:
        picture = f'<div class="missing" title="{escape(problem or "")}">image unreadable</div>'
    else:
        pixel = " pixel" if size is not None and max(size) < 48 else ""
        picture = f'<img class="thumb{pixel}" src="{uri}" alt="{escape(path)}" width="96" height="96">'
    verdict = "flagged" if labels.flagged[row] else "kept"
    signals = "".join(
        f'<dt title="{escape(c)}">{escape(c.removeprefix(f"{method}_"))}</dt>'
        f"<dd>{escape(_signal_text(frame[c].iat[row]))}</dd>"
        for c in signal_columns
    )
    truth = ""
    if labels.true_labels is not None and labels.true_labels[row]:
        truth = f'<div class="truth">true label <b>{escape(labels.true_labels[row])}</b></div>'
    return (
        f'<figure class="card {verdict}" data-given="{given}" data-suggested="{suggested}">{picture}<figcaption>'
        f'<div class="pair"><b>{escape(names[given])}</b> → <b>{escape(names[suggested])}</b></div>'
        f"<div>clean_prob <b>{labels.clean_prob[row]:.3f}</b></div>{truth}"
        f'<dl class="signals">{signals}</dl><div class="path" title="{escape(path)}">#{row} {escape(path)}</div>'
        "</figcaption></figure>"
    )


def _signal_text(value) -> str:
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (float, np.floating)):
        return svg.format_number(float(value)) if math.isfinite(value) else str(value)
    return str(value)


def training_section(history: list[dict]) -> str:
    """Returns the training curves: loss, then each of the method's per-epoch statistics, then the learning rate."""
    if not history:
        return _section("training", "Training", '<p class="empty">No epochs were recorded.</p>')
    epochs = [entry.get("epoch", k + 1) for k, entry in enumerate(history)]
    charts = [
        (
            "loss",
            svg.line_chart(epochs, {"loss": [entry.get("loss") for entry in history]}, "loss", y_label="mean loss"),
        )
    ]
    for name, keys in statistic_groups(history):
        series = {key: [_number(entry.get(key)) for entry in history] for key in keys}
        charts.append((name, svg.line_chart(epochs, series, name, y_label=name)))
    lr = [entry.get("lr") for entry in history]
    charts.append(("learning rate", svg.line_chart(epochs, {"lr": lr}, "learning rate", y_label="learning rate")))
    figures = "".join(_figure(chart, escape(title)) for title, chart in charts)
    return _section(
        "training", "Training", f'<div class="figures">{figures}</div>', "Per epoch; hover a point for its value."
    )


def statistic_groups(history: list[dict]) -> list[tuple[str, list[str]]]:
    """Returns (chart title, history keys) for each per-epoch statistic a method logged.

    A key ending in ``_peer`` (the second network's figure) shares the chart of its base key;
    the diagnostics against the true labels (:mod:`lnlclean.report.diagnostics`) share one
    chart, the noise-rate estimate another, and the warm-up's signals
    (:data:`lnlclean.history.SETTLING_SIGNALS`) a third. Keys without any number are left out.
    """
    keys: list[str] = []
    for entry in history:
        keys += [
            key
            for key, value in entry.items()
            if key not in NOT_PLOTTED and key not in keys and _number(value) is not None
        ]
    groups: dict[str, list[str]] = {}
    for key in keys:
        if key == f"{PREFIX}estimated_noise_rate":
            group = "noise rate estimated after each epoch"
        elif key.startswith(PREFIX):
            group = "against the true labels"
        elif key in SETTLING_SIGNALS:
            group = "predictions settling (the warm-up ends when the changes stop falling)"
        else:
            base = key.removesuffix("_peer")
            group = base if base in keys else key
        groups.setdefault(group, []).append(key)
    return [(f"{base} ({GREEK[base]})" if base in GREEK else base, members) for base, members in groups.items()]


def _number(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
        return None
    return float(value)


PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="generator" content="{generator}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
{css}
</style>
</head>
<body data-page-size="{page_size}">
<header><h1>{heading}</h1>
<nav class="toc"><a href="#headline">headline</a><a href="#classes">classes</a><a href="#transitions">transitions</a>\
<a href="#clean-prob">clean_prob</a><a href="#gallery">gallery</a><a href="#training">training</a></nav>
</header>
<main>
{body}
</main>
<footer>Written by lnlclean {version}. Every number on this page comes from audit.parquet and summary.json.</footer>
<script>
{js}
</script>
</body>
</html>
"""
