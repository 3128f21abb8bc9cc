"""ONNX export of the VAE-GAN decoder and encoder, with a parity check against torch at every export.

Contract (docs/bundle.md): ``decoder.onnx`` maps ``latent [N, L] float32`` to ``image [N, 3, H, W] float32``
in [0, 1]; ``encoder.onnx`` maps ``image [N, 3, H, W]`` in [0, 1] to ``latent [N, L]`` (z_mu). Both have a dynamic
batch axis and are single files (weights inside, no external data). onnx and onnxruntime are imported on use.
"""

from __future__ import annotations

import copy
import io
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.encoder import EncoderMu
from models.vaegan import VAEGAN

__all__ = ["ExportError", "export_onnx", "export_decoder", "PARITY_TOLERANCE", "OPSET"]

#: Largest allowed max-abs difference between onnxruntime and torch outputs.
PARITY_TOLERANCE = 1e-4
OPSET = 17


class ExportError(RuntimeError):
    """The exported graph does not reproduce torch within the tolerance (or could not be written)."""

    user_error = True


def _export(module: torch.nn.Module, example: torch.Tensor, path: Path, in_name: str, out_name: str) -> None:
    buf = io.BytesIO()
    # The TorchScript-based exporter writes one self-contained protobuf (no external data, no onnxscript needed);
    # its deprecation notice is expected and silenced here, where the choice is made.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            module,
            (example,),
            buf,
            input_names=[in_name],
            output_names=[out_name],
            dynamic_axes={in_name: {0: "batch"}, out_name: {0: "batch"}},
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    path.write_bytes(buf.getvalue())


def export_decoder(model: VAEGAN, path: str | Path) -> Path:
    """Write the decoder alone (eval mode, CPU) to ``path`` without a parity check (benchmarks)."""
    path = Path(path)
    m = copy.deepcopy(model).cpu().eval()
    _export(m.decoder, torch.zeros(1, m.cfg.latent_size), path, "latent", "image")
    return path


def _max_abs(session: Any, name: str, module: torch.nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad():
        want = module(x).numpy()
    got = session.run(None, {name: x.numpy()})[0]
    if got.shape != want.shape:
        raise ExportError(f"onnxruntime output shape {got.shape} differs from torch's {want.shape}")
    return float(np.max(np.abs(got - want)))


def export_onnx(
    model: VAEGAN,
    out_dir: str | Path,
    real_images: np.ndarray | torch.Tensor | None = None,
    n_random: int = 8,
    seed: int = 0,
    tolerance: float = PARITY_TOLERANCE,
) -> dict[str, Any]:
    """Write ``decoder.onnx`` and ``encoder.onnx`` into ``out_dir`` and check them against torch.

    Parameters
    ----------
    model : VAEGAN
        Exported in eval mode (moving batch-norm statistics, clipped output) on the CPU; the model itself is
        left untouched.
    out_dir : path
        Existing or new folder.
    real_images : array [N, 3, H, W] float32 in [0, 1], optional
        Real faces: their encoder latents are the "real latents" of the decoder check and they are the real
        inputs of the encoder check.
    n_random, seed : int
        Number and seed of the random latents (uniform in [-1, 1], the range of z_mu) and random images.
    tolerance : float
        Largest allowed max-abs difference.

    Returns
    -------
    dict
        ``{"decoder": {...}, "encoder": {...}, "tolerance", "opset"}`` with the max-abs differences on random and
        real inputs and the file sizes.

    Raises
    ------
    ExportError
        A difference above ``tolerance``.
    """
    import onnx
    import onnxruntime as ort

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    m = copy.deepcopy(model).cpu().eval()
    size, latent = m.cfg.image_size, m.cfg.latent_size
    gen = torch.Generator().manual_seed(seed)
    rand_z = torch.rand(n_random, latent, generator=gen) * 2 - 1
    rand_x = torch.rand(n_random, 3, size, size, generator=gen)
    real_x = None if real_images is None else torch.as_tensor(np.asarray(real_images, dtype=np.float32))
    encoder = EncoderMu(m.encoder).eval()

    report: dict[str, Any] = {"tolerance": tolerance, "opset": OPSET, "latent_size": latent, "image_size": size}
    specs = (
        ("decoder", m.decoder, rand_z[:1], "latent", "image"),
        ("encoder", encoder, rand_x[:1], "image", "latent"),
    )
    for name, module, example, in_name, out_name in specs:
        path = out_dir / f"{name}.onnx"
        _export(module, example, path, in_name, out_name)
        onnx.checker.check_model(str(path))
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        if name == "decoder":
            real = None if real_x is None else encoder(real_x).detach()
            rnd = rand_z
        else:
            real, rnd = real_x, rand_x
        entry = {
            "file": path.name,
            "bytes": path.stat().st_size,
            "max_abs_random": _max_abs(session, in_name, module, rnd),
        }
        if real is not None:
            entry["max_abs_real"] = _max_abs(session, in_name, module, real)
            entry["n_real"] = int(real.shape[0])
        worst = max(v for k, v in entry.items() if k.startswith("max_abs"))
        entry["ok"] = worst <= tolerance
        report[name] = entry
        if not entry["ok"]:
            raise ExportError(f"{path}: onnxruntime differs from torch by {worst:.2e} > {tolerance:.0e}")
    return report
