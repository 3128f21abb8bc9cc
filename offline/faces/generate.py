"""Procedural faces: parametric, anti-aliased, deterministic from a seed, with CelebA-style attributes.

A face is a vector of continuous parameters in [0, 1] (``PARAM_NAMES``: face shape, skin tone, hair colour,
length and style, eyes, brows, nose, mouth width and smile, glasses, beard, background, lighting and a little
pose jitter). Attributes (``ATTRIBUTE_NAMES``: Male, Smiling, Eyeglasses, hair colours, ...) are thresholds on
the parameters, so they are exact. numpy only (no torch): the renderer is vectorised over faces and pixels.

Examples
--------
>>> import numpy as np
>>> params = sample_params(4, np.random.default_rng(0))
>>> render_faces(params, 64).shape
(4, 64, 64, 3)
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from offline.faces.params import ATTRIBUTE_NAMES, PARAM_NAMES, attributes_from_params, sample_params
from offline.faces.render import render

__all__ = [
    "ATTRIBUTE_NAMES",
    "PARAM_NAMES",
    "sample_params",
    "attributes_from_params",
    "render_faces",
    "iter_faces",
    "write_faces",
    "write_png",
]


def render_faces(params: np.ndarray, size: int = 64, batch_size: int = 32) -> np.ndarray:
    """Render faces from their parameters.

    Parameters
    ----------
    params : ndarray [n, P]
        Parameters in [0, 1] (columns as ``PARAM_NAMES``), e.g. from :func:`sample_params`.
    size : int
        Image side in pixels (64 and 128 are the usual sizes; any size >= 16 works).
    batch_size : int
        Faces rendered together (bounds memory; does not change the result).

    Returns
    -------
    images : ndarray uint8 [n, size, size, 3]
    """
    params = np.asarray(params, dtype=np.float32)
    if size < 16:
        raise ValueError(f"size must be at least 16 pixels, got {size}")
    if params.ndim != 2 or params.shape[1] != len(PARAM_NAMES):
        raise ValueError(f"params must have shape [n, {len(PARAM_NAMES)}], got {params.shape}")
    out = np.empty((params.shape[0], size, size, 3), np.uint8)
    for i in range(0, params.shape[0], batch_size):
        out[i : i + batch_size] = render(params[i : i + batch_size], size)
    return out


def iter_faces(batch_size: int, size: int = 64, seed: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Endless batches of procedural faces, deterministic from ``seed``.

    Yields
    ------
    images : ndarray uint8 [batch_size, size, size, 3]
    attributes : ndarray int8 [batch_size, len(ATTRIBUTE_NAMES)]
        The sequence equals ``write_faces(out, n, size, seed)``'s first ``n`` faces, whatever the batch size.
    """
    rng = np.random.default_rng(seed)
    while True:
        params = sample_params(batch_size, rng)
        yield render_faces(params, size), attributes_from_params(params)


def write_png(path: str | Path, image: np.ndarray) -> None:
    """Write one uint8 RGB image [H, W, 3] as PNG."""
    from PIL import Image

    Image.fromarray(np.ascontiguousarray(image), mode="RGB").save(path, optimize=False, compress_level=6)


def write_faces(out_dir: str | Path, n: int, size: int = 64, seed: int = 0, progress=None):
    """Write ``n`` faces as ``face_00000.png``... with ``attributes.csv`` and ``params.csv``.

    Parameters
    ----------
    out_dir : path
        Destination folder (created if needed).
    n, size, seed : int
        Number of faces, image side, seed.
    progress : callable, optional
        Called with the number of faces written after each batch.

    Returns
    -------
    table : pandas.DataFrame
        One row per face: ``image_id``, the attributes (1/-1), then the parameters.
    """
    import pandas as pd

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    params = sample_params(n, np.random.default_rng(seed))
    ids = [f"face_{i:05d}.png" for i in range(n)]
    batch = 32
    for i in range(0, n, batch):
        images = render_faces(params[i : i + batch], size)
        for j, image in enumerate(images):
            write_png(out / ids[i + j], image)
        if progress is not None:
            progress(len(images))
    attrs = pd.DataFrame(attributes_from_params(params), columns=list(ATTRIBUTE_NAMES))
    attrs.insert(0, "image_id", ids)
    attrs.to_csv(out / "attributes.csv", index=False)
    table = pd.DataFrame(params.astype(np.float64).round(6), columns=list(PARAM_NAMES))
    table.insert(0, "image_id", ids)
    table.to_csv(out / "params.csv", index=False, float_format="%.6f")
    return attrs.merge(table, on="image_id")
