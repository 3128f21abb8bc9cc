"""Reading and preprocessing image files and attribute tables for :mod:`offline.datasets`."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from service.framing import frame_image

__all__ = [
    "DataError",
    "CorruptImageWarning",
    "list_images",
    "preprocess",
    "load_images",
    "read_celeba_attributes",
    "read_attribute_csv",
    "IMAGE_SUFFIXES",
]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


class DataError(ValueError):
    """A data source that cannot be used (missing, empty or unreadable folder, bad table); names the path."""

    user_error = True


class CorruptImageWarning(UserWarning):
    """An image file that could not be decoded was skipped (warned once per source, then counted)."""


def list_images(root: Path, recursive: bool = True) -> list[Path]:
    """Image files below ``root`` in sorted order; :class:`DataError` when there are none or it is unreadable."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist or is not a folder")
    try:
        found = root.rglob("*") if recursive else root.iterdir()
        files = sorted(p for p in found if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    except PermissionError as exc:
        raise DataError(f"image folder {root} cannot be read: {exc}") from None
    if not files:
        raise DataError(f"image folder {root} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return files


def preprocess(image, size: int, crop: bool = True) -> np.ndarray:
    """The paper's preprocessing (docs/paper.md) of a PIL image: central square crop, keep the central 80%, resize.

    Returns ``uint8 [size, size, 3]``. With ``crop=False`` the image is only resized (already framed faces,
    e.g. procedural ones written by ``fmriface faces``).
    """
    return frame_image(image, size, "central-80" if crop else "resize")


def _load_one(path: Path, size: int, crop: bool) -> tuple[np.ndarray | None, str]:
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.load()
            return preprocess(img, size, crop), ""
    except Exception as exc:  # noqa: BLE001 - PIL raises many kinds for corrupt files
        return None, f"{type(exc).__name__}: {exc}"


def load_images(
    paths: list[Path], size: int, crop: bool = True, threads: int = 4
) -> list[tuple[np.ndarray | None, str]]:
    """Decode and preprocess ``paths`` (threads: PIL releases the GIL); ``(None, reason)`` for unreadable ones."""
    if len(paths) <= 2 or threads <= 1:
        return [_load_one(p, size, crop) for p in paths]
    with ThreadPoolExecutor(min(threads, len(paths))) as pool:
        return list(pool.map(lambda p: _load_one(p, size, crop), paths))


def read_celeba_attributes(path: Path, files: list[Path]) -> tuple[tuple[str, ...], np.ndarray]:
    """``list_attr_celeba.txt`` (count line, names line, then ``name v1 v2 ...``) aligned with ``files``.

    Files missing from the table get 0 (unknown) for every attribute.
    """
    try:
        lines = Path(path).read_text().splitlines()
        names = tuple(lines[1].split())
        table = {}
        for line in lines[2:]:
            parts = line.split()
            if parts:
                table[parts[0]] = np.array([int(v) for v in parts[1:]], dtype=np.int8)
    except (OSError, IndexError, ValueError) as exc:
        raise DataError(f"CelebA attribute file {path} cannot be parsed: {exc}") from None
    if not table or any(len(v) != len(names) for v in table.values()):
        raise DataError(f"CelebA attribute file {path}: rows do not have {len(names)} values each")
    zero = np.zeros(len(names), np.int8)
    return names, np.stack([table.get(f.name, zero) for f in files])


def read_attribute_csv(path: Path, files: list[Path]) -> tuple[tuple[str, ...], np.ndarray]:
    """An ``attributes.csv`` (``image_id`` then one 1/-1 column per attribute) aligned with ``files`` by name."""
    import csv

    try:
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
        header = rows[0]
        if not header or header[0] != "image_id":
            raise ValueError("the first column must be image_id")
        names = tuple(header[1:])
        table = {}
        for row in rows[1:]:
            if row:
                vals = np.array([int(float(v)) for v in row[1:]], dtype=np.int8)
                table[row[0]] = vals
                table[Path(row[0]).stem] = vals
    except (OSError, IndexError, ValueError) as exc:
        raise DataError(f"attribute table {path} cannot be parsed: {exc}") from None
    zero = np.zeros(len(names), np.int8)
    return names, np.stack([table.get(f.name, table.get(f.stem, zero)) for f in files])
