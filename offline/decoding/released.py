"""The authors' released decoders for OpenNeuro ds001761: read them and score them as they did.

Per subject the derivatives hold MATLAB v7.3 files (HDF5, read with h5py; MATLAB writes column-major, so every
array comes back transposed). docs/paper.md lists them; this module uses

- ``ROI_VAEGAN.mat``: ``W`` (MATLAB 1025 x voxels: the encoding weights of the 1024 latents plus a bias row),
  optionally ``invcovW`` (1025 x 1025, ``(W W^T)^-1``) and ``validindices`` (1-based voxel indices);
- ``test_patterns.mat``: ``vol`` (test faces x voxels);
- ``test_images.mat``: ``testimage_vaeganlatentvars`` (test faces x 1024);
- optionally ``img_pattern.mat`` / ``img_image.mat`` for imagery, and ``ROI_PCA.mat`` (``W_PCA``) with the PCA
  coefficients of the test images for the eigenface baseline (names inferred, used when present).

Decoding as the authors did (inferred from the released files): ``z = (W W^T)^-1 W y`` over all 1025 rows, then
the bias entry is dropped. Orientation is resolved from the sizes (the latent axis is the one of size L or
L + 1, the voxel axis the one matching ``W``), so a file saved either way round reads the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from offline.decoding.evaluate import pairwise_accuracy

__all__ = ["Ds001761Error", "ReleasedDecoder", "find_subject_dir", "read_decoder", "read_patterns", "evaluate_subject"]


class Ds001761Error(ValueError):
    """A derivatives folder or file that does not have the expected layout; names the file."""

    user_error = True


@dataclass(frozen=True)
class ReleasedDecoder:
    """Encoding weights ``w [L + 1, V]`` (bias row at ``bias_index``) and ``(W W^T)^-1``."""

    w: np.ndarray
    inv_cov: np.ndarray
    bias_index: int
    path: Path

    @property
    def latent_size(self) -> int:
        """Latent dimensions the decoder predicts (the weights' rows less the bias)."""
        return self.w.shape[0] - 1

    @property
    def n_voxels(self) -> int:
        """Voxels a pattern has."""
        return self.w.shape[1]

    def decode(self, patterns: np.ndarray) -> np.ndarray:
        """Latents ``[N, L]`` of patterns ``[N, V]``: ``(W W^T)^-1 W y`` with the bias entry dropped."""
        full = (self.inv_cov @ (self.w @ np.asarray(patterns, dtype=np.float64).T)).T
        return np.delete(full, self.bias_index, axis=1)


def find_subject_dir(root: str | Path, subject: int | str) -> Path:
    """The folder holding a subject's ``.mat`` files: ``sub-0N``, ``sub-N``, ``subN`` or ``root`` itself."""
    root = Path(root)
    if not root.is_dir():
        raise Ds001761Error(f"--ds001761-derivatives {root} is not a folder")
    s = str(subject).removeprefix("sub-").removeprefix("sub")
    names = [f"sub-{s}", f"sub-{int(s):02d}" if s.isdigit() else s, f"sub{s}", f"S{s}", s]
    for name in names:
        for cand in (root / name, *root.glob(f"*/{name}")):
            if (cand / "ROI_VAEGAN.mat").is_file():
                return cand
    if (root / "ROI_VAEGAN.mat").is_file():
        return root
    raise Ds001761Error(f"no ROI_VAEGAN.mat for subject {subject} under {root} (looked in {', '.join(names)})")


def _read(path: Path, keys: tuple[str, ...], contains: str | None = None) -> tuple[str, np.ndarray]:
    """The first dataset named in ``keys`` (or whose name contains ``contains``), as stored by h5py."""
    import h5py

    if not path.is_file():
        raise Ds001761Error(f"{path} does not exist")
    try:
        with h5py.File(path, "r") as f:
            names = [k for k in f.keys() if isinstance(f[k], h5py.Dataset)]
            for key in keys:
                if key in names:
                    return key, np.asarray(f[key], dtype=np.float64)
            if contains is not None:
                hits = [k for k in names if contains.lower() in k.lower()]
                if len(hits) == 1:
                    return hits[0], np.asarray(f[hits[0]], dtype=np.float64)
            if len(names) == 1 and contains is None:
                return names[0], np.asarray(f[names[0]], dtype=np.float64)
    except OSError as exc:
        raise Ds001761Error(f"{path} is not a MATLAB v7.3 (HDF5) file: {exc}") from None
    raise Ds001761Error(f"{path} has none of the arrays {', '.join(keys)} (it holds {', '.join(names) or 'nothing'})")


def _orient(arr: np.ndarray, axis_size: int, path: Path, what: str) -> np.ndarray:
    """Return ``arr`` as ``[other, axis_size]`` whichever way round it was stored."""
    if arr.ndim != 2:
        raise Ds001761Error(f"{path}: {what} must be 2-D, has shape {arr.shape}")
    if arr.shape[1] == axis_size:
        return arr
    if arr.shape[0] == axis_size:
        return arr.T
    raise Ds001761Error(f"{path}: {what} has shape {arr.shape}, neither axis has the expected size {axis_size}")


def read_decoder(folder: Path, latent_size: int = 1024, bias: str = "last", pca: bool = False) -> ReleasedDecoder:
    """Read ``ROI_VAEGAN.mat`` (or ``ROI_PCA.mat``): ``W`` as ``[L + 1, V]`` and its inverse covariance."""
    path = folder / ("ROI_PCA.mat" if pca else "ROI_VAEGAN.mat")
    _, w = _read(path, ("W_PCA", "W") if pca else ("W",))
    if w.ndim != 2 or latent_size + 1 not in w.shape:
        raise Ds001761Error(f"{path}: W has shape {w.shape}, expected {latent_size + 1} x voxels")
    w = w if w.shape[0] == latent_size + 1 and w.shape[1] != latent_size + 1 else w.T
    import h5py

    with h5py.File(path, "r") as f:
        inv = np.asarray(f["invcovW"], dtype=np.float64) if "invcovW" in f and not pca else None
    if inv is None or inv.shape != (latent_size + 1, latent_size + 1):
        inv = np.linalg.pinv(w @ w.T, hermitian=True)
    return ReleasedDecoder(w=w, inv_cov=inv, bias_index=latent_size if bias == "last" else 0, path=path)


def read_patterns(folder: Path, n_voxels: int, pattern_file: str = "test_patterns.mat", key: str = "vol") -> np.ndarray:
    """Patterns ``[N, V]`` from ``test_patterns.mat`` (``vol``), subset by ``validindices`` when needed."""
    path = folder / pattern_file
    _, vol = _read(path, (key,))
    if n_voxels in vol.shape:
        return _orient(vol, n_voxels, path, key)
    roi = folder / "ROI_VAEGAN.mat"
    _, valid = _read(roi, ("validindices",))
    idx = valid.ravel().astype(np.int64) - 1  # MATLAB is 1-based
    if idx.size != n_voxels:
        raise Ds001761Error(f"{roi}: validindices has {idx.size} entries, W has {n_voxels} voxels")
    for axis_size in vol.shape:
        if axis_size > idx.max():
            return _orient(vol, axis_size, path, key)[:, idx]
    raise Ds001761Error(f"{path}: {key} has shape {vol.shape}, which does not match W's {n_voxels} voxels")


def evaluate_subject(root: str | Path, subject: int | str, latent_size: int = 1024, bias: str = "last") -> dict:
    """Decode the released test (and imagery, and PCA when present) patterns; score pairwise accuracy."""
    folder = find_subject_dir(root, subject)
    dec = read_decoder(folder, latent_size, bias)
    result: dict = {"subject": str(subject), "folder": str(folder), "n_voxels": dec.n_voxels}
    patterns = read_patterns(folder, dec.n_voxels)
    _, true = _read(folder / "test_images.mat", ("testimage_vaeganlatentvars",), contains="vaegan")
    true = _orient(true, latent_size, folder / "test_images.mat", "testimage_vaeganlatentvars")
    if len(true) != len(patterns):
        raise Ds001761Error(f"{folder}: {len(patterns)} test patterns but {len(true)} test latents")
    decoded = dec.decode(patterns)
    result["vaegan"] = {"latent": pairwise_accuracy(decoded, true).as_dict()}
    result["decoded_latents"] = decoded
    if (folder / "img_pattern.mat").is_file() and (folder / "img_image.mat").is_file():
        img_pat = read_patterns(folder, dec.n_voxels, "img_pattern.mat", "vol")
        _, img_true = _read(folder / "img_image.mat", ("imgimage_vaeganlatentvars",), contains="vaegan")
        img_true = _orient(img_true, latent_size, folder / "img_image.mat", "imagery latents")
        if len(img_true) == len(img_pat) >= 2:
            result["imagery"] = {"latent": pairwise_accuracy(dec.decode(img_pat), img_true).as_dict()}
    if (folder / "ROI_PCA.mat").is_file():
        pdec = read_decoder(folder, latent_size, bias, pca=True)
        _, ptrue = _read(folder / "test_images.mat", ("PCA_coeffs",), contains="pca")
        ptrue = _orient(ptrue, latent_size, folder / "test_images.mat", "PCA coefficients")
        ppat = read_patterns(folder, pdec.n_voxels)
        result["pca"] = {"latent": pairwise_accuracy(pdec.decode(ppat), ptrue).as_dict()}
    return result
