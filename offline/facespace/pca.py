"""The PCA ("eigenface") baseline face space, with the VAE-GAN's interface and ONNX contract.

Faces are flattened in channel-first order (``[3, H, W]``), centred on the mean face and projected on the
leading principal components: ``encode(x) = (x - mean) @ components.T`` and ``decode(z) = clip(z @ components +
mean, 0, 1)``. When fewer faces than components are available the extra components are zero, so the latent size
still equals the VAE-GAN's. The ONNX export is a plain MatMul + Add graph built with ``onnx.helper``.

Examples
--------
>>> space = fit_pca(train_faces, n_components=1024)  # doctest: +SKIP
>>> space.save("runs/pca"); load_facespace("runs/pca").latent_size
1024
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from offline.facespace.base import FACESPACE_FILE, FaceSpace, FaceSpaceError, as_float_images, read_meta
from offline.linalg import top_eigh

__all__ = ["PCAFaceSpace", "fit_pca"]

_PARITY_TOLERANCE = 1e-4


class PCAFaceSpace(FaceSpace):
    """Eigenfaces. Learned state: ``mean_`` [D], ``components_`` [L, D] (orthonormal rows, zero padded),
    ``explained_variance_`` [L], ``n_effective_`` (non-zero components)."""

    name = "pca"

    def __init__(
        self,
        mean: np.ndarray,
        components: np.ndarray,
        explained_variance: np.ndarray,
        image_size: int,
        n_effective: int,
        sample_faces: np.ndarray | None = None,
    ) -> None:
        self.mean_ = np.asarray(mean, np.float32)
        self.components_ = np.asarray(components, np.float32)
        self.explained_variance_ = np.asarray(explained_variance, np.float32)
        self.image_size = int(image_size)
        self.latent_size = int(self.components_.shape[0])
        self.n_effective_ = int(n_effective)
        self.sample_faces = sample_faces
        if self.mean_.shape != (3 * image_size * image_size,) or self.components_.shape[1] != self.mean_.size:
            raise FaceSpaceError(f"PCA arrays do not fit {image_size}x{image_size} RGB faces")

    def _flat(self, images: np.ndarray) -> np.ndarray:
        x = as_float_images(images, self.image_size)  # [N, S, S, 3]
        return x.transpose(0, 3, 1, 2).reshape(len(x), -1)  # [N, 3*S*S], channel-first order

    def encode(self, images: np.ndarray) -> np.ndarray:
        """Projections ``float32 [N, L]`` of the centred faces on the components."""
        return ((self._flat(images) - self.mean_) @ self.components_.T).astype(np.float32)

    def decode(self, latents: np.ndarray) -> np.ndarray:
        """Faces ``float32 [N, S, S, 3]``: mean plus the latents' combination of components, clipped to [0, 1]."""
        z = self._check_latents(latents)
        flat = np.clip(z @ self.components_ + self.mean_, 0.0, 1.0)
        return flat.reshape(len(z), 3, self.image_size, self.image_size).transpose(0, 2, 3, 1).astype(np.float32)

    def export_onnx(self, out_dir: str | Path, real_images: np.ndarray | None = None) -> dict[str, Any]:
        """``decoder.onnx`` and ``encoder.onnx`` as MatMul + Add graphs, checked against numpy."""
        import onnx
        import onnxruntime as ort

        from offline.facespace.onnx_graphs import pca_graphs

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        dec, enc = pca_graphs(self.mean_, self.components_, self.image_size)
        rng = np.random.default_rng(0)
        rand_z = (rng.standard_normal((8, self.latent_size)) * np.sqrt(self.explained_variance_)).astype(np.float32)
        rand_x = rng.random((8, 3, self.image_size, self.image_size), dtype=np.float32)
        real = real_images if real_images is not None else self.sample_faces
        real_x = None if real is None else as_float_images(real, self.image_size).transpose(0, 3, 1, 2).copy()
        report: dict[str, Any] = {
            "tolerance": _PARITY_TOLERANCE,
            "facespace": "pca",
            "latent_size": self.latent_size,
            "image_size": self.image_size,
        }
        for name, model, inp in (("decoder", dec, "latent"), ("encoder", enc, "image")):
            path = out / f"{name}.onnx"
            onnx.save_model(model, str(path))
            onnx.checker.check_model(str(path))
            sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

            def ref(a: np.ndarray, name: str = name) -> np.ndarray:
                if name == "decoder":
                    return self.decode(a).transpose(0, 3, 1, 2)
                return self.encode(a.transpose(0, 2, 3, 1))

            entry: dict[str, Any] = {"file": path.name, "bytes": path.stat().st_size}
            rnd = rand_z if name == "decoder" else rand_x
            entry["max_abs_random"] = float(np.abs(sess.run(None, {inp: rnd})[0] - ref(rnd)).max())
            if real_x is not None:
                r = self.encode(real_x.transpose(0, 2, 3, 1)) if name == "decoder" else real_x
                entry["max_abs_real"] = float(np.abs(sess.run(None, {inp: r})[0] - ref(r)).max())
            worst = max(v for k, v in entry.items() if k.startswith("max_abs"))
            entry["ok"] = worst <= _PARITY_TOLERANCE
            report[name] = entry
            if not entry["ok"]:
                raise FaceSpaceError(f"{path}: onnxruntime differs from numpy by {worst:.2e}")
        return report

    def save(self, path: str | Path) -> Path:
        """Write ``pca.npz`` (mean, components, variances, any sample faces), ``facespace.json`` and the attributes."""
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        arrays = {"mean": self.mean_, "components": self.components_, "explained_variance": self.explained_variance_}
        if self.sample_faces is not None:
            arrays["sample_faces"] = self.sample_faces
        np.savez(folder / "pca.npz", **arrays)
        meta = {
            "kind": "pca",
            "latent_size": self.latent_size,
            "image_size": self.image_size,
            "n_effective": self.n_effective_,
        }
        (folder / FACESPACE_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        self._save_attributes(folder)
        return folder

    @classmethod
    def load(cls, path: str | Path) -> PCAFaceSpace:
        """Read a face space written by :meth:`save`; raises FaceSpaceError when ``pca.npz`` cannot be read."""
        folder = Path(path)
        meta = read_meta(folder)
        try:
            with np.load(folder / "pca.npz", allow_pickle=False) as z:
                space = cls(
                    z["mean"],
                    z["components"],
                    z["explained_variance"],
                    meta["image_size"],
                    meta.get("n_effective", z["components"].shape[0]),
                    z["sample_faces"] if "sample_faces" in z.files else None,
                )
        except (OSError, KeyError, ValueError) as exc:
            raise FaceSpaceError(f"{folder / 'pca.npz'} cannot be read: {exc}") from None
        space._load_attributes(folder)
        return space


def fit_pca(images: np.ndarray, n_components: int, image_size: int | None = None) -> PCAFaceSpace:
    """Fit eigenfaces on ``images`` (uint8 ``[N, H, W, 3]`` or float in [0, 1]).

    ``n_components`` is the latent size (the VAE-GAN's); at most ``N - 1`` components carry variance, the rest
    are zero. ``image_size`` defaults to the images' side.
    """
    arr = np.asarray(images)
    if arr.ndim != 4 or arr.shape[-1] != 3 or len(arr) < 2:
        raise FaceSpaceError(f"fit_pca needs at least 2 faces [N, H, W, 3], got shape {arr.shape}")
    size = int(image_size or arr.shape[1])
    x = as_float_images(arr, size).transpose(0, 3, 1, 2).reshape(len(arr), -1)  # [N, D]
    mean = x.mean(0)
    xc = x - mean
    k = int(min(n_components, len(x) - 1, x.shape[1]))
    # SVD of the smaller Gram matrix: X X^T = U S^2 U^T, components = S^-1 U^T X.
    xc64 = xc.astype(np.float64)
    gram = xc64 @ xc64.T
    # only the k leading eigenpairs (the tridiagonal reduction, then k eigenvectors, not all N)
    evals, evecs = top_eigh(gram, k)
    evals = np.clip(evals, 0, None)
    keep = evals > evals[0] * 1e-10 if k else np.zeros(0, bool)
    evals, evecs = evals[keep], evecs[:, keep]
    comps = (evecs.T @ xc64) / np.sqrt(evals)[:, None]  # [k, D], orthonormal rows
    components = np.zeros((n_components, x.shape[1]), np.float32)
    components[: len(evals)] = comps
    variance = np.zeros(n_components, np.float32)
    variance[: len(evals)] = evals / (len(x) - 1)
    sample = (np.clip(as_float_images(arr[:16], size), 0, 1) * 255 + 0.5).astype(np.uint8)
    return PCAFaceSpace(mean, components, variance, size, len(evals), sample)
