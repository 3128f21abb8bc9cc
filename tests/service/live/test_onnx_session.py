"""onnxruntime session helper: the provider really used, decode/encode wrappers, warm-up, bad files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from service.live.onnx_session import (
    OnnxSessionError,
    decode_fn,
    encode_fn,
    make_session,
    to_uint8_hwc,
    warm_up,
)

LATENT, SIZE = 5, 3


def _decoder(path: Path, rng: np.random.Generator) -> np.ndarray:
    """A linear 'decoder' latent [N, 5] -> image [N, 3, 3, 3] (sigmoid), written to ``path``; returns its weights."""
    w = rng.normal(size=(LATENT, 3 * SIZE * SIZE)).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["latent", "w"], ["flat"]),
        helper.make_node("Sigmoid", ["flat"], ["squashed"]),
        helper.make_node("Reshape", ["squashed", "shape"], ["image"]),
    ]
    graph = helper.make_graph(
        nodes,
        "toy",
        [helper.make_tensor_value_info("latent", TensorProto.FLOAT, ["batch", LATENT])],
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, SIZE, SIZE])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.array([-1, 3, SIZE, SIZE], np.int64), "shape")],
    )
    onnx.save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return w


def test_cpu_and_auto_sessions_report_the_provider_really_used(tmp_path: Path, rng: np.random.Generator) -> None:
    w = _decoder(tmp_path / "d.onnx", rng)
    session, used = make_session(tmp_path / "d.onnx", device="cpu", threads=1)
    assert used == "cpu" and session.get_providers()[0] == "CPUExecutionProvider"
    _, auto = make_session(tmp_path / "d.onnx")
    has_cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    assert auto in (("cuda", "cpu") if has_cuda else ("cpu",))
    decode = decode_fn(session)
    z = rng.normal(size=(2, LATENT)).astype(np.float32)
    out = decode(z)
    assert out.shape == (2, 3, SIZE, SIZE) and out.dtype == np.float32
    np.testing.assert_allclose(out.reshape(2, -1), 1 / (1 + np.exp(-(z @ w))), rtol=1e-5)
    assert decode(z[0]).shape == (1, 3, SIZE, SIZE)
    with pytest.raises(ValueError, match="latents of size 5"):
        decode(np.zeros((1, 4), np.float32))
    assert warm_up(session, n=2) >= 0.0


def test_cuda_request_without_cuda_is_an_error(tmp_path: Path, rng: np.random.Generator) -> None:
    _decoder(tmp_path / "d.onnx", rng)
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime offers CUDA")
    with pytest.raises(OnnxSessionError, match="cuda"):
        make_session(tmp_path / "d.onnx", device="cuda")


def test_bad_files_and_devices(tmp_path: Path) -> None:
    with pytest.raises(OnnxSessionError, match="does not exist"):
        make_session(tmp_path / "missing.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(OnnxSessionError, match="bad.onnx cannot be loaded"):
        make_session(bad)
    with pytest.raises(OnnxSessionError, match="auto, cpu or cuda"):
        make_session(bad, device="tpu")


def test_encode_fn_and_uint8_conversion(tmp_path: Path, rng: np.random.Generator) -> None:
    # An 'encoder' that averages each channel: image [N, 3, 3, 3] -> [N, 3].
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["image", "axes"], ["latent"], keepdims=0)],
        "enc",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("latent", TensorProto.FLOAT, ["batch", 3])],
        [numpy_helper.from_array(np.array([2, 3], np.int64), "axes")],
    )
    onnx.save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(tmp_path / "e.onnx"))
    session, _ = make_session(tmp_path / "e.onnx", device="cpu")
    encode = encode_fn(session)
    hwc = rng.integers(0, 256, (2, SIZE, SIZE, 3), dtype=np.uint8)
    np.testing.assert_allclose(encode(hwc), hwc.mean(axis=(1, 2)) / 255.0, rtol=1e-5)
    chw = hwc.transpose(0, 3, 1, 2).astype(np.float32) / 255
    np.testing.assert_allclose(encode(chw), encode(hwc), rtol=1e-6)
    back = to_uint8_hwc(chw)
    assert back.dtype == np.uint8 and back.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(back, hwc)
    assert to_uint8_hwc(chw[0]).shape == (1, SIZE, SIZE, 3)
