"""The bundle writer: every file, hashes that the service's loader checks, refusal of tampered bundles."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from offline.decoding.bundle_writer import AttributeDirections, LinearMap, StimulusLatents, write_bundle
from service.bundle import BUNDLE_FILES, BundleError, load_bundle

LATENT, H, W = 5, 6, 4


def _linear_onnx(path: Path, n_in: int, out_shape: tuple[int, ...], weights: np.ndarray, name: str) -> None:
    """A real single-file ONNX graph: x [N, n_in] -> sigmoid(x @ weights) reshaped to [N, *out_shape]."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", n_in])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", *out_shape])
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"]),
        helper.make_node("Sigmoid", ["h"], ["s"]),
        helper.make_node("Reshape", ["s", "shape"], ["y"]),
    ]
    inits = [
        numpy_helper.from_array(weights.astype(np.float32), "w"),
        numpy_helper.from_array(np.array([-1, *out_shape], dtype=np.int64), "shape"),
    ]
    graph = helper.make_graph(nodes, name, [x], [y], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def _export(rng):
    def export(folder: Path) -> dict:
        _linear_onnx(folder / "decoder.onnx", LATENT, (3, H, W), rng.normal(size=(LATENT, 3 * H * W)), "decoder")
        _linear_onnx(folder / "encoder.onnx", 3 * H * W, (LATENT,), rng.normal(size=(3 * H * W, LATENT)), "enc")
        (folder / "parity.json").write_text("{}")  # an extra file the bundle must not keep
        return {"decoder_max_abs_diff": 0.0}

    return export


@pytest.fixture
def bundle_dir(tmp_path, rng):
    shape = (7, 8, 9)
    mask = rng.random(shape) > 0.7
    v = int(mask.sum())
    affine = np.diag([3.0, 3.0, 3.5, 1.0])
    affine[:3, 3] = [-10.0, -12.0, -14.0]
    lm = LinearMap(
        weights=rng.normal(size=(v, LATENT)).astype(np.float32),
        bias=rng.normal(size=LATENT).astype(np.float32),
        x_mean=rng.normal(size=v).astype(np.float32),
        x_scale=rng.uniform(0.5, 2, size=v).astype(np.float32),
        method="ridge",
    )
    out = tmp_path / "bundle"
    bundle = write_bundle(
        out,
        reference=rng.normal(size=shape).astype(np.float32) + 100,
        affine=affine,
        mask=mask,
        linear_map=lm,
        export_onnx=_export(rng),
        attributes=AttributeDirections(["Male", "Smiling"], rng.normal(size=(2, LATENT))),
        train=StimulusLatents(
            ["train/train_00000.png", "train/train_00001.png", "train/train_00002.png"], rng.normal(size=(3, LATENT))
        ),
        test=StimulusLatents(["test/test_00.png"], rng.normal(size=(1, LATENT))),
        manifest_fields={"image_shape": [H, W, 3], "tr": 2.0, "window": {"start": 4.0, "stop": 8.0}},
    )
    return out, bundle, lm, mask, affine


def test_bundle_has_exactly_the_design_files_and_loads(bundle_dir, rng):
    out, bundle, lm, mask, affine = bundle_dir
    assert sorted(p.name for p in out.iterdir()) == sorted([*BUNDLE_FILES, "manifest.json"])
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["latent_size"] == LATENT and manifest["n_voxels"] == int(mask.sum())
    assert manifest["mapping_method"] == "ridge" and manifest["tr"] == 2.0
    assert manifest["onnx_export"] == {"decoder_max_abs_diff": 0.0}
    assert set(manifest["files"]) == set(BUNDLE_FILES)
    loaded = load_bundle(out)
    np.testing.assert_array_equal(loaded.mask, mask)
    np.testing.assert_allclose(loaded.affine, affine)
    np.testing.assert_array_equal(loaded.weights, lm.weights)
    assert loaded.stimulus_latent("train_00001.png").shape == (LATENT,)
    assert loaded.attribute_names == ("Male", "Smiling")
    # the stored linear map is what the service computes on the mask's voxels
    volume = rng.normal(size=mask.shape)
    x = volume.ravel()[loaded.voxel_index]
    latent = ((x - loaded.x_mean) / loaded.x_scale) @ loaded.weights + loaded.bias
    assert latent.shape == (LATENT,)


def test_tampered_files_are_refused(bundle_dir):
    out = bundle_dir[0]
    for name in ("mapping.npz", "decoder.onnx", "mask.nii.gz"):
        path = out / name
        original = path.read_bytes()
        data = bytearray(original)
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
        with pytest.raises(BundleError, match=f"{name} does not match the hash"):
            load_bundle(out)
        path.write_bytes(original)
    load_bundle(out)  # restored: accepted again


def test_missing_file_and_wrong_shapes_are_refused(bundle_dir, tmp_path, rng):
    out, _, lm, mask, affine = bundle_dir
    (out / "encoder.onnx").unlink()
    with pytest.raises(BundleError, match="lacks encoder.onnx"):
        load_bundle(out)
    bad = LinearMap(lm.weights[:-1], lm.bias, lm.x_mean[:-1], lm.x_scale[:-1], "ridge")
    with pytest.raises(BundleError, match="voxel weights"):
        write_bundle(
            tmp_path / "bad",
            reference=np.zeros(mask.shape),
            affine=affine,
            mask=mask,
            linear_map=bad,
            export_onnx=_export(rng),
            attributes=AttributeDirections([], np.zeros((0, LATENT))),
            train=StimulusLatents([], np.zeros((0, LATENT))),
            test=StimulusLatents([], np.zeros((0, LATENT))),
            manifest_fields={"image_shape": [H, W, 3], "tr": 2.0},
        )
