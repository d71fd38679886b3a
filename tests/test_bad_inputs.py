"""What a user can get wrong, and what they get back: a catalog run through the CLI.

Every case in ``REFUSED`` must end with exit code 2, exactly one line on stderr holding the
listed fragments (the file, row or option, and what to do), no traceback, no new or changed
output file, and untouched inputs. Every case in ``ACCEPTED`` looks odd but is valid input:
it must audit normally, with no image skipped.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits

from lnlclean.cli import main
from lnlclean.report.audit import read_audit

CLASSES = (0, 1, 2)
PER_CLASS = 8
QUICK = ("--epochs", "1", "--device", "cpu", "--quiet")


@dataclass
class Workspace:
    """A valid labelled folder (24 digit PNGs of 3 classes) and the paths a run uses."""

    tmp: Path
    images: Path
    csv: Path
    out: Path
    cache: Path
    monkeypatch: pytest.MonkeyPatch
    names: list[str] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)

    def write_csv(self, text: str, name: str = "labels.csv", encoding: str = "utf-8") -> Path:
        """Writes `text` as the labels CSV (or as `name` beside it). Returns its path."""
        path = self.tmp / name
        path.write_bytes(text.encode(encoding))
        return path

    def rows(self, sep: str = ",") -> list[str]:
        """Returns the valid CSV body lines (no header)."""
        return [f"{name}{sep}{label}" for name, label in zip(self.names, self.labels)]

    def audit(self, *extra: str, csv: Path | None = None, cache: bool = True) -> list[str]:
        """Returns the argv of a quick audit of the folder with `extra` options."""
        argv = ["audit", str(self.images), str(csv or self.csv), "--out", str(self.out), *QUICK, *extra]
        return argv + (["--cache-dir", str(self.cache)] if cache else [])

    def finished_run(self, *extra: str) -> None:
        """Runs a real one-epoch audit into `out` (the outputs a later case runs into)."""
        assert main(self.audit(*extra)) == 0

    def unfinished_run(self, *extra: str) -> None:
        """Leaves `out` as a run stopped after its training would: the checkpoint of its last epoch, no audit."""

        def stop_before_the_outputs(*args, **kwargs):
            raise StoppedHere()

        with self.monkeypatch.context() as patch:
            patch.setattr("lnlclean.jobs.audit.fitted_verdicts", stop_before_the_outputs)
            with pytest.raises(StoppedHere):
                main(self.audit(*extra))
        assert sorted(p.name for p in self.out.iterdir()) == ["checkpoint.pt"]


class StoppedHere(Exception):
    """Stops a test run at a chosen point."""


@lru_cache(maxsize=1)
def digit_images() -> tuple[np.ndarray, np.ndarray]:
    """Returns scikit-learn's digits as uint8 8×8 images (0..255) and their labels."""
    digits = load_digits()
    return np.round(digits.images * 255 / 16).astype(np.uint8), digits.target


@pytest.fixture
def ws(tmp_path, monkeypatch) -> Workspace:
    pixels, targets = digit_images()
    images = tmp_path / "images"
    images.mkdir()
    space = Workspace(tmp_path, images, tmp_path / "labels.csv", tmp_path / "out", tmp_path / "cache", monkeypatch)
    for k in CLASSES:
        for i in np.flatnonzero(targets == k)[:PER_CLASS]:
            name = f"d{len(space.names):02d}.png"
            Image.fromarray(pixels[i]).save(images / name)
            space.names.append(name)
            space.labels.append(k)
    space.write_csv("path,label\n" + "\n".join(space.rows()) + "\n")
    return space


def png_header(path: Path, width: int, height: int) -> None:
    """Writes a PNG whose header announces width×height RGB pixels, with no pixel data behind it."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    )


class RunsCode:
    """Unpickling this creates `marker`: a checkpoint that would run code if loaded unsafely."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


# ---------------------------------------------------------------- refused: arrange(ws) -> argv


def csv_case(body: Callable[[Workspace], str], encoding: str = "utf-8"):
    """Returns an arrange function that rewrites the labels CSV with `body(ws)` and audits it."""

    def arrange(ws: Workspace) -> list[str]:
        ws.write_csv(body(ws), encoding=encoding)
        return ws.audit()

    return arrange


def replace_image(write: Callable[[Path], None], index: int = 3):
    """Returns an arrange function that overwrites image `index` with `write(path)` and audits."""

    def arrange(ws: Workspace) -> list[str]:
        write(ws.images / ws.names[index])
        return ws.audit()

    return arrange


def header(ws: Workspace, first: str = "path,label") -> str:
    return first + "\n" + "\n".join(ws.rows()) + "\n"


def with_row(ws: Workspace, row: str) -> str:
    return header(ws) + row + "\n"


def bomb(ws, width, height):
    png_header(ws.images / ws.names[3], width, height)
    return ws.audit()


def outside_link(ws):
    secret = ws.tmp / "secret.png"
    Image.new("RGB", (8, 8)).save(secret)
    os.symlink(secret, ws.images / "link.png")
    ws.write_csv(with_row(ws, "link.png,1"))
    return ws.audit()


def outside_file(ws, raw):
    Image.new("RGB", (8, 8)).save(ws.tmp / "outside.png")
    ws.write_csv(with_row(ws, raw.format(tmp=ws.tmp)))
    return ws.audit()


def foreign_checkpoint(ws, payload):
    ws.out.mkdir()
    torch.save(payload, ws.out / "checkpoint.pt")
    return ws.audit("--resume")


def relabeled_labels(ws):
    ws.unfinished_run()
    ws.write_csv("path,label\n" + "\n".join(ws.rows()).replace("d00.png,0", "d00.png,1") + "\n")
    return ws.audit("--resume")


def unwritable_out(ws):
    if not Path("/sys").is_dir():
        pytest.skip("needs /sys, where nobody may create a directory")
    ws.out = Path("/sys/lnlclean-out")
    return ws.audit()


def cuda_missing(ws):
    if torch.cuda.is_available():
        pytest.skip("CUDA is present here")
    return ws.audit("--device", "cuda")


def env_cache_is_a_file(ws):
    (ws.tmp / "cachefile").write_text("x")
    ws.monkeypatch.setenv("LNLCLEAN_CACHE", str(ws.tmp / "cachefile"))
    return ws.audit(cache=False)


def existing_benchmark(ws):
    ws.out.mkdir()
    (ws.out / "benchmark.json").write_text("{}")
    return ["benchmark", "digits", "--epochs", "1", "--out", str(ws.out), "--quiet"]


def empty_image_folder(ws):
    empty = ws.tmp / "empty"
    (empty / "cat").mkdir(parents=True)
    return ["audit", str(empty), "--out", str(ws.out), *QUICK]


def csv_bytes_case(body: Callable[[Workspace], bytes]):
    """Returns an arrange function that writes the bytes `body(ws)` as the labels CSV and audits it."""

    def arrange(ws: Workspace) -> list[str]:
        ws.csv.write_bytes(body(ws))
        return ws.audit()

    return arrange


def wide_header(ws: Workspace, extra: int, filled: bool) -> str:
    """Returns the CSV with `extra` more columns x0, x1, … in the
    header; their cells are filled with `v` when `filled`, else absent.
    """
    cells = "," + ",".join(["v"] * extra) if filled else ""
    return (
        "path,label," + ",".join(f"x{i}" for i in range(extra)) + "\n" + "\n".join(r + cells for r in ws.rows()) + "\n"
    )


def self_link(ws: Workspace) -> list[str]:
    os.symlink("loop.png", ws.images / "loop.png")
    ws.write_csv(with_row(ws, "loop.png,1"))
    return ws.audit()


def folder_with_newline(ws: Workspace) -> list[str]:
    ws.images = ws.images.rename(ws.tmp / "im\nages")
    ws.write_csv(with_row(ws, "gone.png,1"))
    return ws.audit()


def first_image_corrupt_ppm(ws: Workspace, *extra: str) -> list[str]:
    """Lists a PPM whose header never ends (first.ppm) in place of the first image, and audits with `extra` options."""
    (ws.images / "first.ppm").write_bytes(b"P6\n" + b"9" * 5000)
    ws.write_csv(header(ws).replace(ws.names[0], "first.ppm"))
    return ws.audit(*extra)


@lru_cache(maxsize=1)
def tiff_bytes() -> bytes:
    """Returns the bytes of a valid 8×8 RGB TIFF (its tags come right after the 8-byte header)."""
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), "gray").save(buffer, format="TIFF")
    return buffer.getvalue()


# Characters that str.splitlines() ends a line at, though a CSV reader does not.
LINE_BREAKS = {"\\x1e": "\x1e", "\\x85": "\x85", "\\u2028": "\u2028"}


REFUSED: dict[str, tuple[Callable[[Workspace], list[str]], tuple[str, ...]]] = {
    # CSV
    "csv not found": (lambda ws: ws.audit(csv=ws.tmp / "nope.csv"), ("nope.csv", "labels CSV not found")),
    "csv empty": (csv_case(lambda ws: ""), ("labels.csv", "empty", "header path,label")),
    "csv header only": (csv_case(lambda ws: "path,label\n"), ("labels.csv", "no rows")),
    "csv latin-1": (
        csv_case(lambda ws: with_row(ws, "d00.png,caf\u00e9"), "latin-1"),
        ("labels.csv", "line 26", "not UTF-8", "save the file as UTF-8"),
    ),
    "csv header missing": (
        csv_case(lambda ws: "\n".join(ws.rows()) + "\n"),
        ("labels.csv", "looks like a data row", "add the header line path,label"),
    ),
    "csv header misspelled": (
        csv_case(lambda ws: header(ws, "paht,label")),
        ("labels.csv", "no 'path' column, but there is 'paht'"),
    ),
    "csv header wrong": (
        csv_case(lambda ws: header(ws, "file,class")),
        ("labels.csv", "missing column(s) path, label", "found: file, class"),
    ),
    "csv empty label": (
        csv_case(lambda ws: header(ws).replace("d05.png,0", "d05.png,")),
        ("labels.csv", "row 7", "empty label"),
    ),
    "csv empty path": (csv_case(lambda ws: with_row(ws, ",1")), ("labels.csv", "row 26", "empty path")),
    "csv float labels": (
        csv_case(lambda ws: header(ws).replace(",0\n", ",0.0\n")),
        ("labels.csv", "row 2", "'0.0' is a decimal number"),
    ),
    "csv one class": (
        csv_case(lambda ws: "path,label\n" + "\n".join(f"{n},cat" for n in ws.names) + "\n"),
        ("labels.csv", "'cat'", "at least two classes"),
    ),
    "csv class with one image": (
        csv_case(lambda ws: header(ws).replace("d20.png,2", "d20.png,22")),
        ("labels.csv", "row 22", "class '22' has only this one image", "did you mean '2'"),
    ),
    "csv duplicate path": (
        csv_case(lambda ws: with_row(ws, "d03.png,1")),
        ("labels.csv", "row 26", "duplicate path 'd03.png'", "also row 5"),
    ),
    "csv image missing": (
        csv_case(lambda ws: with_row(ws, "gone.png,1")),
        ("labels.csv", "row 26", "gone.png", "not found"),
    ),
    "csv too many fields": (
        csv_case(lambda ws: with_row(ws, "d03.png,1,extra,more")),
        ("labels.csv", "row 26", "fields but the header names 2 columns"),
    ),
    "csv unknown candidate": (
        csv_case(lambda ws: "path,label,candidates\n" + "\n".join(f"{r},{r[-1]}|9" for r in ws.rows()) + "\n"),
        ("labels.csv", "row 2", "unknown class '9'"),
    ),
    # found by fuzzing (tests/test_fuzz_inputs.py)
    "csv two extra fields in the first row": (
        csv_case(lambda ws: header(ws).replace("d00.png,0\n", "d00.png,0,x,y\n")),
        ("labels.csv", "row 2", "fields", "header"),
    ),
    "csv NUL in a path": (csv_case(lambda ws: header(ws).replace("d00.png", "d0\x000.png")), ("labels.csv", "row 2")),
    "csv file name over 255 bytes": (csv_case(lambda ws: with_row(ws, "x" * 300 + ".png,1")), ("labels.csv", "row 26")),
    "csv path is a link to itself": (self_link, ("labels.csv", "row 26")),
    "csv UTF-16 of odd length": (
        csv_bytes_case(lambda ws: header(ws).encode("utf-16")[:-1]),
        ("labels.csv", "not UTF-16"),
    ),
    "csv UTF-16 with a lone surrogate": (
        csv_bytes_case(lambda ws: with_row(ws, "\ud800.png,1").encode("utf-16", "surrogatepass")),
        ("labels.csv", "not UTF-16"),
    ),
    "csv newline in a quoted path": (
        csv_case(lambda ws: header(ws).replace("d00.png", '"d0\n0.png"')),
        ("labels.csv", "row 2", "d0\\n0.png"),
    ),
    **{
        f"csv {shown} in a path": (
            csv_case(lambda ws, char=char: header(ws).replace("d00.png", f"d0{char}0.png")),
            ("labels.csv", "row 2"),
        )
        for shown, char in LINE_BREAKS.items()
    },
    "csv header of 100,000 columns": (
        csv_case(lambda ws: wide_header(ws, 99_998, filled=False)),
        ("labels.csv", "columns"),
    ),
    "csv header of 100,000 columns, rows filled": (
        csv_case(lambda ws: wide_header(ws, 99_998, filled=True)),
        ("labels.csv", "columns"),
    ),
    # paths leaving the image folder
    "path absolute": (
        lambda ws: outside_file(ws, "{tmp}/outside.png,1"),
        ("labels.csv", "row 26", "leaves the image folder", "--allow-outside-root"),
    ),
    "path with ..": (
        lambda ws: outside_file(ws, "../outside.png,1"),
        ("labels.csv", "row 26", "'../outside.png' leaves the image folder", "--allow-outside-root"),
    ),
    "path link outside": (
        outside_link,
        ("labels.csv", "row 26", "'link.png' is a link pointing outside", "--allow-outside-root"),
    ),
    # images
    "image folder missing": (
        lambda ws: ["audit", str(ws.tmp / "nowhere"), str(ws.csv), "--out", str(ws.out), *QUICK],
        ("nowhere", "image folder not found"),
    ),
    "image folder without images": (empty_image_folder, ("empty", "no images in <class>/<image> subfolders")),
    "image zero bytes": (
        replace_image(lambda p: p.write_bytes(b"")),
        ("d03.png", "not an image file", "--on-bad-image skip"),
    ),
    "image truncated": (
        replace_image(lambda p: p.write_bytes(p.read_bytes()[:60])),
        ("d03.png", "cannot decode", "--on-bad-image skip"),
    ),
    "image is text": (replace_image(lambda p: p.write_text("path,label\n")), ("d03.png", "not an image file")),
    "image bomb over 2x limit": (
        lambda ws: bomb(ws, 20_000, 20_000),
        ("d03.png", "decompression bomb", "--on-bad-image skip"),
    ),
    "image bomb over limit": (lambda ws: bomb(ws, 10_000, 9_000), ("d03.png", "decompression bomb")),
    "image folder name with a newline": (folder_with_newline, ("labels.csv", "row 26", "gone.png", "not found")),
    "image first is a PPM with a corrupt header": (first_image_corrupt_ppm, ("first.ppm", "--on-bad-image skip")),
    "image TIFF truncated": (
        replace_image(lambda p: p.write_bytes(tiff_bytes()[:60])),
        ("d03.png", "--on-bad-image skip"),
    ),
    "image TIFF header and garbage": (
        replace_image(lambda p: p.write_bytes(tiff_bytes()[:8] + b"\xff" * 200)),
        ("d03.png", "--on-bad-image skip"),
    ),
    # options
    "epochs negative": (lambda ws: ws.audit("--epochs", "-1"), ("--epochs -1", "must be at least 1")),
    "batch size 1": (lambda ws: ws.audit("--batch-size", "1"), ("--batch-size 1", "at least 2")),
    "lr zero": (lambda ws: ws.audit("--lr", "0"), ("--lr 0.0", "must be positive")),
    "threshold 1.5": (lambda ws: ws.audit("--threshold", "1.5"), ("--threshold 1.5", "between 0 and 1")),
    "noise rate 1": (lambda ws: ws.audit("--noise-rate", "1"), ("--noise-rate 1.0", "[0, 1)")),
    "image size 2": (lambda ws: ws.audit("--image-size", "2"), ("--image-size 2", "between 4 and 1024")),
    "workers 0": (lambda ws: ws.audit("--workers", "0"), ("--workers 0", "at least 1")),
    "seed negative": (lambda ws: ws.audit("--seed", "-3"), ("--seed -3", "not be negative")),
    "state dtype unknown": (lambda ws: ws.audit("--state-dtype", "float8"), ("--state-dtype", "'float8'")),
    "max ram not a size": (lambda ws: ws.audit("--max-ram", "lots"), ("--max-ram lots", "not a size", "64G")),
    "max ram too small": (
        lambda ws: ws.audit("--max-ram", "10"),
        ("--max-ram 10:", "this run needs about", "final probabilities", "raise --max-ram"),
    ),
    "epochs not a number": (lambda ws: ws.audit("--epochs", "ten"), ("--epochs", "valid integer")),
    "unknown method": (lambda ws: ws.audit("--method", "nope"), ("--method 'nope'",)),
    "unknown backbone": (lambda ws: ws.audit("--backbone", "nope"), ("--backbone 'nope'",)),
    "unknown option": (lambda ws: ws.audit("--bogus"), ("No such option: --bogus",)),
    "unknown method option": (lambda ws: ws.audit("--ce-foo", "1"), ("--ce-foo",)),
    "option of another method": (
        lambda ws: ws.audit("--alr-lambda", "0.5"),
        ("--alr-lambda", "applies to another method"),
    ),
    "method option out of range": (
        lambda ws: ws.audit("--method", "alim", "--alim-normalize", "soft"),
        ("--alim-normalize 'soft'", "choose"),
    ),
    "warm-up too long": (
        lambda ws: ws.audit("--method", "pmnar", "--pmnar-warmup", "5"),
        ("--pmnar-warmup 5", "--epochs 1"),
    ),
    "on-bad-image value": (lambda ws: ws.audit("--on-bad-image", "burn"), ("--on-bad-image", "'burn'")),
    "weights file missing": (
        lambda ws: ws.audit("--weights", str(ws.tmp / "w.pt")),
        ("--weights", "w.pt", "no such file"),
    ),
    # environment and outputs
    "out is a file": (lambda ws: ws.audit("--out", str(ws.csv)), ("--out", "labels.csv", "is a file")),
    "out not writable": (unwritable_out, ("--out /sys/lnlclean-out", "choose another --out")),
    "cache dir is a file": (
        lambda ws: ws.audit("--cache-dir", str(ws.csv), cache=False),
        ("--cache-dir", "labels.csv", "is a file"),
    ),
    "LNLCLEAN_CACHE is a file": (env_cache_is_a_file, ("$LNLCLEAN_CACHE", "cachefile", "is a file")),
    "cuda missing": (cuda_missing, ("--device cuda", "CUDA is not available")),
    "audit twice": (
        lambda ws: (ws.finished_run(), ws.audit())[1],
        ("--out", "already holds audit.parquet", "--overwrite"),
    ),
    "unfinished run without --resume": (
        lambda ws: (ws.unfinished_run(), ws.audit())[1],
        ("--out", "unfinished run", "--resume", "--overwrite"),
    ),
    "relabel out is the labels CSV": (
        lambda ws: ["relabel", str(ws.images), str(ws.csv), "--out", str(ws.csv), "--overwrite", *QUICK],
        ("--out", "labels.csv", "inputs are never modified"),
    ),
    "relabel out exists": (
        lambda ws: ["relabel", str(ws.images), str(ws.csv), "--out", str(ws.write_csv("x", "fixed.csv")), *QUICK],
        ("--out", "fixed.csv", "already exists", "--overwrite"),
    ),
    "relabel from a non-audit": (
        lambda ws: [
            "relabel",
            str(ws.images),
            str(ws.csv),
            "--from-audit",
            str(ws.csv),
            "--out",
            str(ws.tmp / "fixed.csv"),
            "--quiet",
        ],
        ("--from-audit", "labels.csv", "not a readable audit.parquet"),
    ),
    "benchmark out holds results": (existing_benchmark, ("--out", "already holds benchmark.json", "--overwrite")),
    "benchmark data dir missing": (
        lambda ws: ["benchmark", "cifar10", "--data-dir", str(ws.tmp / "cifar"), "--out", str(ws.out), "--quiet"],
        ("--data-dir", "cifar"),
    ),
    "benchmark unknown dataset": (
        lambda ws: ["benchmark", "mnist", "--out", str(ws.out), "--quiet"],
        ("dataset 'mnist'", "choose one of"),
    ),
    "benchmark noise sym100": (
        lambda ws: ["benchmark", "digits", "--noise", "sym100", "--out", str(ws.out), "--quiet"],
        ("--noise 'sym100'",),
    ),
    "benchmark fail-under malformed": (
        lambda ws: ["benchmark", "digits", "--fail-under", "f1", "--out", str(ws.out), "--quiet"],
        ("--fail-under 'f1'", "key=value"),
    ),
    "benchmark partial labels for ce": (
        lambda ws: ["benchmark", "digits", "--partial-rate", "0.3", "--out", str(ws.out), "--quiet"],
        ("--partial-rate", "--method ce does not read candidate sets"),
    ),
    "benchmark train size 0": (
        lambda ws: ["benchmark", "digits", "--train-size", "0", "--epochs", "1", "--out", str(ws.out), "--quiet"],
        ("--train-size 0",),
    ),
    # checkpoints
    "resume without checkpoint": (
        lambda ws: ws.audit("--resume"),
        ("--resume", "no checkpoint at", "run once without --resume"),
    ),
    "resume corrupt checkpoint": (
        lambda ws: (ws.out.mkdir(), (ws.out / "checkpoint.pt").write_bytes(b"\x80\x02garbage"), ws.audit("--resume"))[
            2
        ],
        ("--resume", "checkpoint.pt", "not a readable lnlclean checkpoint"),
    ),
    "resume truncated checkpoint": (
        lambda ws: (
            ws.unfinished_run(),
            (ws.out / "checkpoint.pt").write_bytes((ws.out / "checkpoint.pt").read_bytes()[:500]),
            ws.audit("--resume"),
        )[2],
        ("--resume", "not a readable lnlclean checkpoint"),
    ),
    "resume checkpoint running code": (
        lambda ws: foreign_checkpoint(ws, {"identity": RunsCode(ws.tmp / "pwned")}),
        ("--resume", "not a readable lnlclean checkpoint"),
    ),
    "resume checkpoint of another method": (
        lambda ws: (ws.unfinished_run(), ws.audit("--resume", "--method", "alr", "--epochs", "2"))[1],
        ("--resume", "different run", "method was 'ce', now 'alr'"),
    ),
    "resume checkpoint of other labels": (relabeled_labels, ("--resume", "different run", "other images or labels")),
}


def snapshot(*folders: Path) -> dict[str, str]:
    """Returns relative path → content hash of every file under `folders` (missing folders give nothing)."""
    files = {}
    for folder in folders:
        if folder.is_file():
            files[str(folder)] = hashlib.sha256(folder.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*")) if folder.is_dir() else []:
            if path.is_file() and not path.is_symlink():
                files[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return files


@pytest.mark.parametrize("case", list(REFUSED))
def test_refused_with_one_line_exit_2_and_nothing_written(ws, capsys, case):
    arrange, fragments = REFUSED[case]
    argv = arrange(ws)
    capsys.readouterr()
    inputs_before = snapshot(ws.images, *ws.tmp.glob("*.csv"))
    outputs_before = snapshot(ws.out, ws.tmp / "fixed.csv")
    out_existed = ws.out.exists()

    code = main(argv)

    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert len(err) == 1, err
    assert err[0].startswith("error: ") and "Traceback" not in err[0]
    for fragment in fragments:
        assert fragment in err[0], f"{fragment!r} not in {err[0]!r}"
    assert snapshot(ws.out, ws.tmp / "fixed.csv") == outputs_before
    assert ws.out.exists() == out_existed
    assert snapshot(ws.images, *ws.tmp.glob("*.csv")) == inputs_before
    assert not (ws.tmp / "pwned").exists()


def test_catalog_covers_csv_images_options_and_environment():
    assert len(REFUSED) >= 25
    kinds = {name.split()[0] for name in REFUSED}
    assert {"csv", "path", "image", "epochs", "out", "cache", "resume"} <= kinds


# ---------------------------------------------------------------- accepted: arrange(ws) -> argv


def save_as(mode_image: Callable[[np.ndarray], Image.Image], suffix: str, **save_options):
    """Returns an arrange function that rewrites image 3 as `mode_image(pixels)` in a `suffix` file and audits."""

    def arrange(ws: Workspace) -> list[str]:
        old = ws.images / ws.names[3]
        pixels = np.asarray(Image.open(old).convert("L"))
        new_name = f"unusual{suffix}"
        mode_image(pixels).save(ws.images / new_name, **save_options)
        old.unlink()
        ws.write_csv(header(ws).replace(ws.names[3], new_name))
        return ws.audit()

    return arrange


def rgb(pixels: np.ndarray) -> Image.Image:
    return Image.fromarray(np.stack([pixels] * 3, axis=-1))


def animated(ws: Workspace) -> list[str]:
    frames = [rgb(np.asarray(Image.open(ws.images / ws.names[3]).convert("L"))), Image.new("RGB", (8, 8), "red")]
    frames[0].save(ws.images / "anim.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    ws.write_csv(header(ws).replace(ws.names[3], "anim.gif"))
    return ws.audit()


def damaged_cache(ws: Workspace) -> list[str]:
    ws.finished_run()
    for array in ws.cache.glob("*.npy"):
        array.write_bytes(array.read_bytes()[:100])
    return ws.audit("--overwrite")


def outside_allowed(ws: Workspace) -> list[str]:
    Image.open(ws.images / ws.names[3]).save(ws.tmp / "outside.png")
    (ws.images / ws.names[3]).unlink()
    ws.write_csv(header(ws).replace(ws.names[3], "../outside.png"))
    return ws.audit("--allow-outside-root")


def quoted_comma(ws: Workspace) -> list[str]:
    (ws.images / ws.names[3]).rename(ws.images / "a, b.png")
    ws.write_csv(header(ws).replace(ws.names[3], '"a, b.png"'))
    return ws.audit()


def class_folders(ws: Workspace, loop: Callable[[Path], None]) -> list[str]:
    """Moves the images into the ImageFolder layout images/<label>/<name>,
    adds `loop(images/0)`, and audits without a CSV.
    """
    for name, label in zip(ws.names, ws.labels):
        (ws.images / str(label)).mkdir(exist_ok=True)
        (ws.images / name).rename(ws.images / str(label) / name)
    loop(ws.images / "0")
    return ["audit", str(ws.images), "--out", str(ws.out), *QUICK, "--cache-dir", str(ws.cache)]


ACCEPTED: dict[str, Callable[[Workspace], list[str]]] = {
    "csv with BOM": csv_case(lambda ws: header(ws), "utf-8-sig"),
    "csv UTF-16": csv_case(lambda ws: header(ws), "utf-16"),
    "csv semicolons": csv_case(lambda ws: "path;label\n" + "\n".join(ws.rows(";")) + "\n"),
    "csv tabs": csv_case(lambda ws: "path\tlabel\n" + "\n".join(ws.rows("\t")) + "\n"),
    "csv CRLF": csv_case(lambda ws: header(ws).replace("\n", "\r\n")),
    "csv blank lines": csv_case(lambda ws: header(ws).replace("\n", "\n\n")),
    "csv spaces around labels": csv_case(
        lambda ws: header(ws, " path , label ").replace(",", " ,  ").replace("\n", "  \n")
    ),
    "csv header in capitals": csv_case(lambda ws: header(ws, "Path,Label")),
    "csv quoted comma in a path": quoted_comma,
    # found by fuzzing (tests/test_fuzz_inputs.py)
    "csv trailing separator on rows": csv_case(
        lambda ws: "path,label\n" + "\n".join(r + "," for r in ws.rows()) + "\n"
    ),
    "csv extra columns differing by spaces": csv_case(
        lambda ws: "path,label,x,x \n" + "\n".join(r + ",a,b" for r in ws.rows()) + "\n"
    ),
    "csv 500 extra columns": csv_case(lambda ws: wide_header(ws, 500, filled=True)),
    "csv blank line before the header": csv_case(lambda ws: "\n" + header(ws)),
    "csv UTF-16 with blank lines": csv_case(lambda ws: "\n" + header(ws).replace("\n", "\n\n"), "utf-16"),
    "folder with a directory link loop": lambda ws: class_folders(ws, lambda folder: os.symlink(".", folder / "again")),
    "folder with a file linking to itself": lambda ws: class_folders(
        ws, lambda folder: os.symlink("self.png", folder / "self.png")
    ),
    "image CMYK JPEG": save_as(lambda p: rgb(p).convert("CMYK"), ".jpg"),
    "image 16-bit PNG": save_as(lambda p: Image.fromarray(p.astype(np.uint16) * 257), ".png"),
    "image palette PNG": save_as(lambda p: rgb(p).convert("P"), ".png"),
    "image palette with transparency": save_as(lambda p: rgb(p).convert("P"), ".png", transparency=0),
    "image grayscale": save_as(lambda p: Image.fromarray(p, mode="L"), ".png"),
    "image RGBA": save_as(lambda p: rgb(p).convert("RGBA"), ".png"),
    "image gray + alpha": save_as(lambda p: Image.fromarray(p, mode="L").convert("LA"), ".png"),
    "image TIFF": save_as(rgb, ".tif"),
    "image BMP": save_as(rgb, ".bmp"),
    "image animated GIF": animated,
    "cache damaged": damaged_cache,
    "path outside with --allow-outside-root": outside_allowed,
}


@pytest.mark.parametrize("case", list(ACCEPTED))
def test_unusual_but_valid_input_is_audited(ws, capsys, case):
    argv = ACCEPTED[case](ws)
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 0, err
    frame, meta = read_audit(ws.out / "audit.parquet")
    assert len(frame) == len(ws.names) and meta["class_names"] == [str(k) for k in CLASSES]
    assert frame["given_label"].tolist() == [str(k) for k in ws.labels]
    assert pd.read_json(ws.out / "summary.json", typ="series")["n_skipped"] == 0


def test_overwrite_replaces_an_earlier_audit(ws):
    ws.finished_run()
    before = (ws.out / "audit.parquet").stat().st_mtime_ns
    assert main(ws.audit("--overwrite", "--seed", "1")) == 0
    _, meta = read_audit(ws.out / "audit.parquet")
    assert meta["seed"] == 1 and (ws.out / "audit.parquet").stat().st_mtime_ns != before


def test_bad_image_is_skipped_on_request_and_named_in_the_summary(ws):
    png_header(ws.images / ws.names[3], 20_000, 20_000)
    assert main(ws.audit("--on-bad-image", "skip")) == 0
    summary = pd.read_json(ws.out / "summary.json", typ="series")
    assert summary["n_skipped"] == 1
    assert summary["skipped"][0]["path"] == ws.names[3] and "decompression bomb" in summary["skipped"][0]["reason"]


def test_missing_image_is_skipped_on_request_and_named_in_the_summary(ws):
    """--on-bad-image skip also skips a row whose file does not exist; summary.json names it with a reason."""
    ws.write_csv(with_row(ws, "gone.png,1"))
    assert main(ws.audit("--on-bad-image", "skip")) == 0
    summary = pd.read_json(ws.out / "summary.json", typ="series")
    assert summary["n_skipped"] == 1
    assert summary["skipped"][0]["path"] == "gone.png" and summary["skipped"][0]["reason"]
    assert len(read_audit(ws.out / "audit.parquet")[0]) == len(ws.names)


def test_unreadable_first_image_is_skipped_on_request(ws):
    """A first image whose header cannot be parsed (it sets the image size) is skipped like any bad image."""
    assert main(first_image_corrupt_ppm(ws, "--on-bad-image", "skip")) == 0
    summary = pd.read_json(ws.out / "summary.json", typ="series")
    assert summary["n_skipped"] == 1 and summary["skipped"][0]["path"] == "first.ppm"
    assert len(read_audit(ws.out / "audit.parquet")[0]) == len(ws.names) - 1


@pytest.mark.parametrize("case", ["csv header of 100,000 columns", "csv header of 100,000 columns, rows filled"])
def test_a_header_of_100000_columns_is_refused_within_seconds(ws, capsys, case):
    """A very wide header is refused (over 1,000 extra columns)
    in one line, quickly: no parsing of every column first.
    """
    arrange, _ = REFUSED[case]
    argv = arrange(ws)
    started = time.perf_counter()
    code = main(argv)
    seconds = time.perf_counter() - started
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "columns" in err[0], err
    assert seconds < 20, f"took {seconds:.1f} s"


def test_a_pickle_that_runs_code_is_never_loaded(ws, capsys):
    ws.out.mkdir()
    with open(ws.out / "checkpoint.pt", "wb") as handle:
        pickle.dump({"identity": RunsCode(ws.tmp / "pwned")}, handle)
    assert main(ws.audit("--resume")) == 2
    assert not (ws.tmp / "pwned").exists()


@pytest.mark.parametrize(
    "case",
    [
        "image bomb over limit",
        "resume checkpoint running code",
        "image TIFF truncated",
        "image TIFF header and garbage",
    ],
)
def test_a_real_process_prints_one_line_and_exits_2(ws, case):
    """Outside pytest, which records warnings, nothing else reaches stderr (no Pillow warning about a corrupt TIFF)."""
    arrange, fragments = REFUSED[case]
    argv = arrange(ws)
    done = subprocess.run([sys.executable, "-m", "lnlclean", *argv], capture_output=True, text=True, timeout=300)
    err = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(err) == 1, done.stderr
    assert all(fragment in err[0] for fragment in fragments)


def test_a_full_disk_while_writing_gives_one_line_and_keeps_the_checkpoint(ws, capsys, monkeypatch):
    import errno

    from lnlclean.report import audit as audit_module

    def disk_full(table, where, **options):
        Path(where).write_bytes(b"PAR1 partial")
        raise OSError(errno.ENOSPC, "No space left on device", str(where))

    monkeypatch.setattr(audit_module.pq, "write_table", disk_full)
    assert main(ws.audit()) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {ws.out / 'audit.parquet'}: No space left on device; free space or choose another location"]
    assert sorted(p.name for p in ws.out.iterdir()) == ["checkpoint.pt"]
