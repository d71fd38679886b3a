"""load_or_build: the decoded-image cache, its size rules, reuse, rebuilds and bad images."""

from __future__ import annotations

import io
import json
import os
import re
from collections import Counter

import numpy as np
import pandas as pd
import pytest
from helpers import is_jpeg_row
from PIL import Image

from lnlclean.data import cache as cache_mod
from lnlclean.data.cache import load_or_build, resize_message
from lnlclean.data.decode import ImageError, decode_image, resize_center_crop, to_rgb
from lnlclean.data.imagefile import ImageArray
from lnlclean.data.manifest import read_manifest


def manifest_of(folder):
    return read_manifest(folder.root, folder.csv)


def folder_with(tmp_path, images: dict[str, Image.Image | bytes]):
    """Writes `images` (name -> PIL image or raw bytes) into tmp_path/imgs; returns the manifest."""
    root = tmp_path / "imgs"
    root.mkdir(exist_ok=True)
    rows = []
    for i, (name, image) in enumerate(images.items()):
        if isinstance(image, bytes):
            (root / name).write_bytes(image)
        else:
            image.save(root / name)
        rows.append({"path": name, "label": str(i % 2)})
    csv = tmp_path / "labels.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    return read_manifest(root, csv)


def forbid_decoding(monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("an image was opened although the cache should be reused")

    monkeypatch.setattr(cache_mod, "decode_all", boom)
    monkeypatch.setattr(cache_mod, "_first_size", boom)


# ---------------------------------------------------------------- build and sizes


def test_builds_uint8_image_array_with_source_pixels(digits_folder, cache_dir):
    manifest = manifest_of(digits_folder)
    progress = []
    cache = load_or_build(manifest, cache_dir, workers=2, advance=progress.append)
    n = len(manifest)
    assert cache.images.shape == (n, 8, 8, 3)
    assert cache.images.dtype == np.uint8
    assert isinstance(cache.images, ImageArray)
    assert cache.reused is False
    assert cache.bad == {}
    assert cache.path.parent == cache_dir and cache.path.suffix == ".npy" and cache.path.is_file()
    assert cache.path.with_suffix(".json").is_file()
    assert sum(progress) == n
    # PNG is lossless: decoded pixels equal the written ones, replicated over RGB
    for i in range(n):
        expected = np.repeat(digits_folder.pixels[i][:, :, None], 3, axis=2)
        if is_jpeg_row(i):
            # lossy, but close and still gray
            assert np.abs(cache.images[i].astype(int) - expected.astype(int)).mean() < 40
            assert (cache.images[i, :, :, 0] == cache.images[i, :, :, 1]).all()
        else:
            np.testing.assert_array_equal(cache.images[i], expected)
    # no temporary files left behind
    assert sorted(p.suffix for p in cache_dir.iterdir()) == [".json", ".npy"]


def test_auto_size_keeps_small_same_size_images(digits_folder, cache_dir):
    cache = load_or_build(manifest_of(digits_folder), cache_dir, image_size=None, fallback_size=32)
    assert cache.images.shape[1:] == (8, 8, 3)


def test_auto_size_keeps_non_square_small_images(tmp_path, cache_dir):
    images = {f"{i}.png": Image.new("RGB", (12, 6), (i * 40, 0, 0)) for i in range(4)}
    cache = load_or_build(folder_with(tmp_path, images), cache_dir, fallback_size=16)
    assert cache.images.shape == (4, 6, 12, 3)
    assert list(cache.images[:, 0, 0, 0]) == [0, 40, 80, 120]


def test_auto_size_mixed_sizes_fall_back(tmp_path, cache_dir):
    images = {
        "a.png": Image.new("RGB", (8, 8), (10, 20, 30)),
        "b.png": Image.new("RGB", (10, 10), (40, 50, 60)),
        "c.png": Image.new("RGB", (8, 8), (70, 80, 90)),
    }
    cache = load_or_build(folder_with(tmp_path, images), cache_dir, fallback_size=16)
    assert cache.images.shape == (3, 16, 16, 3)
    # uniform images stay uniform after resizing
    for i, colour in enumerate([(10, 20, 30), (40, 50, 60), (70, 80, 90)]):
        assert (cache.images[i] == np.array(colour, dtype=np.uint8)).all()


def test_auto_size_large_images_fall_back(tmp_path, cache_dir):
    images = {f"{i}.png": Image.new("L", (80, 80), 100 + i) for i in range(2)}
    cache = load_or_build(folder_with(tmp_path, images), cache_dir, fallback_size=20)
    assert cache.images.shape == (2, 20, 20, 3)
    assert (cache.images[0] == 100).all() and (cache.images[1] == 101).all()


def test_explicit_size_resizes_and_center_crops(tmp_path, cache_dir):
    # 40 wide x 20 high: red columns 0-7, green 8-31, blue 32-39
    pixels = np.zeros((20, 40, 3), dtype=np.uint8)
    pixels[:, :8] = (255, 0, 0)
    pixels[:, 8:32] = (0, 255, 0)
    pixels[:, 32:] = (0, 0, 255)
    images = {"a.png": Image.fromarray(pixels), "b.png": Image.new("RGB", (8, 8), (1, 2, 3))}
    cache = load_or_build(folder_with(tmp_path, images), cache_dir, image_size=10)
    assert cache.images.shape == (2, 10, 10, 3)
    # shorter side 20 -> 10 (image becomes 20x10, green at columns 4-15); the centre crop
    # (columns 5-14) keeps green only, away from the blended stripe edges
    assert (cache.images[0] == np.array((0, 255, 0), dtype=np.uint8)).all()
    assert (cache.images[1] == np.array((1, 2, 3), dtype=np.uint8)).all()


def test_explicit_size_equal_to_image_size_is_lossless(digits_folder, cache_dir):
    cache = load_or_build(manifest_of(digits_folder), cache_dir, image_size=8)
    np.testing.assert_array_equal(cache.images[0], np.repeat(digits_folder.pixels[0][:, :, None], 3, axis=2))


def test_resize_center_crop_shapes():
    image = Image.new("RGB", (30, 10))
    assert resize_center_crop(image, 5, 5).size == (5, 5)
    assert resize_center_crop(image, 20, 20).size == (20, 20)
    assert resize_center_crop(Image.new("RGB", (3, 7)), 4, 6).size == (6, 4)


# ---------------------------------------------------------------- why auto resized


def sized_folder(tmp_path, counts: dict[tuple[int, int], int]):
    """Writes counts[(width, height)] uniform PNGs of each size (first sizes first); returns the manifest."""
    images = {}
    for group, ((width, height), n) in enumerate(counts.items()):
        for i in range(n):
            images[f"{group}_{width}x{height}_{i}.png"] = Image.new("RGB", (width, height), (i * 30, 0, 0))
    return folder_with(tmp_path, images)


MIXED = {(8, 8): 3, (12, 10): 2, (20, 6): 1}  # all ≤ 64 px, but three sizes
MIXED_LINE = (
    "images resized to 16×16 px: they come in 3 sizes (3 at 8×8, 2 at 12×10, 1 at 20×6); choose another with "
    "--image-size"
)


def test_auto_resize_of_mixed_sizes_says_why_also_when_reused(tmp_path, cache_dir, monkeypatch):
    manifest = sized_folder(tmp_path, MIXED)
    built = load_or_build(manifest, cache_dir, fallback_size=16)
    assert built.images.shape == (6, 16, 16, 3)
    assert built.resized == MIXED_LINE
    forbid_decoding(monkeypatch)
    reused = load_or_build(manifest, cache_dir, fallback_size=16)
    assert reused.reused is True and reused.resized == MIXED_LINE


def test_auto_resize_of_mixed_sizes_led_by_a_large_image_says_why(tmp_path, cache_dir):
    manifest = sized_folder(tmp_path, {(90, 70): 1, (8, 8): 2})  # the first is over the limit: no first pass
    cache = load_or_build(manifest, cache_dir, fallback_size=16)
    assert cache.resized == (
        "images resized to 16×16 px: they come in 2 sizes (2 at 8×8, 1 at 90×70); choose another with --image-size"
    )


def test_auto_resize_of_large_images_of_one_size_says_why_also_when_reused(tmp_path, cache_dir, monkeypatch):
    manifest = sized_folder(tmp_path, {(80, 70): 2})
    expected = (
        "images resized to 16×16 px: they are 80×70, larger than the 64 px up to which images keep their size; "
        "choose another with --image-size"
    )
    assert load_or_build(manifest, cache_dir, fallback_size=16).resized == expected
    forbid_decoding(monkeypatch)
    assert load_or_build(manifest, cache_dir, fallback_size=16).resized == expected


def test_large_images_already_of_the_fallback_size_are_not_said_to_be_resized(tmp_path, cache_dir):
    cache = load_or_build(sized_folder(tmp_path, {(80, 80): 2}), cache_dir, fallback_size=80)
    assert cache.images.shape == (2, 80, 80, 3) and cache.resized is None


def test_images_of_one_small_size_keep_it_without_a_message(digits_folder, cache_dir):
    manifest = manifest_of(digits_folder)
    assert load_or_build(manifest, cache_dir, fallback_size=16).resized is None
    again = load_or_build(manifest, cache_dir, fallback_size=16)
    assert again.reused is True and again.resized is None


def test_an_explicit_size_resizes_without_a_message(tmp_path, cache_dir):
    cache = load_or_build(sized_folder(tmp_path, MIXED), cache_dir, image_size=10, fallback_size=16)
    assert cache.images.shape == (6, 10, 10, 3) and cache.resized is None


def test_resize_message_lists_three_sizes_most_common_first():
    sizes = Counter({(5, 5): 1, (80, 100): 150, (32, 32): 2700, (200, 300): 150})
    assert resize_message(sizes, (64, 64)) == (
        "images resized to 64×64 px: they come in 4 sizes (2,700 at 32×32, 150 at 300×200, 150 at 100×80, …); "
        "choose another with --image-size"
    )
    assert resize_message(Counter(), (64, 64)) is None  # no image decoded


def test_cache_written_before_resize_reasons_is_reused_without_one(tmp_path, cache_dir):
    manifest = sized_folder(tmp_path, MIXED)
    first = load_or_build(manifest, cache_dir, fallback_size=16)
    meta_path = first.path.with_suffix(".json")
    meta = json.loads(meta_path.read_text())
    del meta["resized"]
    meta_path.write_text(json.dumps(meta))
    again = load_or_build(manifest, cache_dir, fallback_size=16)
    assert again.reused is True and again.resized is None


def load_folder(root, csv, cache_dir, capsys, terminal: bool, image_size: int | None = None) -> str:
    """Runs load_dataset on `root`/`csv` and returns what its reporter printed (a terminal's bar, or stderr lines)."""
    from rich.console import Console

    from lnlclean.config import RunConfig
    from lnlclean.jobs.audit import load_dataset
    from lnlclean.progress import Reporter

    reporter = Reporter()
    if terminal:
        reporter.console = Console(file=io.StringIO(), force_terminal=True, width=200)
    load_dataset(root, csv, RunConfig(device="cpu", image_size=image_size), cache_dir, "skip", reporter)
    return reporter.console.file.getvalue() if terminal else capsys.readouterr().err


@pytest.mark.parametrize("terminal", [False, True], ids=["lines", "bar"])
def test_decoding_is_shown_only_when_images_are_decoded(digits_folder, cache_dir, capsys, terminal):
    first = load_folder(digits_folder.root, digits_folder.csv, cache_dir, capsys, terminal)
    assert "decoding 60 images" in first and "image cache built" in first
    second = load_folder(digits_folder.root, digits_folder.csv, cache_dir, capsys, terminal)
    assert "image cache reused" in second
    assert not re.search(r"\bdecoding\b", second)  # \b: the cache path holds this test's name


def test_load_dataset_says_once_why_images_were_resized(tmp_path, cache_dir, capsys):
    sized_folder(tmp_path, {(8, 8): 4, (12, 10): 2})
    root, csv = tmp_path / "imgs", tmp_path / "labels.csv"
    line = "images resized to 64×64 px: they come in 2 sizes (4 at 8×8, 2 at 12×10); choose another with --image-size"
    for run in ("built", "reused"):
        err = load_folder(root, csv, cache_dir, capsys, terminal=False)
        assert f"image cache {run}" in err
        assert err.splitlines().count(line) == 1
    assert "resized" not in load_folder(root, csv, cache_dir, capsys, terminal=False, image_size=16)


# ---------------------------------------------------------------- reuse and rebuild


def test_second_call_reuses_without_decoding(digits_folder, cache_dir, monkeypatch):
    manifest = manifest_of(digits_folder)
    first = load_or_build(manifest, cache_dir)
    snapshot = np.array(first.images)
    forbid_decoding(monkeypatch)
    second = load_or_build(manifest, cache_dir)
    assert second.reused is True
    assert second.path == first.path
    np.testing.assert_array_equal(np.asarray(second.images), snapshot)
    assert second.bad == first.bad


def test_size_setting_is_part_of_the_key(digits_folder, cache_dir):
    manifest = manifest_of(digits_folder)
    auto = load_or_build(manifest, cache_dir)
    explicit = load_or_build(manifest, cache_dir, image_size=4)
    assert explicit.reused is False
    assert explicit.path != auto.path
    assert explicit.images.shape[1:3] == (4, 4)


def test_mtime_change_triggers_rebuild(digits_folder, cache_dir):
    manifest = manifest_of(digits_folder)
    first = load_or_build(manifest, cache_dir)
    target = digits_folder.root / digits_folder.paths[0]
    stat = target.stat()
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    second = load_or_build(manifest, cache_dir)
    assert second.reused is False
    assert second.path != first.path


def test_modified_image_is_decoded_again(digits_folder, cache_dir):
    manifest = manifest_of(digits_folder)
    first = load_or_build(manifest, cache_dir)
    assert first.images[0].max() > 0
    target = digits_folder.root / digits_folder.paths[0]
    stat = target.stat()
    Image.new("L", (8, 8), 0).save(target)  # all black: content (and size) change
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    second = load_or_build(manifest, cache_dir)
    assert second.reused is False
    assert (second.images[0] == 0).all()
    np.testing.assert_array_equal(second.images[1:], first.images[1:])


def test_removed_row_changes_key(digits_folder, cache_dir):
    manifest = manifest_of(digits_folder)
    first = load_or_build(manifest, cache_dir)
    keep = np.ones(len(manifest), dtype=bool)
    keep[3] = False
    second = load_or_build(manifest.subset(keep), cache_dir)
    assert second.reused is False
    assert second.images.shape[0] == len(manifest) - 1
    np.testing.assert_array_equal(second.images[3], first.images[4])


def corrupt_cache(digits_folder, cache_dir, damage):
    manifest = manifest_of(digits_folder)
    first = load_or_build(manifest, cache_dir)
    expected = np.array(first.images)
    path = first.path
    del first
    damage(path, path.with_suffix(".json"))
    again = load_or_build(manifest, cache_dir)
    assert again.reused is False
    np.testing.assert_array_equal(np.asarray(again.images), expected)
    assert again.path == path


def test_garbage_array_file_is_rebuilt(digits_folder, cache_dir):
    corrupt_cache(digits_folder, cache_dir, lambda npy, meta: npy.write_bytes(b"not a numpy file" * 10))


def test_truncated_array_file_is_rebuilt(digits_folder, cache_dir):
    corrupt_cache(digits_folder, cache_dir, lambda npy, meta: npy.write_bytes(npy.read_bytes()[:300]))


def test_garbage_meta_file_is_rebuilt(digits_folder, cache_dir):
    corrupt_cache(digits_folder, cache_dir, lambda npy, meta: meta.write_text("{not json"))


def test_missing_meta_file_is_rebuilt(digits_folder, cache_dir):
    corrupt_cache(digits_folder, cache_dir, lambda npy, meta: meta.unlink())


def test_foreign_format_is_rebuilt(digits_folder, cache_dir):
    corrupt_cache(digits_folder, cache_dir, lambda npy, meta: meta.write_text(json.dumps({"format": 999, "bad": {}})))


def test_wrong_row_count_is_rebuilt(digits_folder, cache_dir):
    corrupt_cache(digits_folder, cache_dir, lambda npy, meta: np.save(npy, np.zeros((3, 8, 8, 3), np.uint8)))


def test_empty_array_file_is_rebuilt(digits_folder, cache_dir):
    corrupt_cache(digits_folder, cache_dir, lambda npy, meta: npy.write_bytes(b""))


def test_non_object_meta_file_is_rebuilt(digits_folder, cache_dir):
    corrupt_cache(digits_folder, cache_dir, lambda npy, meta: meta.write_text("[]"))


def test_non_text_resize_reason_is_rebuilt(digits_folder, cache_dir):
    def bad_reason(npy, meta):
        meta.write_text(json.dumps({**json.loads(meta.read_text()), "resized": 5}))

    corrupt_cache(digits_folder, cache_dir, bad_reason)


def test_unwritable_cache_dir_is_user_error(digits_folder, tmp_path):
    from lnlclean.errors import UserError

    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UserError, match="--cache-dir"):
        load_or_build(manifest_of(digits_folder), blocker / "sub")


# ---------------------------------------------------------------- bad images


def test_bad_images_are_reported_and_others_decode(digits_folder, cache_dir):
    root = digits_folder.root
    jpeg_row = next(i for i in range(len(digits_folder.paths)) if is_jpeg_row(i))
    png_row = 0
    jpeg_path = root / digits_folder.paths[jpeg_row]
    # a bigger JPEG so that truncation cuts into the scan data
    noise = np.random.default_rng(0).integers(0, 256, size=(8, 8), dtype=np.uint8)
    Image.fromarray(noise).save(jpeg_path, quality=95)
    jpeg_path.write_bytes(jpeg_path.read_bytes()[:-60])
    (root / digits_folder.paths[png_row]).write_text("this is not a png\n")
    manifest = manifest_of(digits_folder)
    cache = load_or_build(manifest, cache_dir, workers=2)
    assert set(cache.bad) == {png_row, jpeg_row}
    assert "not an image" in cache.bad[png_row]
    assert "cannot decode" in cache.bad[jpeg_row] or "truncated" in cache.bad[jpeg_row]
    assert (cache.images[png_row] == 0).all() and (cache.images[jpeg_row] == 0).all()
    # the other rows decode, and the size is still the images' own
    assert cache.images.shape == (len(manifest), 8, 8, 3)
    np.testing.assert_array_equal(cache.images[1], np.repeat(digits_folder.pixels[1][:, :, None], 3, axis=2))
    # the bad rows survive reuse
    again = load_or_build(manifest, cache_dir)
    assert again.reused is True and again.bad == cache.bad


def test_decode_image_raises_image_error(tmp_path):
    bogus = tmp_path / "x.png"
    bogus.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    with pytest.raises(ImageError):
        decode_image(bogus, (8, 8))
    text = tmp_path / "y.png"
    text.write_text("hello")
    with pytest.raises(ImageError, match="not an image"):
        decode_image(text, (8, 8))


# ---------------------------------------------------------------- colour modes


def decoded(tmp_path, image: Image.Image, name: str) -> np.ndarray:
    path = tmp_path / name
    image.save(path)
    out = decode_image(path, (image.height, image.width))
    assert out.dtype == np.uint8 and out.shape == (image.height, image.width, 3)
    return out


def test_grayscale_to_rgb(tmp_path):
    pixels = np.arange(16, dtype=np.uint8).reshape(4, 4) * 16
    out = decoded(tmp_path, Image.fromarray(pixels), "g.png")
    for c in range(3):
        np.testing.assert_array_equal(out[:, :, c], pixels)


def test_rgb_png_lossless(tmp_path):
    pixels = np.random.default_rng(1).integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    np.testing.assert_array_equal(decoded(tmp_path, Image.fromarray(pixels), "rgb.png"), pixels)


def test_cmyk_to_rgb(tmp_path):
    image = Image.new("CMYK", (4, 4), (0, 0, 0, 0))  # no ink: white
    image.paste((0, 0, 0, 255), (0, 0, 2, 4))  # full black ink on the left half
    out = decoded(tmp_path, image, "c.jpg")
    assert out[:, 2:].min() >= 240
    assert out[:, :2].max() <= 15


def test_cmyk_tiff_lossless(tmp_path):
    image = Image.new("CMYK", (3, 3), (255, 0, 0, 0))  # full cyan
    out = decoded(tmp_path, image, "c.tif")
    assert (out == np.array((0, 255, 255), dtype=np.uint8)).all()


def test_palette_to_rgb(tmp_path):
    image = Image.new("P", (4, 4), 0)
    image.putpalette([10, 20, 30, 200, 100, 50] + [0] * (256 * 3 - 6))
    image.paste(1, (0, 0, 4, 2))
    out = decoded(tmp_path, image, "p.png")
    assert (out[:2] == np.array((200, 100, 50), dtype=np.uint8)).all()
    assert (out[2:] == np.array((10, 20, 30), dtype=np.uint8)).all()


def test_palette_with_transparency_on_white(tmp_path):
    image = Image.new("P", (4, 4), 0)
    image.putpalette([10, 20, 30, 200, 100, 50] + [0] * (256 * 3 - 6))
    image.paste(1, (0, 0, 4, 2))
    image.info["transparency"] = 0
    path = tmp_path / "pt.png"
    image.save(path, transparency=0)
    out = decode_image(path, (4, 4))
    assert (out[:2] == np.array((200, 100, 50), dtype=np.uint8)).all()
    assert (out[2:] == 255).all()  # transparent index -> white background


def test_rgba_composited_on_white(tmp_path):
    pixels = np.zeros((4, 4, 4), dtype=np.uint8)
    pixels[:2] = (255, 0, 0, 255)  # opaque red
    pixels[2:] = (0, 0, 255, 0)  # fully transparent blue
    out = decoded(tmp_path, Image.fromarray(pixels), "rgba.png")
    assert (out[:2] == np.array((255, 0, 0), dtype=np.uint8)).all()
    assert (out[2:] == 255).all()


def test_half_transparent_black_is_mid_gray(tmp_path):
    pixels = np.zeros((2, 2, 4), dtype=np.uint8)
    pixels[..., 3] = 128
    out = decoded(tmp_path, Image.fromarray(pixels), "half.png")
    assert np.all(np.abs(out.astype(int) - 127) <= 2)


def test_la_to_rgb(tmp_path):
    image = Image.new("LA", (2, 2), (50, 255))
    out = decoded(tmp_path, image, "la.png")
    assert (out == 50).all()


def test_16bit_gray_white_becomes_255(tmp_path):
    image = Image.fromarray(np.full((4, 4), 65535, dtype=np.uint16))
    assert image.mode == "I;16"
    out = decoded(tmp_path, image, "w16.png")
    assert (out == 255).all()


def test_16bit_gray_is_scaled_by_bit_depth(tmp_path):
    values = np.array([[0, 257 * 64], [257 * 128, 65535]], dtype=np.uint16)
    out = decoded(tmp_path, Image.fromarray(values), "s16.png")
    np.testing.assert_array_equal(out[:, :, 0], np.array([[0, 64], [128, 255]], dtype=np.uint8))
    # a dark 16-bit image stays dark (scaled by 65535, not by its own maximum)
    dark = decoded(tmp_path, Image.fromarray(np.full((2, 2), 200, dtype=np.uint16)), "d16.png")
    assert (dark == 0).all()


def test_to_rgb_mode_i_and_f():
    wide = Image.fromarray(np.array([[0, 65535]], dtype=np.int32))
    assert wide.mode == "I"
    np.testing.assert_array_equal(np.asarray(to_rgb(wide))[0, :, 0], [0, 255])
    narrow = Image.fromarray(np.array([[0, 255]], dtype=np.int32))
    np.testing.assert_array_equal(np.asarray(to_rgb(narrow))[0, :, 0], [0, 255])
    floats = Image.fromarray(np.array([[-5.0, 100.0, 300.0]], dtype=np.float32))
    assert floats.mode == "F"
    np.testing.assert_array_equal(np.asarray(to_rgb(floats))[0, :, 0], [0, 100, 255])
    assert to_rgb(floats).mode == "RGB"


def test_mixed_modes_in_one_cache(tmp_path, cache_dir):
    images = {
        "gray.png": Image.new("L", (6, 6), 100),
        "rgba.png": Image.new("RGBA", (6, 6), (0, 0, 0, 0)),
        "cmyk.tif": Image.new("CMYK", (6, 6), (0, 0, 0, 0)),
        "w16.png": Image.fromarray(np.full((6, 6), 65535, dtype=np.uint16)),
    }
    cache = load_or_build(folder_with(tmp_path, images), cache_dir)
    assert cache.bad == {}
    assert cache.images.shape == (4, 6, 6, 3)
    assert (cache.images[0] == 100).all()
    assert (cache.images[1:] == 255).all()


def test_large_folder_decoded_by_worker_processes_matches_one_by_one_decoding(tmp_path, cache_dir):
    from lnlclean.data import decode

    rng = np.random.default_rng(0)
    images = {
        f"{i:05d}.png": Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8))
        for i in range(decode.PROCESS_MIN + 37)
    }
    images["broken.png"] = b"not a png"
    manifest = folder_with(tmp_path, images)
    cache = load_or_build(manifest, cache_dir, workers=2)
    expected = np.stack(
        [np.asarray(images[p]) if p != "broken.png" else np.zeros((6, 6, 3), np.uint8) for p in manifest.paths]
    )
    np.testing.assert_array_equal(cache.images, expected)
    assert list(cache.bad) == [manifest.paths.index("broken.png")]


def noisy_folder(tmp_path, n_images: int):
    """Returns (a manifest of `n_images` random 6×6 PNGs plus one broken file, the pixels expected in its rows)."""
    rng = np.random.default_rng(1)
    images = {f"{i:04d}.png": Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)) for i in range(n_images)}
    images["broken.png"] = b"not a png"
    manifest = folder_with(tmp_path, images)
    zeros = np.zeros((6, 6, 3), np.uint8)
    return manifest, np.stack([zeros if p == "broken.png" else np.asarray(images[p]) for p in manifest.paths])


def forbid_memory_maps(monkeypatch):
    """Makes any memory map of a .npy file fail, here and in forked workers."""

    def no_map(*args, **kwargs):
        raise AssertionError("a file was memory-mapped")

    monkeypatch.setattr(np, "memmap", no_map)


@pytest.mark.parametrize("pool", ["process", "thread"])
def test_cache_round_trips_through_both_pools_without_memory_maps(tmp_path, cache_dir, monkeypatch, pool):
    from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

    from lnlclean.data import decode

    manifest, expected = noisy_folder(tmp_path, 150)
    used = []
    original_pool = decode._pool
    monkeypatch.setattr(decode, "PROCESS_MIN", 10 if pool == "process" else 10**9)
    monkeypatch.setattr(decode, "_pool", lambda workers, n: used.append(original_pool(workers, n)) or used[-1])
    monkeypatch.setattr(decode, "CHUNK", 40)  # several tasks
    monkeypatch.setattr(decode, "WRITE_BYTES", 7 * 6 * 6 * 3)  # several writes per task, the last one short
    forbid_memory_maps(monkeypatch)
    progress = []
    cache = load_or_build(manifest, cache_dir, workers=2, advance=progress.append)
    assert isinstance(used[0], ProcessPoolExecutor if pool == "process" else ThreadPoolExecutor)
    assert isinstance(cache.images, ImageArray)
    np.testing.assert_array_equal(np.asarray(cache.images), expected)
    assert list(cache.bad) == [manifest.paths.index("broken.png")]
    assert "not an image" in cache.bad[manifest.paths.index("broken.png")]
    assert sum(progress) == len(manifest) and len(progress) == 4
    again = load_or_build(manifest, cache_dir)
    assert again.reused and isinstance(again.images, ImageArray)
    np.testing.assert_array_equal(np.asarray(again.images), expected)


def test_skipping_bad_rows_is_a_subset_that_reads_nothing(tmp_path, cache_dir):
    manifest, expected = noisy_folder(tmp_path, 20)
    cache = load_or_build(manifest, cache_dir)
    keep = np.ones(len(manifest), dtype=bool)
    keep[list(cache.bad)] = False
    kept = cache.images.subset(keep)
    assert isinstance(kept, ImageArray) and kept.shape == (20, 6, 6, 3)
    np.testing.assert_array_equal(np.asarray(kept), expected[keep])
    np.testing.assert_array_equal(kept[[19, 0]], expected[keep][[19, 0]])


def test_interrupted_decoding_leaves_no_cache(tmp_path, cache_dir, monkeypatch):
    from lnlclean.data import decode

    manifest, _ = noisy_folder(tmp_path, 30)

    def interrupt(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(decode, "write_rows", interrupt)
    with pytest.raises(KeyboardInterrupt):
        load_or_build(manifest, cache_dir, workers=1)
    assert list(cache_dir.iterdir()) == []


def test_pillow_problems_become_image_errors_without_warnings(tmp_path):
    import io
    import warnings

    from lnlclean.data.decode import ImageError, decode_image, image_size

    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 10, 10)).save(buffer, format="TIFF")
    truncated = tmp_path / "truncated.tif"
    truncated.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    bad_header = tmp_path / "bad.ppm"
    bad_header.write_bytes(b"P6\n" + b"9" * 5000)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ImageError):
            decode_image(truncated, (64, 64))
        with pytest.raises(ImageError):
            image_size(bad_header)
        with pytest.raises(ImageError, match="not found"):
            image_size(tmp_path / "gone.png")
    assert caught == []
