"""The PCA face space: round trip on its training faces, zero padding, save/load and ONNX parity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from offline.facespace import FaceSpaceError, load_facespace
from offline.facespace.pca import fit_pca


def _faces(rng: np.random.Generator, n: int = 30, rank: int = 6, size: int = 12) -> np.ndarray:
    """Faces in [0.1, 0.9] that lie on a ``rank``-dimensional affine subspace."""
    basis = rng.normal(size=(rank, size * size * 3))
    coef = rng.normal(size=(n, rank))
    flat = coef @ basis
    flat = 0.5 + 0.4 * flat / np.abs(flat).max()
    return flat.reshape(n, size, size, 3).astype(np.float32)


def test_round_trip_on_training_faces(rng: np.random.Generator) -> None:
    faces = _faces(rng)
    space = fit_pca(faces, n_components=10)
    assert (space.name, space.latent_size, space.image_size, space.n_effective_) == ("pca", 10, 12, 6)
    z = space.encode(faces)
    assert z.shape == (30, 10) and z.dtype == np.float32
    np.testing.assert_allclose(space.decode(z), faces, atol=1e-4)
    np.testing.assert_allclose(z[:, 6:], 0.0, atol=1e-5)  # zero-padded components carry nothing
    gram = space.components_[:6] @ space.components_[:6].T
    np.testing.assert_allclose(gram, np.eye(6), atol=1e-4)
    assert np.all(np.diff(space.explained_variance_[:6]) <= 1e-6)


def test_fewer_faces_than_components_and_uint8(rng: np.random.Generator) -> None:
    faces = (rng.random((5, 8, 8, 3)) * 255).astype(np.uint8)
    space = fit_pca(faces, n_components=64)
    assert space.latent_size == 64 and space.n_effective_ == 4
    np.testing.assert_allclose(space.decode(space.encode(faces)), faces / 255.0, atol=1e-4)
    with pytest.raises(FaceSpaceError, match="at least 2 faces"):
        fit_pca(faces[:1], 4)


def test_save_load_and_onnx_parity(tmp_path: Path, rng: np.random.Generator) -> None:
    faces = _faces(rng, n=20, rank=5, size=16)
    space = fit_pca(faces, n_components=8)
    space.save(tmp_path / "pca")
    loaded = load_facespace(tmp_path / "pca")
    assert loaded.name == "pca" and loaded.latent_size == 8
    np.testing.assert_allclose(loaded.encode(faces), space.encode(faces), atol=1e-6)
    report = loaded.export_onnx(tmp_path / "onnx")
    assert report["decoder"]["ok"] and report["encoder"]["ok"] and report["decoder"]["max_abs_real"] <= 1e-4
    dec = ort.InferenceSession(str(tmp_path / "onnx" / "decoder.onnx"), providers=["CPUExecutionProvider"])
    enc = ort.InferenceSession(str(tmp_path / "onnx" / "encoder.onnx"), providers=["CPUExecutionProvider"])
    z = space.encode(faces[:3])
    img = dec.run(None, {"latent": z})[0]
    assert img.shape == (3, 3, 16, 16)
    np.testing.assert_allclose(img.transpose(0, 2, 3, 1), faces[:3], atol=1e-4)
    np.testing.assert_allclose(enc.run(None, {"image": faces[:3].transpose(0, 3, 1, 2).copy()})[0], z, atol=1e-4)
