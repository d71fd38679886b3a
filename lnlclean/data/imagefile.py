"""Image arrays in ``.npy`` files, created, written and read a block of rows at a time with
positioned I/O (``pwrite``, ``pread``) instead of a memory map.

Pages of a memory map that a process touches count in its resident set, so reading a whole
cache through one over an epoch grows the process to the size of the cache. Rows read with
``pread`` pass through the kernel's page cache, which the kernel reclaims as it needs, and the
process only holds the rows it asked for.
"""

from __future__ import annotations

import copy
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_HAS_PREADV = hasattr(os, "preadv")
_HAS_PREAD = hasattr(os, "pread")
_HAS_PWRITE = hasattr(os, "pwrite")


@dataclass(frozen=True)
class NpyLayout:
    """Where the array of a ``.npy`` file lies.

    Attributes:
        shape: the array's shape (C order).
        dtype: its element type.
        offset: byte offset of the first element (the size of the header).
    """

    shape: tuple[int, ...]
    dtype: np.dtype
    offset: int

    @property
    def row_bytes(self) -> int:
        """Returns the bytes of one row (one index along the first axis)."""
        return int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize

    @property
    def nbytes(self) -> int:
        """Returns the bytes of the whole array."""
        return self.shape[0] * self.row_bytes


def read_npy_layout(path: str | os.PathLike) -> NpyLayout:
    """Returns the shape, dtype and data offset of the ``.npy`` file at `path`.

    Raises ValueError (or EOFError) when the file is not a C-order ``.npy`` file of at least one
    dimension with a fixed-size dtype, or is shorter than its header announces.
    """
    with open(path, "rb") as handle:
        version = np.lib.format.read_magic(handle)
        if version == (1, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(handle)
        elif version == (2, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(handle)
        else:
            raise ValueError(f"{path}: .npy format version {version} is not supported")
        layout = NpyLayout(tuple(int(n) for n in shape), np.dtype(dtype), handle.tell())
        file_size = os.fstat(handle.fileno()).st_size
    if fortran_order or not layout.shape or layout.dtype.hasobject:
        raise ValueError(f"{path}: expected a C-order array of fixed-size elements with at least one dimension")
    if file_size < layout.offset + layout.nbytes:
        raise ValueError(f"{path}: {file_size} bytes, shorter than its {layout.shape} array")
    return layout


class ImageArray:
    """A read-only array backed by a ``.npy`` file, read with ``os.pread`` rather than mapped.

    Behaves enough like ``np.ndarray`` for reading: ``len``, ``shape``, ``dtype``, ``ndim``,
    ``size``, ``nbytes``, indexing (an int, a slice, an int array or list, a boolean mask,
    optionally followed by indices into each row) and ``np.asarray`` (which reads everything).
    Every read returns a fresh ``np.ndarray``. Runs of consecutive rows are read with one
    system call. :meth:`subset` restricts the rows without reading any pixels. The file is
    opened on first read; a pickled array carries only its path and rows.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.layout = read_npy_layout(self.path)
        self._rows: np.ndarray | None = None  # file row of each row of this array; None is all of them
        self._fd: int | None = None
        self._lock = threading.Lock()

    @property
    def shape(self) -> tuple[int, ...]:
        """Returns the shape: the number of rows, then the file's row shape."""
        n_rows = self.layout.shape[0] if self._rows is None else len(self._rows)
        return (n_rows, *self.layout.shape[1:])

    @property
    def dtype(self) -> np.dtype:
        """Returns the element type."""
        return self.layout.dtype

    @property
    def ndim(self) -> int:
        """Returns the number of dimensions."""
        return len(self.layout.shape)

    @property
    def size(self) -> int:
        """Returns the number of elements."""
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        """Returns the bytes the rows of this array take (what ``np.asarray`` would allocate)."""
        return len(self) * self.layout.row_bytes

    def __len__(self) -> int:
        """Returns the number of rows."""
        return self.shape[0]

    def __repr__(self) -> str:
        return f"ImageArray({str(self.path)!r}, shape={self.shape}, dtype={self.dtype})"

    def __getitem__(self, key) -> np.ndarray:
        """Returns the rows (and the parts of them) that `key` selects, as numpy indexing would, in a new array."""
        first, rest = (key[0], key[1:]) if isinstance(key, tuple) and key else (key, ())
        if first is Ellipsis or first is None:
            return np.asarray(self)[key]
        if isinstance(first, (int, np.integer)) and not isinstance(first, bool):
            block = self._read(self._file_rows(np.array([_in_range(int(first), len(self))], dtype=np.int64)))
            return block[(0, *rest)]
        if isinstance(first, slice):
            block = self._read(self._file_rows(np.arange(*first.indices(len(self)), dtype=np.int64)))
            return block[(slice(None), *rest)] if rest else block
        positions = _positions(first, len(self))
        if positions is None:
            return np.asarray(self)[key]
        block = self._read(self._file_rows(positions.reshape(-1)))
        if not rest:
            return block.reshape(positions.shape + block.shape[1:])
        return block[(np.arange(len(block)).reshape(positions.shape), *rest)]

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        """Returns every row in a new array (of `dtype` when given); raises ValueError when asked not to copy."""
        if copy is False:
            raise ValueError("an ImageArray is read from disk, so converting it always copies")
        block = self._read(self._file_rows(np.arange(len(self), dtype=np.int64)))
        return block if dtype is None else block.astype(dtype, copy=False)

    def subset(self, rows) -> ImageArray:
        """Returns an ImageArray of the rows `rows` (an int array or list,
        or a boolean mask of length ``len(self)``) without reading them.
        """
        positions = _positions(rows, len(self))
        if positions is None or positions.ndim != 1:
            raise IndexError("subset takes a 1-d int array or list, or a boolean mask of the rows")
        view = copy.copy(self)
        view._rows = self._file_rows(positions)
        return view

    def close(self) -> None:
        """Closes the file (it is opened again on the next read). Returns None."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def __del__(self):
        try:
            self.close()
        except (OSError, AttributeError, TypeError):
            pass

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_fd"] = None
        del state["_lock"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def _file_rows(self, positions: np.ndarray) -> np.ndarray:
        """Returns the file row of each of this array's row numbers `positions` (already in range)."""
        return positions if self._rows is None else self._rows[positions]

    def _read(self, file_rows: np.ndarray) -> np.ndarray:
        """Returns the file rows `file_rows` (any order, repeats allowed) as a new array."""
        if len(file_rows) > 1 and not (np.diff(file_rows) > 0).all():
            unique, inverse = np.unique(file_rows, return_inverse=True)
            return self._read_increasing(unique)[inverse]
        return self._read_increasing(file_rows)

    def _read_increasing(self, file_rows: np.ndarray) -> np.ndarray:
        """Returns the strictly increasing file rows `file_rows`, one read per run of consecutive rows."""
        out = np.empty((len(file_rows), *self.layout.shape[1:]), dtype=self.dtype)
        if out.nbytes == 0:
            return out
        flat = memoryview(out.reshape(-1).view(np.uint8))
        row_bytes, fd = self.layout.row_bytes, self._open()
        starts = np.concatenate(([0], np.flatnonzero(np.diff(file_rows) != 1) + 1))
        ends = np.append(starts[1:], len(file_rows))
        for start, end in zip(starts.tolist(), ends.tolist()):
            offset = self.layout.offset + int(file_rows[start]) * row_bytes
            self._read_into(fd, flat[start * row_bytes : end * row_bytes], offset)
        return out

    def _open(self) -> int:
        """Returns the open file descriptor, opening the file on first use."""
        with self._lock:
            if self._fd is None:
                self._fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
            return self._fd

    def _read_into(self, fd: int, target: memoryview, offset: int) -> None:
        """Fills `target` with the file's bytes from `offset`. Returns None; raises EOFError at a premature end."""
        done = 0
        while done < len(target):
            got = self._read_at(fd, target[done:], offset + done)
            if got == 0:
                raise EOFError(f"{self.path}: ended before byte {offset + len(target)}")
            done += got

    def _read_at(self, fd: int, target: memoryview, offset: int) -> int:
        """Reads up to len(`target`) bytes at `offset` into `target`. Returns how many were read."""
        if _HAS_PREADV:
            return os.preadv(fd, [target], offset)
        if _HAS_PREAD:
            data = os.pread(fd, len(target), offset)
        else:
            with self._lock:
                os.lseek(fd, offset, os.SEEK_SET)
                data = os.read(fd, len(target))
        target[: len(data)] = data
        return len(data)


def allocate_npy(path: Path, shape: tuple[int, ...], dtype: np.dtype) -> None:
    """Writes a ``.npy`` header for a C-order `shape` array of `dtype` to `path` and extends
    the file to its full size (zeros, sparse where the file system allows). Returns None.
    """
    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": tuple(shape)}
    with open(path, "wb") as handle:
        np.lib.format.write_array_header_1_0(handle, header)
        handle.truncate(handle.tell() + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize)


def write_rows(fd: int, layout: NpyLayout, first_row: int, rows: np.ndarray) -> None:
    """Writes `rows` (of the file's row shape) into the open
    ``.npy`` file `fd` from row `first_row` on. Returns None.
    """
    data = memoryview(np.ascontiguousarray(rows, dtype=layout.dtype).reshape(-1).view(np.uint8))
    offset = layout.offset + first_row * layout.row_bytes
    done = 0
    while done < len(data):
        done += _write_at(fd, data[done:], offset + done)


def _write_at(fd: int, data: memoryview, offset: int) -> int:
    """Writes `data` at byte `offset` of `fd`. Returns how many bytes were written."""
    if _HAS_PWRITE:
        return os.pwrite(fd, data, offset)
    os.lseek(fd, offset, os.SEEK_SET)  # no pwrite (Windows): this task's own descriptor, so no race
    return os.write(fd, data)


def _in_range(position: int, n_rows: int) -> int:
    """Returns `position` (negative counts from the end) as a row number; raises IndexError outside 0…n_rows-1."""
    if not -n_rows <= position < n_rows:
        raise IndexError(f"index {position} is out of bounds for {n_rows} rows")
    return position % n_rows


def _positions(key, n_rows: int) -> np.ndarray | None:
    """Returns the row numbers (int64, non-negative) that an int array, list or 1-d boolean mask `key` selects.

    Returns None for a key of another kind (a multi-dimensional mask); raises IndexError for
    an out-of-range index or a mask of the wrong length.
    """
    index = np.asarray(key)
    if index.dtype == bool:
        if index.ndim != 1:
            return None
        if len(index) != n_rows:
            raise IndexError(f"boolean index of length {len(index)} does not match {n_rows} rows")
        return np.flatnonzero(index)
    if index.size == 0:
        return index.astype(np.int64)
    if not np.issubdtype(index.dtype, np.integer):
        raise IndexError(f"rows must be integers or a boolean mask, not {index.dtype}")
    index = index.astype(np.int64)
    if index.min() < -n_rows or index.max() >= n_rows:
        raise IndexError(f"index out of bounds for {n_rows} rows")
    return np.where(index < 0, index + n_rows, index)
