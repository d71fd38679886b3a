"""Property-based tests of the input contract of ``lnlclean audit`` (docs/inputs.md, "Checks").

Whatever the labels CSV and the image folder hold, the audit either accepts the input or
refuses it: exit code 2 and exactly one line on stderr (as ``str.splitlines()`` counts lines)
that starts with ``error:``, no traceback, OUT not created, and the CSV and the image folder
byte for byte as they were. Input that is odd but valid is always accepted.

Nothing is trained: ``lnlclean.jobs.audit.fit`` is replaced by a function that raises
:class:`ReachedTraining`, so an accepted input stops where training would start. Every
example is written to a fresh temporary folder (images, labels.csv, the image cache).

The default run uses the derandomized ``FAST`` profile; the ``slow``-marked copies run
``LONG``'s random examples (``pytest -m slow tests/test_fuzz_inputs.py``). Add
``--hypothesis-show-statistics`` to see how many examples ran and how many were accepted.
"""

from __future__ import annotations

import codecs
import hashlib
import io
import os
import tempfile
import warnings
from dataclasses import dataclass, field
from functools import cache, lru_cache
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

import lnlclean.jobs.audit
from lnlclean.cli import main

QUICK = ("--epochs", "1", "--device", "cpu", "--quiet")
LABELS = (0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2)
NAMES = tuple(f"img{i:02d}.png" for i in range(len(LABELS)))
SEPARATORS = (",", ";", "\t")
STYLED = 6  # cells of the first STYLED columns get drawn quoting and spaces; the others of a wide CSV stay plain

_HEALTH = [HealthCheck.function_scoped_fixture]
FAST = settings(deadline=None, derandomize=True, database=None, suppress_health_check=_HEALTH)
LONG = settings(max_examples=3000, deadline=None, database=None, suppress_health_check=_HEALTH)

# Warnings a plain `python -m lnlclean` does not print (Python's default filters ignore them).
UNSHOWN_WARNINGS = (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning)


class ReachedTraining(Exception):
    """Raised in place of training: the input was accepted. `data` is what training would have got."""

    def __init__(self, data):
        super().__init__("reached training")
        self.data = data


@pytest.fixture
def stop_at_training(monkeypatch):
    """Replaces the training entry point that run_audit calls with one raising ReachedTraining."""

    def reached(data, *args, **kwargs):
        raise ReachedTraining(data)

    monkeypatch.setattr(lnlclean.jobs.audit, "fit", reached)


# ---------------------------------------------------------------- file contents


@cache
def png(index: int) -> bytes:
    """Returns the bytes of image `index`: an 8×8 grayscale PNG of seeded noise."""
    pixels = np.random.default_rng(index).integers(0, 256, (8, 8), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


@lru_cache(maxsize=1)
def tiff() -> bytes:
    """Returns the bytes of a valid 8×8 RGB TIFF."""
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), "gray").save(buffer, format="TIFF")
    return buffer.getvalue()


BAD_IMAGES = {
    "empty": lambda: b"",
    "PNG truncated": lambda: png(0)[:40],
    "text": lambda: b"path,label\n",
    "garbage": lambda: bytes(range(256)),
    "PPM with an endless header": lambda: b"P6\n" + b"9" * 5000,
    "TIFF truncated": lambda: tiff()[:60],
    "TIFF header and garbage": lambda: tiff()[:8] + b"\xff" * 200,
}


def content(kind: str) -> bytes:
    """Returns the bytes of a file of `kind`: ``image <i>`` (see png) or a key of BAD_IMAGES."""
    if kind.startswith("image "):
        return png(int(kind.split()[1]))
    return BAD_IMAGES[kind]()


# ---------------------------------------------------------------- one example: write, run, check


@dataclass
class Example:
    """One generated input.

    folder: the image folder's name. files: path in the image folder → content kind (see content).
    links: path in the image folder → symlink target. csv: the labels CSV's bytes, None for the
    ImageFolder layout. options: extra audit options.
    """

    folder: str
    files: dict[str, str]
    links: dict[str, str] = field(default_factory=dict)
    csv: bytes | None = None
    options: tuple[str, ...] = ()


def write(example: Example, tmp: Path) -> tuple[list[str], list[Path], Path]:
    """Writes `example` under `tmp`. Returns the audit argv, the input paths and OUT."""
    images = tmp / example.folder
    images.mkdir()
    for rel, kind in example.files.items():
        (images / rel).parent.mkdir(parents=True, exist_ok=True)
        (images / rel).write_bytes(content(kind))
    for rel, target in example.links.items():
        (images / rel).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, images / rel)
    argv, inputs = ["audit", str(images)], [images]
    if example.csv is not None:
        csv = tmp / "labels.csv"
        csv.write_bytes(example.csv)
        argv.append(str(csv))
        inputs.append(csv)
    out = tmp / "out"
    return [*argv, "--out", str(out), *QUICK, "--cache-dir", str(tmp / "cache"), *example.options], inputs, out


def snapshot(paths: list[Path]) -> dict[str, str]:
    """Returns path → content hash, link target or "dir" for `paths` and everything under them (links not followed)."""
    found = {}
    for top in paths:
        entries = [top] + [Path(d) / n for d, dirs, files in os.walk(top) for n in dirs + files]
        for path in entries:
            if path.is_symlink():
                found[str(path)] = "-> " + os.readlink(path)
            elif path.is_dir():
                found[str(path)] = "dir"
            else:
                found[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def audit(example: Example, capsys) -> ReachedTraining | None:
    """Runs the audit of `example` and checks the contract.

    Returns ReachedTraining when the input was accepted, None when it was refused (exit 2, one
    `error:` line, OUT not created). Either way the inputs must be unchanged. A Pillow (or
    other) warning that a real process would print counts as a line of stderr.
    """
    with tempfile.TemporaryDirectory() as tmp:
        argv, inputs, out = write(example, Path(tmp))
        before = snapshot(inputs)
        capsys.readouterr()
        accepted = None
        with warnings.catch_warnings(record=True) as caught:
            try:
                code = main(argv)
            except ReachedTraining as reached:
                accepted, code = reached, None
        err = capsys.readouterr().err
        assert snapshot(inputs) == before, "the inputs changed"
        event("accepted" if accepted else "refused")
        if accepted:
            return accepted
        shown = [f"{w.category.__name__}: {w.message}" for w in caught if not issubclass(w.category, UNSHOWN_WARNINGS)]
        lines = shown + err.strip().splitlines()
        assert code == 2, err
        assert len(lines) == 1, lines
        assert lines[0].startswith("error:") and "Traceback" not in err, lines
        assert not out.exists(), "OUT was created"
        return None


# ---------------------------------------------------------------- rendering a CSV


def cell(text: str, sep: str, quote: bool = False, pad: str = "") -> str:
    """Returns `text` as a CSV cell: quoted when asked or needed
    (separator, quote, line break), `pad` spaces around it.
    """
    if quote or sep in text or '"' in text or "\n" in text or "\r" in text:
        return pad + '"' + text.replace('"', '""') + '"'
    return pad + text + pad


def render(lines: list[list[str]], sep: str, newline: str = "\n") -> str:
    """Returns the CSV text of `lines` (cells already formatted); an empty line is a blank line."""
    return "".join(sep.join(cells) + newline for cells in lines)


ENCODINGS = ("UTF-8", "UTF-8 with BOM", "UTF-16", "UTF-16 big-endian")


def encode(text: str, encoding: str) -> bytes:
    """Returns `text` in one of ENCODINGS (the UTF-16 ones start with their BOM); unencodable characters become '?'."""
    if encoding == "UTF-16 big-endian":
        return codecs.BOM_UTF16_BE + text.encode("utf-16-be", "replace")
    return text.encode({"UTF-8": "utf-8", "UTF-8 with BOM": "utf-8-sig", "UTF-16": "utf-16"}[encoding], "replace")


def insert_blank_lines(draw, lines: list[list[str]]) -> list[list[str]]:
    """Returns `lines` with up to four blank lines drawn anywhere, before the header and at the end included."""
    lines = list(lines)
    for at in sorted(draw(st.lists(st.integers(0, len(lines)), max_size=4)), reverse=True):
        lines.insert(at, [])
    return lines


# ---------------------------------------------------------------- mutated inputs

EDIT_CHARS = st.sampled_from(
    [
        ",",
        ";",
        "\t",
        '"',
        "'",
        "\n",
        "\r",
        "\x00",
        "\x1e",
        "\x85",
        "\u2028",
        " ",
        "a",
        "Z",
        "é",
        "ß",
        "日",
        "|",
        "/",
        "\\",
        ".",
    ]
)
ODD_PATHS = (
    "gone.png",
    "x" * 300 + ".png",
    "d\x00.png",
    "../outside.png",
    "/etc/hostname",
    "a/" * 2100 + "b.png",
    "loop.png",
    "",
    NAMES[0],
    "sub\n.png",
    "d\u2028.png",
)
EXTRA_NAMES = st.sampled_from(["x", "x ", " x", "", "Path", "label", "candidates", "ünï", "a b", "1", "Unnamed: 2"])


def change_files(draw, files: dict[str, str], links: dict[str, str], rows: list[list[str]]) -> None:
    """Applies up to three drawn changes to the image folder and the rows that list it."""
    label = st.sampled_from(["0", "1", "2"])
    for change in draw(
        st.lists(st.sampled_from(["missing", "bad", "self link", "dir loop", "odd row", "255-byte name"]), max_size=3)
    ):
        if change == "missing":
            del files[draw(st.sampled_from(sorted(files)))]
        elif change == "bad":
            files[draw(st.sampled_from(sorted(files)))] = draw(st.sampled_from(sorted(BAD_IMAGES)))
        elif change == "self link":
            links["loop.png"] = "loop.png"
            rows.append(["loop.png", draw(label)])
        elif change == "dir loop":
            links["again"] = "."
            rows.append(["again/again/" + NAMES[0], draw(label)])
        elif change == "odd row":
            rows.append([draw(st.sampled_from(ODD_PATHS)), draw(label)])
        elif change == "255-byte name":
            name = "n" * 251 + ".png"
            files[name] = "image 0"
            rows.append([name, draw(label)])


def add_extra_columns(draw, header: list[str], rows: list[list[str]]) -> None:
    """Adds 0–3 odd extra columns, or about a thousand or a few thousand; each row gets about as many cells."""
    count = draw(st.one_of(st.integers(0, 3), st.sampled_from([999, 1000, 1001, 2500])))
    header += [draw(EXTRA_NAMES) for _ in range(min(count, 3))] + [f"c{i}" for i in range(count - min(count, 3))]
    for row in rows:
        row += ["v"] * max(0, count + draw(st.integers(-2, 2)))


def edit_text(draw, text: str) -> str:
    """Returns `text` with up to six characters inserted, replaced or deleted at drawn positions."""
    for op, at, char in draw(
        st.lists(
            st.tuples(st.sampled_from(["insert", "replace", "delete"]), st.integers(0, 10**6), EDIT_CHARS), max_size=6
        )
    ):
        at %= len(text) + 1
        if op == "insert":
            text = text[:at] + char + text[at:]
        elif op == "replace":
            text = text[:at] + char + text[at + 1 :]
        else:
            text = text[:at] + text[at + 1 :]
    return text


def encode_mutated(draw, text: str) -> bytes:
    """Returns `text` in a drawn encoding: one of ENCODINGS, Latin-1, or UTF-16 with one byte dropped."""
    encoding = draw(st.sampled_from([*ENCODINGS, "Latin-1", "UTF-16 less a byte"]))
    if encoding == "Latin-1":
        return text.encode("latin-1", "replace")
    if encoding == "UTF-16 less a byte":
        raw = encode(text, "UTF-16")
        at = draw(st.integers(2, len(raw) - 1))
        return raw[:at] + raw[at + 1 :]
    return encode(text, encoding)


FOLDER_NAMES = st.sampled_from(["images", "im ages", "ïmages", "im\nages", "im\u2028ages", "im,ages"])


@st.composite
def mutated_csv_inputs(draw) -> Example:
    """A labels CSV and its image folder, both mutated (see the module's helpers for what may change)."""
    files = {name: f"image {i}" for i, name in enumerate(NAMES)}
    links: dict[str, str] = {}
    rows = [[name, str(label)] for name, label in zip(NAMES, LABELS)]
    change_files(draw, files, links, rows)
    header = ["path", "label"]
    add_extra_columns(draw, header, rows)
    sep = draw(st.sampled_from(SEPARATORS))
    lines = [[cell(c, sep, column < STYLED and draw(st.booleans())) for column, c in enumerate(header)]]
    for row in rows:
        lines.append([cell(c, sep) for c in row] + [""] * draw(st.integers(0, 2)))
    text = render(insert_blank_lines(draw, lines), sep, draw(st.sampled_from(["\n", "\r\n", "\r"])))
    csv = encode_mutated(draw, edit_text(draw, text))
    options = draw(st.sampled_from([(), ("--on-bad-image", "skip")]))
    return Example(draw(FOLDER_NAMES), files, links, csv, options)


@st.composite
def mutated_folder_inputs(draw) -> Example:
    """An ImageFolder layout (no CSV) with odd class names, bad images and symlink loops."""
    classes = draw(
        st.lists(
            st.sampled_from(["0", "1", "2", "cat", "ca\nt", "ünï", ".hidden", "c\u2028"]),
            min_size=1,
            max_size=3,
            unique=True,
        )
    )
    files = {
        f"{classes[label % len(classes)]}/{name}": f"image {i}" for i, (name, label) in enumerate(zip(NAMES, LABELS))
    }
    links: dict[str, str] = {}
    for change in draw(st.lists(st.sampled_from(["bad", "self link", "dir loop", "loop at the top"]), max_size=3)):
        if change == "bad":
            files[draw(st.sampled_from(sorted(files)))] = draw(st.sampled_from(sorted(BAD_IMAGES)))
        elif change == "self link":
            links[f"{classes[0]}/self.png"] = "self.png"
        elif change == "dir loop":
            links[f"{classes[0]}/again"] = "."
        else:
            links["loop"] = "loop"
    options = draw(st.sampled_from([(), ("--on-bad-image", "skip")]))
    return Example(draw(FOLDER_NAMES), files, links, None, options)


# Three CSV layouts to one ImageFolder layout.
MUTATED = st.one_of(mutated_csv_inputs(), mutated_csv_inputs(), mutated_csv_inputs(), mutated_folder_inputs())


@settings(FAST, max_examples=200)
@given(example=MUTATED)
def test_mutated_input_is_accepted_or_refused_in_one_line(stop_at_training, capsys, example):
    """Any mutated CSV or image folder is accepted, or refused with
    exit 2, one `error:` line, nothing written, inputs untouched.
    """
    audit(example, capsys)


@pytest.mark.slow
@LONG
@given(example=MUTATED)
def test_mutated_input_is_accepted_or_refused_in_one_line_long(stop_at_training, capsys, example):
    """As test_mutated_input_is_accepted_or_refused_in_one_line, with 3000 random examples."""
    audit(example, capsys)


# ---------------------------------------------------------------- valid but odd inputs

ODD_NAMES = (
    "a b.png",
    "x,y.png",
    "semi;colon.png",
    "ünïcödé.png",
    "日本.png",
    "UPPER.PNG",
    "sub/dir.png",
    'say "hi".png',
    "#hash.png",
    "123.png",
    "dots.in.name.png",
    "'single'.png",
    "emoji😀.png",
)
CLASS_NAMES = (
    ("0", "1", "2"),
    ("10", "2", "33"),
    ("cat", "dog", "bird"),
    ("Katze", "Hündin", "鳥"),
    ("big cat", "small dog", "a,b"),
)
VALID_EXTRA_NAMES = ("note", "x", "x ", " x", "ünï", "a b", "1", "#", "path2", "label_old", "semi;colon", 'q"uote')
VALID_CELLS = st.sampled_from(["", "v", "1.5", "ünï", "a b", "x,y", "semi;colon", 'say "hi"', "-", "NA", "null", "#"])


@st.composite
def valid_inputs(draw) -> Example:
    """A valid CSV written in odd ways: separator, quoting, spaces around
    cells, trailing separators, blank lines, CRLF, BOM, UTF-16, odd names.
    """
    odd = draw(st.lists(st.sampled_from(ODD_NAMES), unique=True, max_size=4))
    names = list(odd) + list(NAMES[len(odd) :])
    classes = draw(st.sampled_from(CLASS_NAMES))
    extras = draw(
        st.one_of(
            st.lists(st.sampled_from(VALID_EXTRA_NAMES), unique=True, max_size=3),
            st.just([f"c{i}" for i in range(500)]),
        )
    )
    header = [draw(st.sampled_from(["path", "Path", "PATH"])), draw(st.sampled_from(["label", "Label"])), *extras]
    sep = draw(st.sampled_from(SEPARATORS))

    def extra_cells() -> list[str]:
        return [draw(VALID_CELLS) for _ in extras] if len(extras) < 10 else ["v"] * len(extras)

    def odd_cell(text: str, column: int) -> str:
        if column >= STYLED:
            return cell(text, sep)
        return cell(text, sep, draw(st.booleans()), draw(st.sampled_from(["", " ", "  "])))

    rows = [[name, classes[label], *extra_cells()] for name, label in zip(names, LABELS)]
    lines = [[odd_cell(c, k) for k, c in enumerate(line)] for line in [header, *rows]]
    lines[1:] = [line + [""] * draw(st.integers(0, 2)) for line in lines[1:]]
    text = render(insert_blank_lines(draw, lines), sep, draw(st.sampled_from(["\n", "\r\n"])))
    files = {name: f"image {i}" for i, name in enumerate(names)}
    return Example(
        draw(st.sampled_from(["images", "im ages", "ïmages"])),
        files,
        csv=encode(text, draw(st.sampled_from(ENCODINGS))),
    )


def check_valid(example: Example, capsys) -> None:
    reached = audit(example, capsys)
    assert reached is not None, "valid input was refused"
    labels = reached.data.labels
    assert len(labels) == len(LABELS) and len(set(zip(LABELS, labels.tolist()))) == 3, labels


@settings(FAST, max_examples=100)
@given(example=valid_inputs())
def test_odd_but_valid_input_is_accepted(stop_at_training, capsys, example):
    """Every valid-but-odd CSV is accepted with all 12 rows and the 3 classes as written."""
    check_valid(example, capsys)


@pytest.mark.slow
@LONG
@given(example=valid_inputs())
def test_odd_but_valid_input_is_accepted_long(stop_at_training, capsys, example):
    """As test_odd_but_valid_input_is_accepted, with 3000 random examples."""
    check_valid(example, capsys)
