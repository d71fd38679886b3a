"""read_manifest: CSV and ImageFolder layouts, class maps, extra columns and every UserError."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lnlclean.data.manifest import Manifest, read_manifest
from lnlclean.errors import UserError


def write_png(path: Path, value: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((4, 4, 3), value, dtype=np.uint8)).save(path)


@pytest.fixture
def small(tmp_path):
    """An image folder with a.png, b.png, c.png and a helper that writes a CSV and returns its path."""
    root = tmp_path / "imgs"
    for name in ("a.png", "b.png", "c.png"):
        write_png(root / name)

    def csv(text: str, *, name: str = "labels.csv", encoding: str = "utf-8") -> Path:
        path = tmp_path / name
        path.write_bytes(text.encode(encoding))
        return path

    return root, csv


def expect_user_error(root, csv, *fragments: str) -> str:
    with pytest.raises(UserError) as info:
        read_manifest(root, csv)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return message


# ---------------------------------------------------------------- CSV, happy path


def test_csv_digits_folder(digits_folder):
    manifest = read_manifest(digits_folder.root, digits_folder.csv)
    assert len(manifest) == len(digits_folder.labels)
    assert manifest.paths == digits_folder.paths
    present = sorted(set(int(v) for v in digits_folder.labels))
    assert manifest.class_names == [str(d) for d in present]
    assert manifest.n_classes == len(present)
    assert manifest.labels.dtype == np.int64
    names = np.asarray(manifest.class_names)[manifest.labels]
    assert list(names) == [str(int(v)) for v in digits_folder.labels]
    assert manifest.source == digits_folder.csv
    assert manifest.root == digits_folder.root


def test_extra_columns_kept_in_order(digits_folder):
    manifest = read_manifest(digits_folder.root, digits_folder.csv)
    assert list(manifest.extra.columns) == ["annotator"]
    assert len(manifest.extra) == len(manifest)
    assert list(manifest.extra["annotator"]) == [f"ann{i % 3}" for i in range(len(manifest))]
    assert list(manifest.extra.index) == list(range(len(manifest)))


def test_extra_columns_several_and_between(small):
    root, csv = small
    manifest = read_manifest(root, csv("id,path,score,label,note\n1,a.png,0.5,x,hi\n2,b.png,0.7,y,yo\n"))
    assert list(manifest.extra.columns) == ["id", "score", "note"]
    # read as text: values are not converted
    assert list(manifest.extra["id"]) == ["1", "2"]
    assert list(manifest.extra["score"]) == ["0.5", "0.7"]


def test_integer_labels_sort_numerically(small):
    root, csv = small
    manifest = read_manifest(root, csv("path,label\na.png,9\nb.png,10\nc.png,2\n"))
    assert manifest.class_names == ["2", "9", "10"]
    assert list(manifest.labels) == [1, 2, 0]


def test_text_labels_sort_alphabetically(small):
    root, csv = small
    manifest = read_manifest(root, csv("path,label\na.png,dog\nb.png,cat\nc.png,10\n"))
    assert manifest.class_names == ["10", "cat", "dog"]
    assert list(manifest.labels) == [2, 1, 0]


def test_utf8_bom_csv(small):
    root, csv = small
    manifest = read_manifest(root, csv("path,label\na.png,1\nb.png,2\n", encoding="utf-8-sig"))
    assert manifest.paths == ["a.png", "b.png"]
    assert manifest.class_names == ["1", "2"]


def test_whitespace_stripped_around_labels_paths_and_header(small):
    root, csv = small
    manifest = read_manifest(root, csv(" path , label \n a.png , 1 \nb.png,  2\nc.png,1   \n"))
    assert manifest.paths == ["a.png", "b.png", "c.png"]
    assert manifest.class_names == ["1", "2"]
    assert list(manifest.labels) == [0, 1, 0]


def test_backslash_path_normalised(small, tmp_path):
    root, csv = small
    write_png(root / "sub" / "d.png")
    manifest = read_manifest(root, csv("path,label\nsub\\d.png,1\na.png,2\n"))
    assert manifest.paths == ["sub/d.png", "a.png"]


def test_subset(digits_folder):
    manifest = read_manifest(digits_folder.root, digits_folder.csv)
    keep = np.zeros(len(manifest), dtype=bool)
    keep[[1, 4, 7]] = True
    part = manifest.subset(keep)
    assert isinstance(part, Manifest)
    assert part.paths == [manifest.paths[i] for i in (1, 4, 7)]
    assert list(part.labels) == [manifest.labels[i] for i in (1, 4, 7)]
    assert part.class_names == manifest.class_names
    assert list(part.extra["annotator"]) == [manifest.extra["annotator"][i] for i in (1, 4, 7)]
    assert list(part.extra.index) == [0, 1, 2]
    assert part.root == manifest.root and part.source == manifest.source
    # the original is untouched
    assert len(manifest) == len(digits_folder.labels)


# ---------------------------------------------------------------- ImageFolder layout


def test_image_folder_layout(tmp_path):
    root = tmp_path / "imgs"
    for cls, names in {"9": ["x.png", "y.jpg"], "10": ["z.png"], "2": ["w.png"]}.items():
        for name in names:
            write_png(root / cls / name)
    (root / "10" / "notes.txt").write_text("not an image")
    write_png(root / ".hidden" / "h.png")
    (root / "stray.png").write_bytes(b"")  # a file at the top level is not a class
    manifest = read_manifest(root)
    assert manifest.source is None
    assert manifest.class_names == ["2", "9", "10"]
    assert manifest.paths == ["10/z.png", "2/w.png", "9/x.png", "9/y.jpg"]
    assert [manifest.class_names[k] for k in manifest.labels] == ["10", "2", "9", "9"]
    assert manifest.extra.shape[1] == 0


def test_image_folder_nested_files_belong_to_top_class(tmp_path):
    root = tmp_path / "imgs"
    write_png(root / "cat" / "deep" / "a.png")
    write_png(root / "dog" / "b.png")
    manifest = read_manifest(root)
    assert manifest.paths == ["cat/deep/a.png", "dog/b.png"]
    assert manifest.class_names == ["cat", "dog"]


def test_image_folder_without_images(tmp_path):
    root = tmp_path / "imgs"
    (root / "cat").mkdir(parents=True)
    (root / "cat" / "a.txt").write_text("x")
    with pytest.raises(UserError, match="no images"):
        read_manifest(root)


def test_image_folder_single_class(tmp_path):
    root = tmp_path / "imgs"
    write_png(root / "cat" / "a.png")
    write_png(root / "cat" / "b.png")
    with pytest.raises(UserError, match="at least two classes") as info:
        read_manifest(root)
    assert str(root) in str(info.value)


# ---------------------------------------------------------------- validation errors


def test_missing_csv(small, tmp_path):
    root, _ = small
    missing = tmp_path / "nope.csv"
    expect_user_error(root, missing, str(missing), "not found")


def test_missing_image_folder(tmp_path, small):
    _, csv = small
    path = csv("path,label\na.png,1\nb.png,2\n")
    missing = tmp_path / "no_such_folder"
    expect_user_error(missing, path, str(missing), "image folder not found")
    with pytest.raises(UserError, match="image folder not found"):
        read_manifest(missing)


def test_image_folder_is_a_file(tmp_path, small):
    _, csv = small
    path = csv("path,label\na.png,1\nb.png,2\n")
    expect_user_error(path, path, "image folder not found")


@pytest.mark.parametrize(
    "header, fragment",
    [
        ("paht,label", "no 'path' column, but there is 'paht'"),
        ("path,lable", "no 'label' column, but there is 'lable'"),
        ("file,class", "missing column(s) path, label (found: file, class)"),
    ],
)
def test_missing_required_column(small, header, fragment):
    root, csv = small
    path = csv(f"{header}\na.png,1\nb.png,2\n")
    message = expect_user_error(root, path, str(path), fragment)
    assert "path,label" in message


def test_data_row_in_place_of_header(small):
    root, csv = small
    path = csv("a.png,1\nb.png,2\n")
    expect_user_error(root, path, "looks like a data row", "add the header line path,label")


@pytest.mark.parametrize("sep", [";", "\t"])
def test_semicolon_and_tab_separated(small, sep):
    root, csv = small
    manifest = read_manifest(root, csv(f"path{sep}label{sep}note\na.png{sep}1{sep}x, y\nb.png{sep}2{sep}z\n"))
    assert manifest.paths == ["a.png", "b.png"] and manifest.class_names == ["1", "2"]
    assert list(manifest.extra["note"]) == ["x, y", "z"]


def test_header_case_is_ignored_for_reserved_names(small):
    root, csv = small
    manifest = read_manifest(root, csv("Path,LABEL,Annotator\na.png,1,x\nb.png,2,y\n"))
    assert manifest.class_names == ["1", "2"] and list(manifest.extra.columns) == ["Annotator"]


def test_utf16_with_bom(small):
    root, csv = small
    manifest = read_manifest(root, csv("path,label\na.png,chat\nb.png,écureuil\n", encoding="utf-16"))
    assert manifest.class_names == ["chat", "écureuil"]


@pytest.mark.parametrize("labels", [("1.0", "2.0"), ("0.5", "1"), ("1e3", "2")])
def test_decimal_labels_are_refused(small, labels):
    root, csv = small
    path = csv(f"path,label\na.png,{labels[0]}\nb.png,{labels[1]}\n")
    expect_user_error(root, path, "is a decimal number", "integer class ids")


def test_numbers_among_names_are_class_names(small):
    root, csv = small
    manifest = read_manifest(root, csv("path,label\na.png,2.5\nb.png,cat\n"))
    assert manifest.class_names == ["2.5", "cat"]


def test_header_only(small):
    root, csv = small
    path = csv("path,label,annotator\n")
    expect_user_error(root, path, str(path), "no rows")


@pytest.mark.parametrize("text", ["", "\n\n", "   \n"])
def test_empty_file(small, text):
    root, csv = small
    path = csv(text)
    expect_user_error(root, path, str(path), "empty")


def test_duplicate_paths_names_rows(small):
    root, csv = small
    path = csv("path,label\na.png,1\nb.png,2\nc.png,1\nb.png,1\n")
    expect_user_error(root, path, str(path), "row 5", "duplicate path 'b.png'", "also row 3")


def test_duplicate_after_normalisation(small):
    root, csv = small
    path = csv("path,label\na.png,1\n./a.png,2\n")
    expect_user_error(root, path, "row 3", "duplicate path 'a.png'")


def test_single_class(small):
    root, csv = small
    path = csv("path,label\na.png,cat\nb.png,cat\nc.png, cat\n")
    expect_user_error(root, path, str(path), "'cat'", "at least two classes")


def test_absolute_path(small):
    root, csv = small
    absolute = (root / "a.png").resolve()
    path = csv(f"path,label\nb.png,1\n{absolute},2\n")
    expect_user_error(root, path, str(path), "row 3", "leaves the image folder")


@pytest.mark.parametrize("raw", ["../outside.png", "sub/../../outside.png", "..\\outside.png"])
def test_dotdot_path(small, raw, tmp_path):
    root, csv = small
    write_png(tmp_path / "outside.png")
    (root / "sub").mkdir()
    path = csv(f"path,label\na.png,1\nb.png,2\n{raw},1\n")
    expect_user_error(root, path, str(path), "row 4", "leaves the image folder")


def test_symlink_pointing_outside(small, tmp_path):
    root, csv = small
    write_png(tmp_path / "secret.png")
    os.symlink(tmp_path / "secret.png", root / "link.png")
    path = csv("path,label\na.png,1\nlink.png,2\n")
    expect_user_error(root, path, str(path), "row 3", "'link.png'", "outside")


def test_allow_outside_root_accepts_absolute_dotdot_and_outside_links(small, tmp_path):
    root, csv = small
    write_png(tmp_path / "outside.png")
    os.symlink(tmp_path / "outside.png", root / "link.png")
    absolute = (root / "a.png").resolve()
    manifest = read_manifest(
        root, csv(f"path,label\n../outside.png,1\n{absolute},2\nlink.png,1\n"), allow_outside_root=True
    )
    assert manifest.paths == ["../outside.png", absolute.as_posix(), "link.png"]
    assert all((manifest.root / p).is_file() for p in manifest.paths)


def test_symlink_inside_is_allowed(small):
    root, csv = small
    os.symlink(root / "a.png", root / "alias.png")
    manifest = read_manifest(root, csv("path,label\nalias.png,1\nb.png,2\n"))
    assert manifest.paths == ["alias.png", "b.png"]


def test_symlinked_directory_pointing_outside(small, tmp_path):
    root, csv = small
    outside = tmp_path / "outside"
    write_png(outside / "secret.png")
    os.symlink(outside, root / "sub")
    path = csv("path,label\na.png,1\nsub/secret.png,2\n")
    expect_user_error(root, path, str(path), "row 3", "outside")


def test_image_listed_but_missing(small):
    root, csv = small
    path = csv("path,label\na.png,1\nb.png,2\nghost.png,1\n")
    expect_user_error(root, path, str(path), "row 4", "ghost.png", "not found")


def test_path_is_a_directory(small):
    root, csv = small
    (root / "sub").mkdir()
    path = csv("path,label\na.png,1\nsub,2\n")
    expect_user_error(root, path, "row 3", "sub: not a file")


def test_empty_path_cell(small):
    root, csv = small
    path = csv("path,label\na.png,1\n,2\n")
    expect_user_error(root, path, str(path), "row 3", "empty path")


@pytest.mark.parametrize("row", ["b.png,", "b.png,   ", "b.png"])
def test_empty_label_cell(small, row):
    root, csv = small
    path = csv(f"path,label\na.png,1\n{row}\nc.png,2\n")
    expect_user_error(root, path, str(path), "row 3", "empty label")


def test_too_many_fields_is_user_error(small):
    root, csv = small
    path = csv("path,label\na.png,1\nb.png,2,surprise\n")
    expect_user_error(root, path, str(path), "row 3: 3 fields but the header names 2 columns")


def test_a_separator_at_the_end_of_rows_and_the_header_is_ignored(small):
    root, csv = small
    manifest = read_manifest(root, csv("path,label,\na.png,1,\nb.png,2,,\n"))
    assert manifest.paths == ["a.png", "b.png"] and list(manifest.extra.columns) == []


def test_blank_lines_before_the_header_are_skipped_and_rows_keep_their_line(small):
    root, csv = small
    path = csv("\n \n,,\npath,label\na.png,1\n\nb.png,\n")
    expect_user_error(root, path, "row 7: empty label")


def test_repeated_and_blank_extra_column_names_are_made_unique(small):
    root, csv = small
    manifest = read_manifest(root, csv("path,label,x,x ,,note\na.png,1,p,q,r,s\nb.png,2,t,u,v,w\n"))
    assert list(manifest.extra.columns) == ["x", "x.1", "column 5", "note"]
    assert manifest.extra["x.1"].tolist() == ["q", "u"]


def test_a_reserved_column_named_twice_is_refused(small):
    root, csv = small
    expect_user_error(root, csv("path,label,Label\na.png,1,1\nb.png,2,2\n"), "names 'label' twice")


def test_a_header_of_too_many_columns_is_refused_at_once(small):
    root, csv = small
    header = "path,label," + ",".join(f"c{i}" for i in range(100_000))
    expect_user_error(root, csv(header + "\na.png,1\nb.png,2\n"), "100,002 columns", "at most 1,000")


def test_a_quoted_cell_may_span_lines_and_its_row_is_cited_by_its_first_line(small):
    root, csv = small
    path = csv('path,label\na.png,1\n"b\n.png",2\nc.png,\n')
    expect_user_error(root, path, "row 3: image", "b\n.png: not found")


@pytest.mark.parametrize("raw, problem", [("a\x00b.png", "NUL character"), ("x" * 300 + ".png", "file name too long")])
def test_a_path_the_file_system_cannot_take_is_a_row_error(small, raw, problem):
    root, csv = small
    expect_user_error(root, csv(f"path,label\na.png,1\n{raw},2\n"), "row 3", problem)


def test_a_link_loop_is_a_row_error(small):
    root, csv = small
    (root / "loop.png").symlink_to("loop.png")
    expect_user_error(root, csv("path,label\na.png,1\nloop.png,2\n"), "row 3", "symbolic link loop")


def test_missing_files_are_kept_for_the_cache_to_skip_when_asked(small):
    root, csv = small
    manifest = read_manifest(root, csv("path,label\na.png,1\nb.png,2\ngone.png,2\n"), skip_missing=True)
    assert manifest.paths == ["a.png", "b.png", "gone.png"]


def test_undecodable_utf16_is_a_user_error(small):
    root, csv = small
    path = root.parent / "utf16.csv"
    path.write_bytes("path,label\na.png,1\n".encode("utf-16") + b"\x00")
    expect_user_error(root, path, "not UTF-16 text")


def test_not_utf8(small):
    root, csv = small
    path = csv("path,label\na.png,caf\u00e9\nb.png,2\n", encoding="latin-1")
    expect_user_error(root, path, str(path), "line 2", "byte 0xe9", "UTF-8")


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root can read any file")
def test_unreadable_image(small):
    root, csv = small
    (root / "b.png").chmod(0)
    try:
        path = csv("path,label\na.png,1\nb.png,2\n")
        expect_user_error(root, path, "row 3", "not readable")
    finally:
        (root / "b.png").chmod(0o644)


def test_rows_after_blank_lines_are_reported_by_their_real_line(tmp_path):
    root = tmp_path / "images"
    root.mkdir()
    for name in ("a.png", "b.png"):
        Image.new("L", (8, 8)).save(root / name)
    csv = tmp_path / "labels.csv"
    csv.write_text("path,label\na.png,x\n\n\nb.png,y\nmissing.png,x\n")
    with pytest.raises(UserError, match=r"row 6: image .*missing.png: not found"):
        read_manifest(root, csv)
    csv.write_text("path,label\na.png,x\n\nb.png,y\n")
    assert read_manifest(root, csv).paths == ["a.png", "b.png"]


def test_candidates_column_gives_candidate_sets_and_label_is_optional(small):
    root, csv = small
    both = read_manifest(root, csv("path,label,candidates\na.png,cat,cat|dog\nb.png,dog,\nc.png,bird,bird | cat\n"))
    assert both.class_names == ["bird", "cat", "dog"] and both.has_label_column
    assert both.candidates.tolist() == [[False, True, True], [False, False, True], [True, True, False]]
    assert both.extra["candidates"].tolist() == ["cat|dog", "", "bird | cat"]
    only = read_manifest(root, csv("path,candidates\na.png,dog|cat\nb.png,cat\nc.png,bird|dog\n", name="c.csv"))
    assert not only.has_label_column and only.class_names == ["bird", "cat", "dog"]
    assert [only.class_names[i] for i in only.labels] == ["dog", "cat", "bird"]  # the first candidate stands in
    assert only.subset(np.array([False, True, True])).candidates.tolist() == only.candidates[1:].tolist()


@pytest.mark.parametrize(
    "text, fragments",
    [
        ("path,label,candidates\na.png,cat,cat|dgo\nb.png,dog,dog\n", ("row 2", "unknown class 'dgo'")),
        (
            "path,label,candidates\na.png,cat,dog|bird\nb.png,dog,dog\nc.png,bird,bird\n",
            ("row 2", "label 'cat' is not among its candidates"),
        ),
        ("path,candidates\na.png,cat||dog\nb.png,dog\n", ("row 2", "empty name in candidates")),
        ("path,candidates\na.png,cat|dog\nb.png,\n", ("row 3", "no label and no candidates")),
        ("path,candidate\na.png,cat\n", ("missing column(s) label", "path,candidates")),
    ],
)
def test_bad_candidates_name_the_row(small, text, fragments):
    root, csv = small
    expect_user_error(root, csv(text), *fragments)
