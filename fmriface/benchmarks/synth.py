"""A synthetic bundle and run for testing and benchmarking the service without the offline pipeline.

The bundle's decoder is a real ONNX graph (``MatMul -> Sigmoid -> Reshape`` to ``[N, 3, H, W]``) and its encoder
its exact inverse (``logit -> MatMul`` by the pseudo-inverse), built with ``onnx.helper``. The run's mask voxels
encode a known latent: a trial with stimulus latent ``z`` adds ``hrf(t) * (z @ E)`` to the voxels, and the
mapping is ``pinv(E)``, so decoded latents are checkable against the stimuli.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["SynthBundle", "make_bundle", "make_run", "hrf", "write_onnx_pair"]


@dataclass
class SynthBundle:
    """What :func:`make_bundle` wrote, plus the generative pieces a test needs."""

    path: Path
    encoding: np.ndarray  # [L, V]: voxel pattern of each latent dimension
    stim_ids: tuple[str, ...]
    stim_latents: np.ndarray  # [S, L]
    reference: np.ndarray  # [X, Y, Z]
    mask: np.ndarray  # bool [X, Y, Z]
    affine: np.ndarray
    tr: float


def hrf(t: np.ndarray) -> np.ndarray:
    """A double-gamma haemodynamic response (peak ~5 s, undershoot ~15 s), t in seconds."""
    t = np.maximum(np.asarray(t, np.float64), 0.0)
    g1 = t**5 * np.exp(-t) / math.gamma(6)
    g2 = t**15 * np.exp(-t) / math.gamma(16)
    return g1 - g2 / 6.0


def _anatomy(shape: tuple[int, int, int], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    from scipy.ndimage import gaussian_filter

    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij"))
    r = np.sqrt((grid**2).sum(0))
    brain = r < 0.8
    tex = gaussian_filter(rng.normal(size=shape), 1.5)
    data = np.where(brain, 600.0 + 250.0 * tex / tex.std() + 200.0 * (r < 0.45), 20.0)
    return gaussian_filter(data, 0.7).astype(np.float32), brain


def _onnx_models(latent: int, size: int, rng: np.random.Generator) -> tuple[bytes, bytes, np.ndarray]:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    d = (rng.normal(size=(latent, 3 * size * size)) / math.sqrt(latent)).astype(np.float32)
    dec = helper.make_graph(
        [
            helper.make_node("MatMul", ["latent", "D"], ["lin"]),
            helper.make_node("Sigmoid", ["lin"], ["sig"]),
            helper.make_node("Reshape", ["sig", "shape"], ["image"]),
        ],
        "decoder",
        [helper.make_tensor_value_info("latent", TensorProto.FLOAT, ["N", latent])],
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, size, size])],
        [numpy_helper.from_array(d, "D"), numpy_helper.from_array(np.array([-1, 3, size, size], np.int64), "shape")],
    )
    pinv = np.linalg.pinv(d).astype(np.float32)  # [3HW, L]
    enc = helper.make_graph(
        [
            helper.make_node("Reshape", ["image", "flat"], ["x"]),
            helper.make_node("Clip", ["x", "lo", "hi"], ["xc"]),
            helper.make_node("Sub", ["one", "xc"], ["omx"]),
            helper.make_node("Div", ["xc", "omx"], ["odds"]),
            helper.make_node("Log", ["odds"], ["logit"]),
            helper.make_node("MatMul", ["logit", "P"], ["latent"]),
        ],
        "encoder",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, size, size])],
        [helper.make_tensor_value_info("latent", TensorProto.FLOAT, ["N", latent])],
        [
            numpy_helper.from_array(np.array([-1, 3 * size * size], np.int64), "flat"),
            numpy_helper.from_array(np.array(1e-4, np.float32), "lo"),
            numpy_helper.from_array(np.array(1 - 1e-4, np.float32), "hi"),
            numpy_helper.from_array(np.array(1.0, np.float32), "one"),
            numpy_helper.from_array(pinv, "P"),
        ],
    )
    models = []
    for graph in (dec, enc):
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        onnx.checker.check_model(model)
        models.append(model.SerializeToString())
    return models[0], models[1], d


def write_onnx_pair(folder: str | Path, latent_size: int, image_size: int, seed: int = 0) -> np.ndarray:
    """Write the MatMul decoder and its exact-inverse encoder into ``folder``; returns the decoder matrix."""
    dec, enc, d = _onnx_models(latent_size, image_size, np.random.default_rng(seed))
    Path(folder, "decoder.onnx").write_bytes(dec)
    Path(folder, "encoder.onnx").write_bytes(enc)
    return d


def make_bundle(
    folder: str | Path,
    shape: tuple[int, int, int] = (24, 26, 20),
    n_voxels: int = 80,
    latent_size: int = 8,
    image_size: int = 8,
    n_stimuli: int = 6,
    tr: float = 2.0,
    seed: int = 0,
    anatomy: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    onnx_dir: str | Path | None = None,
) -> SynthBundle:
    """Write a valid bundle to ``folder`` (created) with ``service.bundle.write_manifest``.

    ``anatomy`` (data, affine, brain mask) replaces the synthetic head, and then the mask is the ``n_voxels``
    brain voxels nearest a posterior-ventral point (a face-area-like blob). ``onnx_dir`` holds a real
    ``decoder.onnx``/``encoder.onnx`` pair (e.g. an exported small-64 VAE-GAN) to use instead of the MatMul
    graphs; ``latent_size`` and ``image_size`` must then match it.
    """
    import shutil

    import nibabel as nib

    from service.bundle import write_manifest

    rng = np.random.default_rng(seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if anatomy is None:
        reference, brain = _anatomy(shape, rng)
        vox = (3.0, 3.0, 3.5)
        affine = np.diag([*vox, 1.0])
        affine[:3, 3] = -np.array(vox) * (np.array(shape) - 1) / 2.0
        candidates = np.flatnonzero(brain.ravel())
        chosen = np.sort(rng.choice(candidates, size=min(n_voxels, candidates.size), replace=False))
    else:
        reference, affine, brain = (np.asarray(a) for a in anatomy)
        reference = reference.astype(np.float32)
        ijk = np.argwhere(brain)
        world = ijk @ affine[:3, :3].T + affine[:3, 3]
        centre = np.array([0.0, -60.0, -15.0])  # mm: ventral occipito-temporal cortex
        nearest = np.argsort(((world - centre) ** 2).sum(1))[:n_voxels]
        chosen = np.sort(np.ravel_multi_index(tuple(ijk[nearest].T), brain.shape))
    mask = np.zeros(reference.size, bool)
    mask[chosen] = True
    mask = mask.reshape(reference.shape)
    nib.save(nib.Nifti1Image(reference, affine), folder / "reference.nii.gz")
    nib.save(nib.Nifti1Image(mask.astype(np.uint8), affine), folder / "mask.nii.gz")
    v = int(mask.sum())
    encoding = rng.normal(size=(latent_size, v)).astype(np.float32)
    if onnx_dir is None:
        weights = np.linalg.pinv(encoding).astype(np.float32)  # [V, L]
    else:  # realistic scale (benchmark): a plain random map of the same size
        weights = (rng.normal(size=(v, latent_size)) / np.sqrt(v)).astype(np.float32)
    np.savez(
        folder / "mapping.npz",
        weights=weights,
        bias=np.zeros(latent_size, np.float32),
        x_mean=np.zeros(v, np.float32),
        x_scale=np.ones(v, np.float32),
        method=np.array("ridge"),
    )
    if onnx_dir is None:
        dec, enc, _ = _onnx_models(latent_size, image_size, rng)
        (folder / "decoder.onnx").write_bytes(dec)
        (folder / "encoder.onnx").write_bytes(enc)
    else:
        for name in ("decoder.onnx", "encoder.onnx"):
            shutil.copyfile(Path(onnx_dir) / name, folder / name)
    stim_latents = rng.normal(size=(n_stimuli, latent_size)).astype(np.float32)
    n_test = max(1, n_stimuli // 3)
    ids = tuple(f"train/train_{i:05d}.png" for i in range(n_stimuli - n_test)) + tuple(
        f"test/test_{i:02d}.png" for i in range(n_test)
    )
    np.savez(
        folder / "attributes.npz",
        names=np.array(["Male", "Smiling"]),
        directions=rng.normal(size=(2, latent_size)).astype(np.float32),
        train_ids=np.array(ids[: n_stimuli - n_test]),
        train_latents=stim_latents[: n_stimuli - n_test],
        test_ids=np.array(ids[n_stimuli - n_test :]),
        test_latents=stim_latents[n_stimuli - n_test :],
    )
    write_manifest(
        folder,
        {
            "latent_size": latent_size,
            "image_shape": [image_size, image_size, 3],
            "n_voxels": v,
            "tr": tr,
            "mapping_method": "ridge",
            "trial_window": {"start": 4.0, "stop": 8.0, "baseline_start": -2.0, "baseline_stop": 0.0},
            "training": {"source": "synthetic (fmriface.benchmarks.synth)"},
        },
    )
    return SynthBundle(folder, encoding, ids, stim_latents, reference, mask, affine, tr)


def make_run(
    sb: SynthBundle,
    trials: list[tuple[float, int]],
    n_volumes: int,
    amplitude: float = 30.0,
    noise: float = 2.0,
    drift: float = 20.0,
    seed: int = 1,
) -> np.ndarray:
    """Volumes [T, X, Y, Z] float32: the reference plus drift, noise and each trial's HRF-shaped pattern.

    ``trials`` are ``(onset_s, stimulus_index)``; a trial's mask voxels follow ``hrf(t - onset) * z @ E``.
    """
    rng = np.random.default_rng(seed)
    times = np.arange(n_volumes) * sb.tr
    signal = np.zeros((n_volumes, sb.encoding.shape[1]), np.float64)
    for onset, s in trials:
        h = hrf(times - onset) / hrf(np.array([5.0]))[0]
        signal += h[:, None] * (sb.stim_latents[s] @ sb.encoding)[None, :]
    data = np.repeat(sb.reference[None], n_volumes, axis=0).astype(np.float32)
    ramp = drift * (times / max(times[-1], 1.0))[:, None, None, None]
    data += (ramp * (sb.reference > 100)).astype(np.float32)
    data += rng.normal(scale=noise, size=data.shape).astype(np.float32)
    flat = data.reshape(n_volumes, -1)
    flat[:, np.flatnonzero(sb.mask)] += (amplitude * signal).astype(np.float32)
    return data
