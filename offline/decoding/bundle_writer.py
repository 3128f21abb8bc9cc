"""Write the bundle that ``fmriface serve`` reads (docs/bundle.md; contract in :mod:`service.bundle`).

The offline fit hands over the reference, the mask, the mapping as one linear map on standardised voxels, the
face space's ONNX decoder and encoder, the attribute directions and the stimulus latents; this module writes
them and then the manifest with every file's SHA-256 (:func:`service.bundle.write_manifest`), and finally loads
the result back through :func:`service.bundle.load_bundle`, so a bundle that the service would refuse is never
left behind as if it were good.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from service.bundle import OPTIONAL_FILES, Bundle, BundleError, load_bundle, write_manifest

__all__ = ["LinearMap", "AttributeDirections", "StimulusLatents", "write_bundle"]


@dataclass(frozen=True)
class LinearMap:
    """``latent = ((x - x_mean) / x_scale) @ weights + bias`` for the mask's voxels ``x`` (C order)."""

    weights: np.ndarray  # [V, L]
    bias: np.ndarray  # [L]
    x_mean: np.ndarray  # [V]
    x_scale: np.ndarray  # [V]
    method: str

    @classmethod
    def from_mapping(cls, mapping: Any, method: str) -> LinearMap:
        """From a fitted :class:`offline.decoding.mapping.RidgeMapping` or :class:`~offline.decoding.mapping.EncodingMapping`."""
        weights, bias = mapping.linear_map_()
        return cls(weights, bias, mapping.x_mean_.astype(np.float32), mapping.x_scale_.astype(np.float32), method)


@dataclass(frozen=True)
class AttributeDirections:
    """Latent arithmetic: one direction per attribute (mean latent of the faces with it minus those without)."""

    names: Sequence[str]  # [A]
    directions: np.ndarray  # [A, L]


@dataclass(frozen=True)
class StimulusLatents:
    """Stimuli (``stim_file`` values) and their face-space latents ``[N, L]``."""

    ids: Sequence[str]
    latents: np.ndarray


def write_bundle(
    out: str | Path,
    *,
    reference: np.ndarray,
    affine: np.ndarray,
    mask: np.ndarray,
    linear_map: LinearMap,
    export_onnx: Callable[[Path], dict],
    attributes: AttributeDirections,
    train: StimulusLatents,
    test: StimulusLatents,
    manifest_fields: dict[str, Any],
    extra: dict[str, dict[str, np.ndarray]] | None = None,
) -> Bundle:
    """Write a complete bundle folder and return it loaded (and so verified) by the service's loader.

    Parameters
    ----------
    out : path
        The bundle folder (created; files in it are overwritten).
    reference, affine : [X, Y, Z] float, [4, 4]
        Motion-correction reference in scanner space and its affine.
    mask : bool [X, Y, Z]
        The voxels the mapping reads, on the reference grid.
    linear_map : LinearMap
        The mapping on the mask's voxels in ``np.flatnonzero(mask)`` order.
    export_onnx : callable
        ``export_onnx(folder) -> dict`` writes ``decoder.onnx`` and ``encoder.onnx`` into the folder (the face
        space's :meth:`export_onnx`); its summary goes into the manifest as ``onnx_export``.
    attributes : AttributeDirections
        The attribute names and directions ``[A, L]``.
    train, test : StimulusLatents
        The training and test stimuli and their face-space latents.
    manifest_fields : dict
        At least ``image_shape`` and ``tr``; latent size, voxel count and mapping method are added here.
    extra : dict, optional
        The optional files (:data:`service.bundle.OPTIONAL_FILES`: ``shared.npz``, ``alignment.npz``) to write,
        each as its arrays.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    mask = np.asarray(mask, dtype=bool)
    n_vox = int(mask.sum())
    w = np.asarray(linear_map.weights, dtype=np.float32)
    if w.shape[0] != n_vox:
        raise BundleError(f"the mapping has {w.shape[0]} voxel weights, the mask {n_vox} voxels")
    if reference.shape != mask.shape:
        raise BundleError(f"reference shape {reference.shape} differs from the mask's {mask.shape}")
    latent = w.shape[1]
    for name, lat in (("train", train.latents), ("test", test.latents)):
        if np.asarray(lat).ndim != 2 or np.asarray(lat).shape[1] != latent:
            raise BundleError(f"{name} latents have shape {np.shape(lat)}, the mapping's latent size is {latent}")

    affine = np.asarray(affine, dtype=np.float64)
    ref_img = nib.Nifti1Image(np.asarray(reference, dtype=np.float32), affine)
    ref_img.header.set_xyzt_units("mm", "sec")
    nib.save(ref_img, out / "reference.nii.gz")
    mask_img = nib.Nifti1Image(mask.astype(np.uint8), affine)
    mask_img.header.set_xyzt_units("mm", "sec")
    nib.save(mask_img, out / "mask.nii.gz")
    np.savez(
        out / "mapping.npz",
        weights=w,
        bias=np.asarray(linear_map.bias, dtype=np.float32),
        x_mean=np.asarray(linear_map.x_mean, dtype=np.float32),
        x_scale=np.asarray(linear_map.x_scale, dtype=np.float32),
        method=np.array(linear_map.method),
    )
    np.savez(
        out / "attributes.npz",
        names=np.array([str(n) for n in attributes.names]),
        directions=np.asarray(attributes.directions, dtype=np.float32).reshape(len(attributes.names), latent),
        train_ids=np.array([str(s) for s in train.ids]),
        train_latents=np.asarray(train.latents, dtype=np.float32),
        test_ids=np.array([str(s) for s in test.ids]),
        test_latents=np.asarray(test.latents, dtype=np.float32),
    )
    for name in OPTIONAL_FILES:
        (out / name).unlink(missing_ok=True)  # a file of an earlier fit into this folder is not this bundle's
    for name, arrays in (extra or {}).items():
        if name not in OPTIONAL_FILES:
            raise BundleError(f"{name} is not a bundle file (optional files: {', '.join(OPTIONAL_FILES)})")
        np.savez(out / name, **arrays)
    parity = _export_two_onnx(out, export_onnx)
    fields = {
        **manifest_fields,
        "latent_size": latent,
        "n_voxels": n_vox,
        "mapping_method": linear_map.method,
        "onnx_export": parity,
    }
    write_manifest(out, fields)
    return load_bundle(out)


def _export_two_onnx(out: Path, export_onnx: Callable[[Path], dict]) -> dict:
    """Run the export into a scratch folder and keep only ``decoder.onnx`` and ``encoder.onnx``."""
    scratch = Path(tempfile.mkdtemp(prefix=".onnx-export-", dir=out))
    try:
        parity = export_onnx(scratch)
        for name in ("decoder.onnx", "encoder.onnx"):
            if not (scratch / name).is_file():
                raise BundleError(f"the face space's ONNX export did not write {name}")
            shutil.move(str(scratch / name), str(out / name))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return dict(parity or {})
