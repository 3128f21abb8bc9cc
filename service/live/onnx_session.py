"""onnxruntime sessions for the exported decoder and encoder (no torch).

``make_session`` asks for CUDA only where onnxruntime offers it, then checks which provider the created session
really runs on (``session.get_providers()``): a CUDA build without a usable GPU silently falls back to the CPU,
and the caller is told so. ``decode_fn`` wraps a decoder session as ``latents -> images``; ``warm_up`` runs it a
few times so the first real volume does not pay for lazy initialisation.

Examples
--------
>>> session, provider = make_session("bundle/decoder.onnx", device="auto")  # doctest: +SKIP
>>> decode = decode_fn(session); warm_up(session)
>>> images = decode(latent)  # float32 [N, 3, H, W] in [0, 1]
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from service.extras import missing_extra

__all__ = ["OnnxSessionError", "make_session", "decode_fn", "encode_fn", "warm_up", "to_uint8_hwc"]

_CUDA = "CUDAExecutionProvider"
_CPU = "CPUExecutionProvider"


class OnnxSessionError(RuntimeError):
    """An ONNX file that cannot be loaded or a device that cannot be used; names the file."""

    user_error = True


def _ort():
    try:
        import onnxruntime
    except ImportError:  # pragma: no cover - depends on the install
        raise OnnxSessionError(missing_extra("onnxruntime", "the ONNX decoder", "cpu", "gpu")) from None
    return onnxruntime


def make_session(
    path: str | Path, device: str = "auto", threads: int = 1, inter_op_threads: int = 1
) -> tuple[Any, str]:
    """An onnxruntime InferenceSession for ``path`` and the provider it really uses (``"cuda"`` or ``"cpu"``).

    Parameters
    ----------
    path : path
        An ``.onnx`` file.
    device : {"auto", "cpu", "cuda"}
        ``auto`` uses CUDA when a CUDA session really runs, else the CPU; ``cuda`` raises when it cannot.
    threads, inter_op_threads : int
        onnxruntime thread pools (1 keeps batch-1 latency steady next to the service's other work; 0 lets
        onnxruntime choose).

    Raises
    ------
    OnnxSessionError
        Unreadable or invalid file, unknown device, or ``device="cuda"`` without a working CUDA provider.
    """
    if device not in ("auto", "cpu", "cuda"):
        raise OnnxSessionError(f"device must be auto, cpu or cuda, got {device!r}")
    ort = _ort()
    path = Path(path)
    if not path.is_file():
        raise OnnxSessionError(f"ONNX file {path} does not exist")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = inter_op_threads
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3  # errors only: a CUDA fallback is reported through the returned provider
    want_cuda = device in ("auto", "cuda") and _CUDA in ort.get_available_providers()
    if device == "cuda" and not want_cuda:
        raise OnnxSessionError(
            f"{path}: device 'cuda' requested but this onnxruntime offers {ort.get_available_providers()}"
        )
    providers = [_CUDA, _CPU] if want_cuda else [_CPU]
    try:
        session = ort.InferenceSession(str(path), opts, providers=providers)
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
        if want_cuda and device == "auto":
            try:
                session = ort.InferenceSession(str(path), opts, providers=[_CPU])
            except Exception as exc2:  # noqa: BLE001
                raise OnnxSessionError(f"{path} cannot be loaded by onnxruntime: {exc2}") from None
        else:
            raise OnnxSessionError(f"{path} cannot be loaded by onnxruntime: {exc}") from None
    used = "cuda" if session.get_providers()[0] == _CUDA else "cpu"
    if device == "cuda" and used != "cuda":
        raise OnnxSessionError(
            f"{path}: the CUDA provider could not be initialised (session runs on {session.get_providers()})"
        )
    return session, used


def decode_fn(session: Any) -> Callable[[np.ndarray], np.ndarray]:
    """``latents [L]`` or ``[N, L]`` -> ``float32 [N, 3, H, W]`` in [0, 1] with the decoder session."""
    name = session.get_inputs()[0].name
    latent_size = session.get_inputs()[0].shape[1]

    def decode(latents: np.ndarray) -> np.ndarray:
        z = np.asarray(latents, dtype=np.float32)
        if z.ndim == 1:
            z = z[None]
        if isinstance(latent_size, int) and z.shape[-1] != latent_size:
            raise ValueError(f"the decoder takes latents of size {latent_size}, got shape {z.shape}")
        return session.run(None, {name: np.ascontiguousarray(z)})[0]

    return decode


def encode_fn(session: Any) -> Callable[[np.ndarray], np.ndarray]:
    """``images [N, 3, H, W]`` float32 in [0, 1] (or uint8 ``[N, H, W, 3]``) -> latents ``[N, L]``."""
    name = session.get_inputs()[0].name

    def encode(images: np.ndarray) -> np.ndarray:
        x = np.asarray(images)
        if x.dtype == np.uint8:
            x = (x[None] if x.ndim == 3 else x).transpose(0, 3, 1, 2).astype(np.float32) / 255.0
        return session.run(None, {name: np.ascontiguousarray(x, dtype=np.float32)})[0]

    return encode


def warm_up(session: Any, n: int = 3, batch: int = 1) -> float:
    """Run the session ``n`` times on zeros (first calls allocate); returns the last call's seconds."""
    import time

    inp = session.get_inputs()[0]
    shape = [batch if not isinstance(d, int) else d for d in inp.shape]
    x = np.zeros(shape, np.float32)
    dt = 0.0
    for _ in range(max(1, n)):
        t = time.perf_counter()
        session.run(None, {inp.name: x})
        dt = time.perf_counter() - t
    return dt


def to_uint8_hwc(images: np.ndarray) -> np.ndarray:
    """Decoder output ``float [N, 3, H, W]`` (or one ``[3, H, W]``) in [0, 1] -> ``uint8 [N, H, W, 3]``, C order."""
    x = np.asarray(images)
    if x.ndim == 3:
        x = x[None]
    return np.ascontiguousarray((np.clip(x, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8).transpose(0, 2, 3, 1))
