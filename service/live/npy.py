"""An append-only ``.npy`` file: rows are appended and flushed, and the file is a valid ``.npy`` at all times.

The header is written with a fixed length (128 bytes) and rewritten in place after each append, so
``np.load(path, mmap_mode="r")`` reads every row appended so far, even while the service is running or after
it crashed. :meth:`AppendNpy.open` truncates rows beyond a given count (a restart after a crash mid-append).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

__all__ = ["AppendNpy"]

_HEADER_LEN = 128  # magic (6) + version (2) + length (2) + dict padded with spaces and '\n'


def _header(dtype: np.dtype, rows: int, row_shape: tuple[int, ...]) -> bytes:
    shape = (rows, *row_shape)
    text = f"{{'descr': {dtype.str!r}, 'fortran_order': False, 'shape': {shape!r}, }}"
    body_len = _HEADER_LEN - 10
    if len(text) + 1 > body_len:  # pragma: no cover - only for absurd shapes
        raise ValueError(f"npy header for shape {shape} does not fit in {_HEADER_LEN} bytes")
    text = text.ljust(body_len - 1) + "\n"
    return b"\x93NUMPY\x01\x00" + body_len.to_bytes(2, "little") + text.encode("latin1")


class AppendNpy:
    """Rows of shape ``row_shape`` and type ``dtype`` appended to ``path``.

    Attributes
    ----------
    rows : int
        Rows in the file.
    """

    def __init__(self, path: str | Path, row_shape: tuple[int, ...], dtype: str = "<f4") -> None:
        self.path = Path(path)
        self.row_shape = tuple(int(s) for s in row_shape)
        self.dtype = np.dtype(dtype)
        self.row_bytes = int(np.prod(self.row_shape)) * self.dtype.itemsize
        self.rows = 0
        self._f = None

    def open(self, keep_rows: int | None = None) -> AppendNpy:
        """Open (create if absent); an existing file keeps ``keep_rows`` rows (default: all complete rows)."""
        if self.path.exists() and self.path.stat().st_size >= _HEADER_LEN:
            with open(self.path, "rb") as f:
                np.lib.format.read_magic(f)
                shape, _, dtype = np.lib.format.read_array_header_1_0(f)
                if f.tell() != _HEADER_LEN or tuple(shape[1:]) != self.row_shape or dtype != self.dtype:
                    raise ValueError(
                        f"{self.path} holds {dtype} rows of shape {tuple(shape[1:])}, expected {self.dtype} "
                        f"{self.row_shape}; it was written by another run configuration"
                    )
            on_disk = (self.path.stat().st_size - _HEADER_LEN) // self.row_bytes
            self.rows = min(on_disk, shape[0]) if keep_rows is None else min(on_disk, keep_rows)
            self._f = open(self.path, "r+b")  # noqa: SIM115 - closed in close()
            self._f.truncate(_HEADER_LEN + self.rows * self.row_bytes)
        else:
            self._f = open(self.path, "w+b")  # noqa: SIM115
            self.rows = 0
        self._write_header()
        self._f.seek(0, os.SEEK_END)
        return self

    def _write_header(self) -> None:
        self._f.seek(0)
        self._f.write(_header(self.dtype, self.rows, self.row_shape))

    def append(self, row: np.ndarray) -> int:
        """Append one row; returns its index. The data and the header are flushed before returning."""
        arr = np.ascontiguousarray(row, dtype=self.dtype)
        if arr.shape != self.row_shape:
            raise ValueError(f"{self.path}: row of shape {arr.shape}, expected {self.row_shape}")
        self._f.seek(_HEADER_LEN + self.rows * self.row_bytes)
        self._f.write(arr.tobytes())
        self.rows += 1
        self._write_header()
        self._f.flush()
        return self.rows - 1

    def read(self) -> np.ndarray:
        """All rows so far (a copy)."""
        self._f.flush()
        return np.load(self.path)

    def close(self) -> None:
        """Flush and close the file (idempotent)."""
        if self._f is not None:
            self._f.flush()
            self._f.close()
            self._f = None
