"""ONNX graphs of the PCA face space, built with ``onnx.helper`` (the same contract as the VAE-GAN export)."""

from __future__ import annotations

import numpy as np

OPSET = 17


def pca_graphs(mean: np.ndarray, components: np.ndarray, size: int):
    """``(decoder, encoder)`` ONNX models: latent ``[N, L]`` -> image ``[N, 3, S, S]`` in [0, 1] and back."""
    from onnx import TensorProto, helper, numpy_helper

    lat, dim = components.shape
    consts = {
        "components": components.astype(np.float32),  # [L, D]
        "components_t": np.ascontiguousarray(components.T.astype(np.float32)),  # [D, L]
        "mean": mean.astype(np.float32),  # [D]
        "zero": np.array(0.0, np.float32),
        "one": np.array(1.0, np.float32),
        "image_shape": np.array([-1, 3, size, size], np.int64),
        "flat_shape": np.array([-1, dim], np.int64),
    }

    def init(*names: str) -> list:
        return [numpy_helper.from_array(consts[n], n) for n in names]

    latent = helper.make_tensor_value_info("latent", TensorProto.FLOAT, ["batch", lat])
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, size, size])
    dec_nodes = [
        helper.make_node("MatMul", ["latent", "components"], ["proj"]),  # [N, D]
        helper.make_node("Add", ["proj", "mean"], ["flat"]),
        helper.make_node("Clip", ["flat", "zero", "one"], ["clipped"]),
        helper.make_node("Reshape", ["clipped", "image_shape"], ["image"]),  # [N, 3, S, S]
    ]
    dec_graph = helper.make_graph(
        dec_nodes, "pca_decoder", [latent], [image], init("components", "mean", "zero", "one", "image_shape")
    )
    enc_nodes = [
        helper.make_node("Reshape", ["image", "flat_shape"], ["flat"]),  # [N, D]
        helper.make_node("Sub", ["flat", "mean"], ["centred"]),
        helper.make_node("MatMul", ["centred", "components_t"], ["latent"]),  # [N, L]
    ]
    enc_graph = helper.make_graph(
        enc_nodes, "pca_encoder", [image], [latent], init("components_t", "mean", "flat_shape")
    )
    opset = [helper.make_opsetid("", OPSET)]
    return (
        helper.make_model(dec_graph, opset_imports=opset, producer_name="fmriface"),
        helper.make_model(enc_graph, opset_imports=opset, producer_name="fmriface"),
    )
