"""ONNX export: single files, dynamic batch, parity with torch within 1e-4."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from models.config import preset
from models.export import ExportError, export_onnx
from models.vaegan import VAEGAN

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def model() -> VAEGAN:
    torch.manual_seed(5)
    m = VAEGAN(preset("small-64", latent_size=32))
    # Non-trivial batch-norm statistics, as after training.
    m.train()
    with torch.no_grad():
        for _ in range(3):
            m.decoder(torch.randn(16, 32))
            m.encoder(torch.rand(16, 3, 64, 64))
    return m.eval()


def test_export_parity_single_file_dynamic_batch(model: VAEGAN, tmp_path: Path, rng: np.random.Generator) -> None:
    real = rng.random((5, 3, 64, 64), dtype=np.float32)
    report = export_onnx(model, tmp_path, real_images=real)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["decoder.onnx", "encoder.onnx"]  # no external data
    for name in ("decoder", "encoder"):
        assert report[name]["ok"] and report[name]["max_abs_random"] <= 1e-4 and report[name]["max_abs_real"] <= 1e-4
        assert report[name]["n_real"] == 5
    dec = onnx.load(str(tmp_path / "decoder.onnx"))
    assert dec.graph.input[0].name == "latent" and dec.graph.output[0].name == "image"
    assert dec.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # symbolic batch axis
    sess = ort.InferenceSession(str(tmp_path / "decoder.onnx"), providers=["CPUExecutionProvider"])
    z = rng.uniform(-1, 1, (3, 32)).astype(np.float32)
    out = sess.run(None, {"latent": z})[0]
    assert out.shape == (3, 3, 64, 64) and out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 1.0
    with torch.no_grad():
        np.testing.assert_allclose(out, model.decoder(torch.from_numpy(z)).numpy(), atol=1e-4)
    enc = ort.InferenceSession(str(tmp_path / "encoder.onnx"), providers=["CPUExecutionProvider"])
    assert enc.run(None, {"image": real[:2]})[0].shape == (2, 32)
    assert not model.training  # the export leaves the model as it was


def test_parity_failure_is_an_error(model: VAEGAN, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="differs from torch"):
        export_onnx(model, tmp_path, tolerance=-1.0)
