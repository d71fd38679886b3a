"""ImageArray (positioned reads of a .npy file) and ImageStore (batches by sample index)."""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lnlclean.data.imagefile import ImageArray, read_npy_layout
from lnlclean.data.store import ImageStore, copy_in_chunks


@pytest.fixture
def saved(tmp_path) -> tuple[np.ndarray, ImageArray]:
    """Returns (a random uint8 50×4×5×3 array, an ImageArray of the .npy file it was saved to)."""
    expected = np.random.default_rng(0).integers(0, 256, (50, 4, 5, 3), dtype=np.uint8)
    np.save(tmp_path / "images.npy", expected)
    return expected, ImageArray(tmp_path / "images.npy")


def counting_reads(monkeypatch) -> list[int]:
    """Counts the positioned reads ImageArray makes; returns the list their sizes are appended to."""
    sizes = []
    original = ImageArray._read_at

    def read_at(self, fd, target, offset):
        sizes.append(len(target))
        return original(self, fd, target, offset)

    monkeypatch.setattr(ImageArray, "_read_at", read_at)
    return sizes


# ---------------------------------------------------------------- reading like an ndarray


def test_attributes_match_the_file(saved):
    expected, images = saved
    assert len(images) == 50
    assert images.shape == expected.shape and images.dtype == expected.dtype
    assert images.ndim == 4 and images.size == expected.size and images.nbytes == expected.nbytes


@pytest.mark.parametrize("key", [0, 7, 49, -1, -50, np.int64(3), np.int32(-2)])
def test_int_index_reads_one_row(saved, key):
    expected, images = saved
    row = images[key]
    assert isinstance(row, np.ndarray) and row.shape == (4, 5, 3)
    np.testing.assert_array_equal(row, expected[key])


@pytest.mark.parametrize("key", [50, -51, 10**9])
def test_int_index_out_of_range_raises(saved, key):
    with pytest.raises(IndexError):
        saved[1][key]


@pytest.mark.parametrize(
    "key",
    [
        slice(None),
        slice(3, 17),
        slice(None, None, 3),
        slice(-5, None),
        slice(10, 2),
        slice(None, None, -2),
        slice(40, 99),
    ],
)
def test_slice_reads_rows(saved, key):
    expected, images = saved
    np.testing.assert_array_equal(images[key], expected[key])
    assert images[key].shape == expected[key].shape


@pytest.mark.parametrize(
    "key",
    [
        [0, 1, 2, 10, 11, 49],
        [30, 2, 17, 2, 5],
        [4, 4, 4],
        [-1, 0, -50],
        [],
        np.array([[1, 2], [3, 1]]),
    ],
)
def test_int_arrays_and_lists_read_rows_in_their_order(saved, key):
    expected, images = saved
    for as_given in (key, np.asarray(key, dtype=np.int64)):
        out = images[as_given]
        np.testing.assert_array_equal(out, expected[np.asarray(key, dtype=np.int64)])
        assert out.shape == expected[np.asarray(key, dtype=np.int64)].shape


def test_out_of_range_or_float_index_arrays_raise(saved):
    images = saved[1]
    with pytest.raises(IndexError):
        images[[0, 50]]
    with pytest.raises(IndexError):
        images[[-51]]
    with pytest.raises(IndexError):
        images[np.array([0.0, 1.0])]


def test_boolean_mask_reads_selected_rows(saved):
    expected, images = saved
    mask = np.random.default_rng(1).random(50) < 0.4
    np.testing.assert_array_equal(images[mask], expected[mask])
    np.testing.assert_array_equal(images[list(mask)], expected[mask])
    with pytest.raises(IndexError):
        images[mask[:-1]]


@pytest.mark.parametrize(
    "key",
    [
        (3, slice(None), slice(None), 0),
        (slice(None), 0, 0, 0),
        ([3, 1], 2),
        (np.array([5, 0, 5]), slice(1, 3), 0),
        (slice(2, 9, 2), Ellipsis, 1),
        (Ellipsis, 2),
        (4, [0, 1], [2, 3]),
        ([1, 2], [0, 1]),
    ],
)
def test_tuple_keys_index_within_rows_as_numpy_does(saved, key):
    expected, images = saved
    np.testing.assert_array_equal(images[key], expected[key])
    assert np.shape(images[key]) == np.shape(expected[key])


def test_asarray_reads_everything(saved):
    expected, images = saved
    np.testing.assert_array_equal(np.asarray(images), expected)
    as_float = np.asarray(images, dtype=np.float32)
    assert as_float.dtype == np.float32
    np.testing.assert_array_equal(as_float, expected.astype(np.float32))


def test_reads_return_fresh_arrays(saved):
    images = saved[1]
    first = images[[1, 2]]
    first[:] = 0
    assert images[[1, 2]].any()


def test_consecutive_rows_are_read_with_one_call(saved, monkeypatch):
    expected, images = saved
    sizes = counting_reads(monkeypatch)
    np.testing.assert_array_equal(images[[0, 1, 2, 3, 10, 11, 20]], expected[[0, 1, 2, 3, 10, 11, 20]])
    row = 4 * 5 * 3
    assert sizes == [4 * row, 2 * row, row]
    sizes.clear()
    np.testing.assert_array_equal(images[[11, 10, 3, 2, 1, 0, 20, 0]], expected[[11, 10, 3, 2, 1, 0, 20, 0]])
    assert sorted(sizes) == [row, 2 * row, 4 * row]
    sizes.clear()
    np.asarray(images)
    assert sizes == [expected.nbytes]


def test_other_dtypes_and_shapes(tmp_path):
    expected = np.arange(7 * 3, dtype=np.float64).reshape(7, 3) / 7
    np.save(tmp_path / "f.npy", expected)
    images = ImageArray(tmp_path / "f.npy")
    np.testing.assert_array_equal(images[[6, 0, 2]], expected[[6, 0, 2]])
    np.testing.assert_array_equal(images[2:5, 1], expected[2:5, 1])
    flat = np.arange(10, dtype=np.int16)
    np.save(tmp_path / "v.npy", flat)
    np.testing.assert_array_equal(ImageArray(tmp_path / "v.npy")[[9, 1]], flat[[9, 1]])


def test_format_version_2_header(tmp_path):
    expected = np.arange(24, dtype=np.uint8).reshape(4, 2, 3)
    with open(tmp_path / "v2.npy", "wb") as handle:
        np.lib.format.write_array(handle, expected, version=(2, 0))
    np.testing.assert_array_equal(np.asarray(ImageArray(tmp_path / "v2.npy")), expected)


# ---------------------------------------------------------------- subsets and pickling


def test_subset_of_subset(saved, monkeypatch):
    expected, images = saved
    sizes = counting_reads(monkeypatch)
    keep = np.ones(50, dtype=bool)
    keep[[0, 7, 8, 30]] = False
    first = images.subset(keep)
    second = first.subset([40, 3, 3, 0, 45])
    assert sizes == []  # nothing is read until rows are asked for
    np.testing.assert_array_equal(np.asarray(first), expected[keep])
    assert first.shape == (46, 4, 5, 3) and len(first) == 46 and first.nbytes == expected[keep].nbytes
    np.testing.assert_array_equal(np.asarray(second), expected[keep][[40, 3, 3, 0, 45]])
    np.testing.assert_array_equal(second[1:3], expected[keep][[3, 3]])
    np.testing.assert_array_equal(second[-1], expected[keep][45])
    np.testing.assert_array_equal(second[np.array([True, False, False, True, True])], expected[keep][[40, 0, 45]])
    np.testing.assert_array_equal(images[:], expected)  # the original is untouched


def test_subset_rejects_bad_rows(saved):
    images = saved[1]
    with pytest.raises(IndexError):
        images.subset([0, 50])
    with pytest.raises(IndexError):
        images.subset(np.ones(49, dtype=bool))
    with pytest.raises(IndexError):
        images.subset(np.ones((50, 1), dtype=bool))


def test_pickle_round_trip_reopens_the_file(saved):
    expected, images = saved
    images[0]  # the file is open now
    subset = images.subset([9, 2, 5])
    for original, rows in ((images, slice(None)), (subset, [9, 2, 5])):
        restored = pickle.loads(pickle.dumps(original))
        assert restored.shape == original.shape
        np.testing.assert_array_equal(np.asarray(restored), expected[rows])


def test_close_then_read_reopens(saved):
    expected, images = saved
    images[0]
    images.close()
    np.testing.assert_array_equal(images[3], expected[3])


# ---------------------------------------------------------------- files that are not valid arrays


def test_truncated_file_is_refused(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros((10, 8, 8, 3), np.uint8))
    data = (tmp_path / "a.npy").read_bytes()
    (tmp_path / "a.npy").write_bytes(data[:-1])
    with pytest.raises(ValueError, match="shorter"):
        ImageArray(tmp_path / "a.npy")


@pytest.mark.parametrize("content", [b"", b"not a numpy file" * 10])
def test_garbage_file_is_refused(tmp_path, content):
    (tmp_path / "g.npy").write_bytes(content)
    with pytest.raises((ValueError, EOFError)):
        ImageArray(tmp_path / "g.npy")


def test_fortran_order_and_scalars_are_refused(tmp_path):
    np.save(tmp_path / "f.npy", np.asfortranarray(np.zeros((3, 4), np.uint8)))
    np.save(tmp_path / "s.npy", np.uint8(3))
    for name in ("f.npy", "s.npy"):
        with pytest.raises(ValueError):
            read_npy_layout(tmp_path / name)


# ---------------------------------------------------------------- ImageStore


def test_store_gathers_rows_of_an_image_array_and_an_ndarray(saved):
    expected, images = saved
    index = torch.tensor([0, 3, 4, 5, 20, 49])
    for source in (images, expected, images.subset(np.arange(50))):
        store = ImageStore(source, torch.device("cpu"))
        batch = store.gather(index)
        assert len(store) == 50
        assert batch.dtype == torch.uint8 and batch.shape == (6, 4, 5, 3)
        np.testing.assert_array_equal(batch.numpy(), expected[index.numpy()])


class RecordingArray:
    """An ndarray wrapper that records the keys it is indexed with."""

    def __init__(self, array: np.ndarray):
        self.array, self.keys = array, []
        self.shape, self.nbytes = array.shape, array.nbytes

    def __len__(self):
        return len(self.array)

    def __getitem__(self, key):
        self.keys.append(key)
        return self.array[key]

    def __array__(self, *args, **kwargs):
        raise AssertionError("the whole array was materialised on the host")


def test_resident_copy_is_filled_chunk_by_chunk(saved):
    expected = saved[0]
    recording = RecordingArray(expected)
    row = expected[0].nbytes
    resident = copy_in_chunks(recording, torch.device("cpu"), chunk_bytes=7 * row + 1)
    np.testing.assert_array_equal(resident.numpy(), expected)
    assert [len(range(*key.indices(50))) for key in recording.keys] == [7] * 7 + [1]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_store_holds_an_image_array_on_the_gpu(saved):
    expected, images = saved
    store = ImageStore(images, torch.device("cuda"))
    assert store.resident is not None and store.resident.is_cuda
    index = torch.tensor([1, 2, 30])
    np.testing.assert_array_equal(store.gather(index).cpu().numpy(), expected[[1, 2, 30]])


# ---------------------------------------------------------------- memory


def rss_kb() -> dict[str, int]:
    """Returns VmRSS, RssAnon and RssFile of this process in kB."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "RssAnon", "RssFile"):
            fields[name] = int(value.split()[0])
    return fields


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or not Path("/proc/self/status").exists(), reason="reads /proc"
)
def test_reading_every_row_leaves_resident_memory_flat_unlike_a_memory_map(tmp_path):
    rows, row_shape = 1024, (128, 128, 4)  # 64 MiB
    path = tmp_path / "big.npy"
    pattern = np.arange(np.prod(row_shape), dtype=np.uint8).reshape(row_shape)
    with open(path, "wb") as handle:
        np.lib.format.write_array_header_1_0(
            handle, {"descr": "|u1", "fortran_order": False, "shape": (rows, *row_shape)}
        )
        for _ in range(rows):
            handle.write(pattern.tobytes())
    images = ImageArray(path)
    before = rss_kb()
    checked = 0
    for start in range(0, rows, 64):
        batch = images[np.arange(start, start + 64)]
        checked += int((batch[:, 0, 1] == pattern[0, 1]).all())
    after = rss_kb()
    assert checked == rows // 64
    assert after["RssFile"] - before["RssFile"] < 8 * 1024
    assert after["VmRSS"] - before["VmRSS"] < 32 * 1024
    mapped = np.load(path, mmap_mode="r")
    for start in range(0, rows, 64):
        int(mapped[start : start + 64].sum(dtype=np.uint64))
    grown = rss_kb()["RssFile"] - after["RssFile"]
    assert grown > 48 * 1024  # the same reads through a memory map stay resident
