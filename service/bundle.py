"""The bundle: the one contract between the offline fit and the real-time service.

A bundle is a folder written by ``fmriface fit`` (through :func:`write_manifest`) and read by ``fmriface serve``
(through :func:`load_bundle`):

=====================  ==================================================================================
``manifest.json``      schema, creation time, package version, latent size, image shape, voxel count, TR,
                       mapping method, trial window, training and evaluation summaries, SHA-256 of each file
``reference.nii.gz``   motion-correction reference (mean of the first run's volumes), scanner space
``mask.nii.gz``        the voxels used (uint8, 1 = used), on the reference grid
``mapping.npz``        ``weights`` [V, L], ``bias`` [L], ``x_mean`` [V], ``x_scale`` [V], ``method``:
                       ``latent = ((x - x_mean) / x_scale) @ weights + bias`` where ``x`` are the mask's
                       voxels in C order of the grid (``np.flatnonzero(mask)``)
``encoder.onnx``       image ``[N, 3, H, W]`` float32 in [0, 1] -> latent ``[N, L]``
``decoder.onnx``       latent ``[N, L]`` float32 -> image ``[N, 3, H, W]`` float32 in [0, 1]
``attributes.npz``     ``names`` [A], ``directions`` [A, L], ``train_ids``/``train_latents``,
                       ``test_ids``/``test_latents`` (stimulus file names and their latents)
``shared.npz``         optional: ``ids`` [K], ``x`` [K, V]: the subject's patterns of the faces every subject of
                       a group saw (on the mask's voxels, as the mapping reads them): a new subject aligns on them
``alignment.npz``      optional, a bundle fitted with ``fit --align-to``: ``matrix`` [V, V_ref], ``offset``
                       [V_ref] (standardised voxels of this subject -> the reference's); already folded into
                       ``mapping.npz``, kept for the record (the manifest's ``alignment`` says how it was fitted)
=====================  ==================================================================================

The service refuses a bundle whose hashes, schema or shapes don't match, naming the file and the mismatch.
Both ridge and the paper's inverted encoding model are linear in ``x``, so both are stored as one matrix.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from service import jsonsafe as strict_json
from service.jsonsafe import jsonable as _jsonable

__all__ = [
    "BUNDLE_SCHEMA",
    "BUNDLE_FILES",
    "OPTIONAL_FILES",
    "BundleError",
    "Bundle",
    "load_bundle",
    "write_manifest",
    "sha256_file",
]

BUNDLE_SCHEMA = 1
BUNDLE_FILES = (
    "reference.nii.gz",
    "mask.nii.gz",
    "mapping.npz",
    "encoder.onnx",
    "decoder.onnx",
    "attributes.npz",
)
#: Files a bundle may have; each one present is hashed in the manifest and checked like the others.
OPTIONAL_FILES = ("shared.npz", "alignment.npz")
_MAPPING_KEYS = ("weights", "bias", "x_mean", "x_scale")
_ATTRIBUTE_KEYS = ("names", "directions", "train_ids", "train_latents", "test_ids", "test_latents")


class BundleError(ValueError):
    """A bundle that cannot be used; the message names the file and the problem."""

    user_error = True


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def write_manifest(folder: str | Path, fields: dict[str, Any]) -> dict[str, Any]:
    """Write ``manifest.json`` for a bundle whose other files are already in ``folder``.

    ``fields`` must hold at least ``latent_size``, ``image_shape``, ``n_voxels``, ``tr`` and
    ``mapping_method``; schema, creation time and the file hashes are added here. Returns the manifest.
    """
    folder = Path(folder)
    missing = [name for name in BUNDLE_FILES if not (folder / name).is_file()]
    if missing:
        raise BundleError(f"bundle {folder} lacks {', '.join(missing)}; write them before the manifest")
    for key in ("latent_size", "image_shape", "n_voxels", "tr", "mapping_method"):
        if key not in fields:
            raise BundleError(f"bundle manifest for {folder} needs the field {key!r}")
    manifest = {
        "schema": BUNDLE_SCHEMA,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **fields,
        "files": {
            name: sha256_file(folder / name)
            for name in BUNDLE_FILES + OPTIONAL_FILES
            if name in BUNDLE_FILES or (folder / name).is_file()
        },
    }
    tmp = folder / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=2, default=_jsonable) + "\n")
    tmp.replace(folder / "manifest.json")
    return manifest


@dataclass(frozen=True)
class Bundle:
    """A verified bundle, loaded into memory (the ONNX files are left as paths for the decoder session)."""

    path: Path
    manifest: dict[str, Any]
    reference: np.ndarray  # float32 [X, Y, Z]
    affine: np.ndarray  # float64 [4, 4], RAS+ world (mm)
    mask: np.ndarray  # bool [X, Y, Z]
    voxel_index: np.ndarray  # int64 [V], np.flatnonzero(mask)
    weights: np.ndarray  # float32 [V, L]
    bias: np.ndarray  # float32 [L]
    x_mean: np.ndarray  # float32 [V]
    x_scale: np.ndarray  # float32 [V]
    attribute_names: tuple[str, ...]
    attribute_directions: np.ndarray  # float32 [A, L]
    stimulus_ids: tuple[str, ...]  # train then test stimulus file names
    stimulus_latents: np.ndarray  # float32 [S, L]
    decoder_path: Path
    encoder_path: Path

    @property
    def latent_size(self) -> int:
        """Length of the decoded latent vector (columns of ``weights``)."""
        return int(self.weights.shape[1])

    @property
    def n_voxels(self) -> int:
        """Number of mask voxels the mapping reads (rows of ``weights``)."""
        return int(self.weights.shape[0])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(height, width, channels)`` of the decoder's images, as the manifest records it."""
        h, w, c = self.manifest["image_shape"]
        return int(h), int(w), int(c)

    @property
    def tr(self) -> float:
        """The repetition time in seconds, as the manifest records it."""
        return float(self.manifest["tr"])

    def stimulus_latent(self, stim_id: str) -> np.ndarray:
        """The latent of a training or test stimulus, by file name (with or without folders)."""
        name = Path(stim_id).name
        for i, sid in enumerate(self.stimulus_ids):
            if Path(sid).name == name:
                return self.stimulus_latents[i]
        raise BundleError(f"stimulus {stim_id!r} is not among the bundle's {len(self.stimulus_ids)} stimuli")


def _load_npz(path: Path, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in keys if k not in z.files]
            if missing:
                raise BundleError(f"{path} lacks the array{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
            return {k: z[k] for k in z.files}
    except BundleError:
        raise
    except Exception as exc:  # noqa: BLE001 - zip/npy errors of many kinds
        raise BundleError(f"{path} is not a readable .npz file: {exc}") from None


#: Manifest numbers and their rule: (type, smallest value allowed or None).
_MANIFEST_NUMBERS = {"n_voxels": (int, 1), "latent_size": (int, 1), "tr": (float, 0.0)}


def _check_manifest_numbers(manifest: dict[str, Any], mpath: Path) -> None:
    """Numbers of the manifest that the service uses: the right type, finite, in range (a clear message each)."""
    for key, (kind, low) in _MANIFEST_NUMBERS.items():
        if key not in manifest or manifest[key] is None:
            continue
        value = manifest[key]
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or (kind is int and not isinstance(value, int))
        ):
            raise BundleError(f"{mpath}: {key} is {value!r}, not {'a whole number' if kind is int else 'a number'}")
        if not math.isfinite(value) or (low is not None and (value <= low if kind is float else value < low)):
            bound = f"> {low:g}" if kind is float else f">= {low}"
            raise BundleError(f"{mpath}: {key} is {value!r}; it must be {bound}")
    image_shape = manifest.get("image_shape")
    if image_shape is not None and not (
        isinstance(image_shape, list)
        and len(image_shape) == 3
        and all(isinstance(v, int) and v > 0 for v in image_shape)
    ):
        raise BundleError(f"{mpath}: image_shape is {image_shape!r}, not [height, width, 3]")


def load_bundle(path: str | Path, verify: bool = True) -> Bundle:
    """Load and check a bundle folder.

    Parameters
    ----------
    path : path
        The bundle folder.
    verify : bool
        Check every file's SHA-256 against the manifest (a few ms for a demo bundle; on by default).

    Raises
    ------
    BundleError
        Missing file, hash mismatch, unsupported schema or inconsistent shapes; the message names the file.
    """
    import nibabel as nib

    folder = Path(path)
    if not folder.is_dir():
        raise BundleError(f"bundle {folder} is not a folder")
    mpath = folder / "manifest.json"
    try:
        manifest = strict_json.loads(mpath.read_text())
    except FileNotFoundError:
        raise BundleError(f"bundle {folder} has no manifest.json (was it written by `fmriface fit`?)") from None
    except json.JSONDecodeError as exc:
        raise BundleError(f"{mpath} is not valid JSON: {exc}") from None
    except strict_json.NonFiniteError as exc:
        raise BundleError(f"{mpath}: {exc}") from None
    if not isinstance(manifest, dict):
        raise BundleError(f"{mpath} must hold a JSON object, not a {type(manifest).__name__}")
    _check_manifest_numbers(manifest, mpath)
    if manifest.get("schema") != BUNDLE_SCHEMA:
        raise BundleError(f"{mpath}: schema {manifest.get('schema')!r}, this service reads schema {BUNDLE_SCHEMA}")
    hashes = manifest.get("files", {})
    for name in BUNDLE_FILES:
        fpath = folder / name
        if not fpath.is_file():
            raise BundleError(f"bundle {folder} lacks {name}")
        if name not in hashes:
            raise BundleError(f"{mpath} has no hash for {name}")
        if verify and sha256_file(fpath) != hashes[name]:
            raise BundleError(f"{fpath} does not match the hash in manifest.json (modified or corrupt)")
    for name in OPTIONAL_FILES:
        fpath, listed = folder / name, name in hashes
        if listed != fpath.is_file():
            said = "lists it but the file is missing" if listed else "has no hash for it"
            raise BundleError(f"bundle {folder}: {name}: manifest.json {said}")
        if listed and verify and sha256_file(fpath) != hashes[name]:
            raise BundleError(f"{fpath} does not match the hash in manifest.json (modified or corrupt)")

    try:
        ref_img = nib.load(str(folder / "reference.nii.gz"))
        reference = np.asarray(ref_img.dataobj, dtype=np.float32)
        mask_img = nib.load(str(folder / "mask.nii.gz"))
        mask = np.asarray(mask_img.dataobj) > 0
    except Exception as exc:  # noqa: BLE001
        raise BundleError(f"bundle {folder}: cannot read the reference or mask NIfTI: {exc}") from None
    mask.flags.writeable = False  # the bundle's mask never changes: motion correction caches its points by identity
    if reference.ndim != 3:
        raise BundleError(f"{folder / 'reference.nii.gz'} must be 3-D, has shape {reference.shape}")
    if mask.shape != reference.shape:
        raise BundleError(f"{folder / 'mask.nii.gz'} has shape {mask.shape}, the reference {reference.shape}")
    if not np.allclose(mask_img.affine, ref_img.affine, atol=1e-4):
        raise BundleError(f"{folder / 'mask.nii.gz'} is not on the reference's grid (affines differ)")

    mp = _load_npz(folder / "mapping.npz", _MAPPING_KEYS)
    weights = mp["weights"].astype(np.float32)
    n_vox = int(mask.sum())
    if weights.ndim != 2 or weights.shape[0] != n_vox:
        raise BundleError(f"{folder / 'mapping.npz'}: weights have shape {weights.shape}, the mask has {n_vox} voxels")
    latent = weights.shape[1]
    for key, size in (("bias", latent), ("x_mean", n_vox), ("x_scale", n_vox)):
        if mp[key].shape != (size,):
            raise BundleError(f"{folder / 'mapping.npz'}: {key} has shape {mp[key].shape}, expected ({size},)")
    for key in _MAPPING_KEYS:
        bad = int(np.size(mp[key]) - np.count_nonzero(np.isfinite(mp[key])))
        if bad:
            raise BundleError(f"{folder / 'mapping.npz'}: {key} holds {bad} NaN or infinite values")
    if not np.all(mp["x_scale"] > 0):
        raise BundleError(f"{folder / 'mapping.npz'}: x_scale has zero or negative entries")
    for key, val in (("latent_size", latent), ("n_voxels", n_vox)):
        if int(manifest.get(key, -1)) != val:
            raise BundleError(f"{mpath}: {key} is {manifest.get(key)!r} but mapping.npz implies {val}")

    at = _load_npz(folder / "attributes.npz", _ATTRIBUTE_KEYS)
    if at["directions"].ndim != 2 or at["directions"].shape[1] != latent:
        raise BundleError(
            f"{folder / 'attributes.npz'}: directions have shape {at['directions'].shape}, latent size is {latent}"
        )
    ids = tuple(str(s) for s in at["train_ids"]) + tuple(str(s) for s in at["test_ids"])
    lats = np.concatenate([at["train_latents"], at["test_latents"]]).astype(np.float32)
    if lats.shape != (len(ids), latent):
        raise BundleError(f"{folder / 'attributes.npz'}: stimulus latents have shape {lats.shape}")

    return Bundle(
        path=folder,
        manifest=manifest,
        reference=reference,
        affine=np.asarray(ref_img.affine, dtype=np.float64),
        mask=mask,
        voxel_index=np.flatnonzero(mask),
        weights=weights,
        bias=mp["bias"].astype(np.float32),
        x_mean=mp["x_mean"].astype(np.float32),
        x_scale=mp["x_scale"].astype(np.float32),
        attribute_names=tuple(str(s) for s in at["names"]),
        attribute_directions=at["directions"].astype(np.float32),
        stimulus_ids=ids,
        stimulus_latents=lats,
        decoder_path=folder / "decoder.onnx",
        encoder_path=folder / "encoder.onnx",
    )
