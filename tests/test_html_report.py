"""The HTML report: written by audit, benchmark and `lnlclean report`; self-contained; every section right."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest
from helpers import write_noisy_digits
from PIL import Image

from lnlclean.cli import main
from lnlclean.report import svg
from lnlclean.report.audit import read_audit
from lnlclean.report.html import PAGE_SIZE, ReportInputs, render_report
from lnlclean.report.thumbnails import THUMBNAIL_SIDE, ArrayImages

N_IMAGES = 150
N_WRONG = 30
EPOCHS = 6
SECTIONS = ("headline", "classes", "transitions", "clean-prob", "gallery", "training")
VOID = {"meta", "img", "br", "hr", "input", "link", "source", "col", "wbr"}  # HTML elements without an end tag


class Page(HTMLParser):
    """Parses a page strictly enough to catch unbalanced tags; collects ids, elements and attributes."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.stack, self.ids, self.elements, self.errors = [], set(), [], []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        self.elements.append((tag, attributes))
        if "id" in attributes:
            self.ids.add(attributes["id"])
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.elements.append((tag, dict(attrs)))

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes <{self.stack[-1] if self.stack else None}>")
        else:
            self.stack.pop()

    def find(self, tag: str, **wanted) -> list[dict]:
        return [
            a for t, a in self.elements if t == tag and all(a.get(k.replace("_", "-")) == v for k, v in wanted.items())
        ]


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    """A flywheel audit of 150 digits (16 px PNG) with 30 wrong labels and a true_label column."""
    folder = write_noisy_digits(
        tmp_path_factory.mktemp("report"), N_IMAGES, N_WRONG, seed=1, jpeg_every=0, true_column=True
    )
    root, images, given, true = folder["root"], folder["images"], folder["given"], folder["true"]
    out = root / "audit"
    code = main(
        [
            "audit",
            str(images),
            str(root / "labels.csv"),
            "--out",
            str(out),
            "--cache-dir",
            str(root / "cache"),
            "--method",
            "flywheel",
            "--epochs",
            str(EPOCHS),
            "--flywheel-warmup",
            "2",
            "--device",
            "cpu",
            "--no-flip",
            "--quiet",
        ]
    )
    assert code == 0
    frame, _ = read_audit(out / "audit.parquet")
    text = (out / "report.html").read_text(encoding="utf-8")
    return {
        "root": root,
        "images": images,
        "out": out,
        "frame": frame,
        "text": text,
        "page": Page(text),
        "summary": json.loads((out / "summary.json").read_text()),
        "is_noisy": given != true,
    }


def svg_titles(text: str, label: str) -> list[str]:
    """Returns the tooltip texts inside the <svg> whose aria-label is `label`."""
    match = re.search(rf'<svg [^>]*aria-label="{re.escape(label)}">(.*?)</svg>', text, re.S)
    assert match, f"no plot {label!r}"
    return re.findall(r"<title>(.*?)</title>", match.group(1))


def test_audit_report_is_one_well_formed_self_contained_page_with_every_section(audited):
    page, text = audited["page"], audited["text"]
    assert not page.errors and not page.stack
    assert set(SECTIONS) <= page.ids
    external = [
        a for t, a in page.elements for key in ("src", "href") if a.get(key) and not a[key].startswith(("data:", "#"))
    ]
    assert not external and "<link" not in text and "@import" not in text
    assert page.find("meta", name="generator")[0]["content"].startswith("lnlclean ")


def test_headline_and_class_table_agree_with_the_audit(audited):
    frame, text = audited["frame"], audited["text"]
    flagged = int(frame["is_label_issue"].sum())
    assert f'<div class="value">{flagged}</div><div class="name">label issues</div>' in text
    assert f'{1 - frame["clean_prob"].mean():.1%}</div><div class="name">estimated noise rate' in text
    assert f'{audited["is_noisy"].mean():.1%}</div><div class="name">true noise rate' in text
    table = re.search(r'<table class="sortable" id="class-table">(.*?)</table>', text, re.S).group(1)
    rows = re.findall(r"<tr>(.*?)</tr>", table.split("<tbody>")[1])
    by_class = frame.groupby("given_label")["is_label_issue"].agg(["size", "sum"])
    assert len(rows) == 10
    for row in rows:
        values = re.findall(r'data-value="([^"]*)"', row)
        name, samples, n_flagged = values[0], int(values[1]), int(values[2])
        assert (samples, n_flagged) == (by_class.loc[name, "size"], by_class.loc[name, "sum"])


def test_histograms_count_every_sample_by_flag_and_by_truth(audited):
    frame, text = audited["frame"], audited["text"]

    def totals(label: str) -> dict[str, int]:
        counts: dict[str, int] = {}
        for title in svg_titles(text, label):
            count, group = re.match(r".*: (\d+) (.+)$", title).groups()
            counts[group] = counts.get(group, 0) + int(count)
        return counts

    n_flagged = int(frame["is_label_issue"].sum())
    assert totals("clean_prob by flag") == {"kept": N_IMAGES - n_flagged, "flagged": n_flagged}
    assert totals("clean_prob by truth") == {"truly clean": N_IMAGES - N_WRONG, "truly noisy": N_WRONG}


def test_transition_heatmap_cells_match_flagged_pairs_and_the_method_matrix_is_drawn(audited):
    frame, page, text = audited["frame"], audited["page"], audited["text"]
    flagged = frame[frame["is_label_issue"] & (frame["given_label"] != frame["suggested_label"])]
    pairs = flagged.groupby(["given_label", "suggested_label"]).size()
    cells = {(a["data-given"], a["data-suggested"]) for a in page.find("rect") if "data-given" in a}
    assert cells == {(g, s) for g, s in pairs.index}  # class names are the digits, so names equal indices
    tooltips = svg_titles(text, "given → suggested label")
    for (g, s), count in pairs.items():
        assert any(t.startswith(f"given {g} → suggested {s}: {count} flagged") for t in tooltips)
    corruption = svg_titles(text, "corruption_matrix")
    assert len(corruption) == 100 and "true class 3, observed label 5: " in " ".join(corruption)


def test_gallery_holds_the_most_suspect_samples_as_small_inline_thumbnails(audited):
    frame, page = audited["frame"], audited["page"]
    cards = [a for t, a in page.elements if t == "figure" and "card" in a.get("class", "")]
    assert len(cards) == N_IMAGES  # fewer samples than the gallery size: all of them, most suspect first
    thumbs = page.find("img")
    assert len(thumbs) == N_IMAGES
    for attributes in thumbs[:5]:
        kind, data = re.match(r"data:image/(png|jpeg);base64,(.*)", attributes["src"]).groups()
        assert max(Image.open(io.BytesIO(base64.b64decode(data))).size) <= THUMBNAIL_SIDE
    order = frame.sort_values(["clean_prob", "index"]).reset_index(drop=True)
    first = order.iloc[0]
    assert cards[0]["data-given"] == first["given_label"] and cards[0]["data-suggested"] == first["suggested_label"]
    assert "corruption_prob" in audited["text"] and "true label <b>" in audited["text"]


def test_training_curves_show_loss_method_statistics_and_learning_rate(audited):
    text = audited["text"]
    assert len(svg_titles(text, "loss")) == EPOCHS
    assert len(svg_titles(text, "learning rate")) == EPOCHS
    gammas = svg_titles(text, "gamma (γ)")
    assert len(gammas) == EPOCHS - 1  # γ is first estimated after the warm-up's first epoch
    assert gammas[-1].endswith(svg.format_number(audited["summary"]["history"][-1]["gamma"]))


def test_report_command_rebuilds_a_report_and_refuses_to_replace_other_files(audited, tmp_path, capsys):
    out = tmp_path / "audit"
    shutil.copytree(audited["out"], out)
    (out / "report.html").unlink()
    assert main(["report", str(out), "--gallery", "20"]) == 0
    rebuilt = Page((out / "report.html").read_text(encoding="utf-8"))
    assert set(SECTIONS) <= rebuilt.ids and len(rebuilt.find("img")) == 20
    assert main(["report", str(out)]) == 0  # its own earlier report is replaced
    other = tmp_path / "notes.html"
    other.write_text("my notes")
    assert main(["report", str(out), "--out", str(other)]) == 2
    assert other.read_text() == "my notes"
    assert "already exists" in capsys.readouterr().err
    assert main(["report", str(out), "--out", str(other), "--overwrite"]) == 0
    assert "lnlclean" in other.read_text()
    assert main(["report", str(out), "--out", str(tmp_path / "new" / "dir" / "review.html")]) == 0


def test_report_command_shows_placeholders_for_moved_images_and_finds_them_with_images_option(
    audited, tmp_path, capsys
):
    out, moved = tmp_path / "audit", tmp_path / "moved"
    shutil.copytree(audited["out"], out)
    shutil.copytree(audited["images"], moved)
    summary = json.loads((out / "summary.json").read_text())
    summary["images"] = str(tmp_path / "gone")
    (out / "summary.json").write_text(json.dumps(summary))
    capsys.readouterr()
    assert main(["report", str(out), "--gallery", "10"]) == 0
    assert "10 gallery image(s) could not be read" in capsys.readouterr().out
    assert (out / "report.html").read_text().count("image unreadable") == 10
    assert main(["report", str(out), "--gallery", "10", "--images", str(moved)]) == 0
    assert "could not be read" not in capsys.readouterr().out


@pytest.mark.parametrize(
    "case, expected",
    [
        ("no directory", "no such directory"),
        ("no audit", "holds no audit.parquet"),
        ("broken summary", "not a readable summary.json"),
        ("negative gallery", "--gallery -1: must be 0 or more"),
        ("missing images option", "--images"),
        ("out is a directory", "is a directory; give a file name such as"),
        ("out is the audit", "is an input of this run"),
    ],
)
def test_report_command_bad_input_is_one_line_and_exit_2(audited, tmp_path, capsys, case, expected):
    out = tmp_path / "audit"
    shutil.copytree(audited["out"], out)
    args = ["report", str(out)]
    if case == "no directory":
        args = ["report", str(tmp_path / "nowhere")]
    elif case == "no audit":
        (out / "audit.parquet").unlink()
    elif case == "broken summary":
        (out / "summary.json").write_text("{not json")
    elif case == "negative gallery":
        args += ["--gallery", "-1"]
    elif case == "out is a directory":
        args += ["--out", str(out)]
    elif case == "out is the audit":
        args += ["--out", str(out / "audit.parquet"), "--overwrite"]
    else:
        args += ["--images", str(tmp_path / "nowhere")]
    before = sorted(p.name for p in out.iterdir())
    assert main(args) == 2
    err = capsys.readouterr().err
    assert expected in err and err.count("\n") == 1 and "Traceback" not in err
    assert sorted(p.name for p in out.iterdir()) == before


def synthetic_inputs(n_samples: int, n_classes: int = 10) -> ReportInputs:
    """An audit of `n_samples` random 32 px images with random labels and clean_prob (for page weight)."""
    rng = np.random.default_rng(0)
    names = [f"class{k}" for k in range(n_classes)]
    given, suggested = rng.integers(0, n_classes, n_samples), rng.integers(0, n_classes, n_samples)
    clean_prob = rng.random(n_samples)
    frame = pd.DataFrame(
        {
            "index": np.arange(n_samples),
            "path": [f"img{i}.jpg" for i in range(n_samples)],
            "given_label": np.asarray(names)[given],
            "suggested_label": np.asarray(names)[suggested],
            "clean_prob": clean_prob,
            "is_label_issue": clean_prob < 0.5,
        }
    )
    images = rng.integers(0, 256, (n_samples, 32, 32, 3), dtype=np.uint8)
    history = [{"epoch": e + 1, "loss": 1.0 / (e + 1), "lr": 0.1} for e in range(10)]
    return ReportInputs(frame, {"method": "ce", "history": history}, names, ArrayImages(images))


def test_page_weight_does_not_grow_with_the_dataset():
    small, large = (render_report(synthetic_inputs(n)).html for n in (1_000, 20_000))
    assert len(Page(large).find("img")) == 300
    assert len(large) < 1.02 * len(small)


def test_many_classes_draw_each_heatmap_as_one_image_and_keep_the_page_light():
    inputs = synthetic_inputs(50_000, n_classes=100)
    page = render_report(inputs).html
    assert len(page) < 1_000_000  # one rect per cell would take about 2 MB for the heatmap alone
    image = Page(page).find("image")[0]
    values = np.array(json.loads(image["data-values"]))
    flagged = inputs.audit[inputs.audit["is_label_issue"]]
    index = {name: k for k, name in enumerate(inputs.class_names)}
    expected = np.zeros((100, 100))
    np.add.at(expected, (flagged["given_label"].map(index), flagged["suggested_label"].map(index)), 1)
    assert image["data-pick"] == "pairs" and (values == expected).all()


def test_svg_helpers():
    ticks = svg.nice_ticks(0.013, 0.87)
    assert ticks[0] <= 0.013 and ticks[-1] >= 0.87 and len(ticks) <= 7
    assert np.allclose(np.diff(ticks), ticks[1] - ticks[0])
    assert svg.nice_ticks(1, 12, integer=True) == [0, 5, 10, 15] and svg.nice_ticks(1, 3, integer=True) == [1, 2, 3]
    chart = svg.line_chart([1, 2, 3, 4, 5], {"gamma": [None, 0.5, 0.6, None, 0.7]}, "gamma")
    assert chart.count("<polyline") == 2 and chart.count("<circle") == 3
    assert svg.heat_colours(np.array([0.0, 1.0])).tolist() == [[255, 255, 255], [8, 48, 107]]


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium (Debian package chromium) is not installed")
def test_report_renders_in_headless_chromium(audited, tmp_path):
    report = audited["out"] / "report.html"
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1280,3000"]
    dom = subprocess.run([*command, "--dump-dom", report.as_uri()], capture_output=True, text=True, timeout=120).stdout
    assert 'data-ready="true"' in dom  # the page's script ran to the end
    shown = Page(dom)
    cards = [a for t, a in shown.elements if t == "figure" and "card" in a.get("class", "")]
    assert sum("hidden" not in a for a in cards) == PAGE_SIZE
    assert len(shown.find("button")) == -(-N_IMAGES // PAGE_SIZE) + 2  # page numbers plus previous / next
    # the page's script at work: sort the class table by 'flagged', then click a heatmap cell
    clicks = """<script>
    document.querySelectorAll('#class-table th')[2].click();
    document.querySelectorAll('#class-table th')[2].click();
    var cell = document.querySelector('svg rect[data-given]');
    cell.dispatchEvent(new MouseEvent('click'));
    document.body.dataset.picked = cell.dataset.given + '-' + cell.dataset.suggested;
    </script></body>"""
    clicked = tmp_path / "clicked.html"
    clicked.write_text(report.read_text(encoding="utf-8").replace("</body>", clicks), encoding="utf-8")
    after = subprocess.run(
        [*command, "--dump-dom", clicked.as_uri()], capture_output=True, text=True, timeout=120
    ).stdout
    picked = re.search(r'data-picked="(\d+)-(\d+)"', after).groups()
    visible = [
        a for t, a in Page(after).elements if t == "figure" and "card" in a.get("class", "") and "hidden" not in a
    ]
    expected = audited["frame"].query(
        "given_label == @picked[0] and suggested_label == @picked[1]"
    )  # the gallery holds every sample
    assert len(visible) == len(expected) > 0
    assert all((a["data-given"], a["data-suggested"]) == picked for a in visible)
    table = re.search(r'<table class="sortable" id="class-table">.*?<tbody>(.*?)</tbody>', after, re.S).group(1)
    flagged_column = [int(re.findall(r'data-value="([^"]*)"', row)[2]) for row in re.findall(r"<tr>(.*?)</tr>", table)]
    assert flagged_column == sorted(flagged_column, reverse=True)
    shot = tmp_path / "report.png"
    subprocess.run([*command, f"--screenshot={shot}", report.as_uri()], capture_output=True, timeout=120, check=True)
    image = Image.open(shot).convert("RGB")
    assert image.size == (1280, 3000)
    colours = image.getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 500  # text, plots and thumbnails, not a blank page


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium (Debian package chromium) is not installed")
def test_image_heatmap_click_in_headless_chromium_filters_the_gallery_to_that_cell(tmp_path):
    inputs = synthetic_inputs(3_000, n_classes=40)
    page = render_report(inputs).html
    image = Page(page).find("image")[0]
    values = np.array(json.loads(image["data-values"]))
    np.fill_diagonal(values, 0)
    row, column = np.unravel_index(values.argmax(), values.shape)
    click = f"""<script>
    var image = document.querySelector('svg image.heat'), box = image.getBoundingClientRect(), n = 40;
    var at = {{clientX: box.left + ({column} + 0.5) * box.width / n, \
clientY: box.top + ({row} + 0.5) * box.height / n}};
    image.dispatchEvent(new MouseEvent('mousemove', at));
    image.dispatchEvent(new MouseEvent('click', at));
    document.body.dataset.pair = document.getElementById('filter-pair').value;
    document.body.dataset.tip = document.querySelector('.heat-tip').textContent;
    </script></body>"""
    report = tmp_path / "report.html"
    report.write_text(page.replace("</body>", click), encoding="utf-8")
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--window-size=1280,3000",
        "--dump-dom",
        report.as_uri(),
    ]
    dom = subprocess.run(command, capture_output=True, text=True, timeout=120).stdout
    names = inputs.class_names
    assert f'data-pair="{row}-{column}"' in dom
    assert f'data-tip="given label {names[row]}, suggested label {names[column]}: {int(values[row, column])}"' in dom
