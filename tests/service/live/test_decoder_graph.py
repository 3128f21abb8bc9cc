"""A valid ONNX graph that is not the bundle's decoder (issue #28): refused at start, naming the file and what is
wrong (inputs, outputs, shapes, types), never with onnxruntime's traceback; ``fmriface serve`` exits with one line."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from fmriface.benchmarks.synth import make_bundle
from service.bundle import BundleError, load_bundle
from service.live.decoder import LatentDecoder
from service.live.serve import Service, StartupError
from tests.service.harness import serve_config

LATENT, SIZE = 6, 10


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return make_bundle(tmp_path_factory.mktemp("bundle") / "b", n_voxels=60, latent_size=LATENT, image_size=SIZE)


def _model(nodes, inputs, outputs, inits=()) -> bytes:
    import onnx
    from onnx import helper

    graph = helper.make_graph(nodes, "wrong", inputs, outputs, list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _wrong_graphs() -> dict[str, tuple[bytes, str]]:
    from onnx import TensorProto, helper, numpy_helper

    f, i64 = TensorProto.FLOAT, TensorProto.INT64
    v = helper.make_tensor_value_info
    img = ["N", 3, SIZE, SIZE]
    return {
        "latent size": (
            _model([helper.make_node("Identity", ["z"], ["y"])], [v("z", f, ["N", 4])], [v("y", f, ["N", 4])]),
            r"input 'z' is tensor\(float\) \[N, 4\], the service feeds latents tensor\(float\) \[N, 6\]",
        ),
        "two inputs": (
            _model(
                [helper.make_node("Add", ["a", "b"], ["y"])],
                [v("a", f, ["N", LATENT]), v("b", f, ["N", LATENT])],
                [v("y", f, ["N", LATENT])],
            ),
            r"takes 2 inputs \('a' .*, 'b' .*\), the service feeds one",
        ),
        "int input": (
            _model([helper.make_node("Identity", ["z"], ["y"])], [v("z", i64, ["N", LATENT])], [v("y", i64, img)]),
            r"input 'z' is tensor\(int64\).*first output 'y' is tensor\(int64\)",
        ),
        "image shape": (
            _model(
                [helper.make_node("Identity", ["z"], ["y"])], [v("z", f, ["N", LATENT])], [v("y", f, ["N", LATENT])]
            ),
            r"first output 'y' is tensor\(float\) \[N, 6\], the manifest's image_shape is \[10, 10, 3\]",
        ),
        "fails when run": (  # declared right, but its reshape cannot hold a [2, 6] latent
            _model(
                [helper.make_node("Reshape", ["z", "shape"], ["y"])],
                [v("z", f, ["N", LATENT])],
                [v("y", f, img)],
                [numpy_helper.from_array(np.array([-1, 3, SIZE, SIZE], np.int64), "shape")],
            ),
            r"cannot decode latents float32 \[N, 6\]: onnxruntime says: .*Reshape",
        ),
    }


@pytest.mark.parametrize("case", list(_wrong_graphs()))
def test_a_wrong_decoder_graph_is_refused_naming_the_file_and_the_fault(synth, tmp_path, case):
    model, message = _wrong_graphs()[case]
    bad = tmp_path / "bad"
    shutil.copytree(synth.path, bad)
    (bad / "decoder.onnx").write_bytes(model)
    with pytest.raises(BundleError, match=message) as err:
        LatentDecoder(load_bundle(bad, verify=False)).build()
    assert str(bad / "decoder.onnx") in str(err.value) and "Traceback" not in str(err.value)
    cfg = serve_config(bad, tmp_path, verify_bundle=False)
    with pytest.raises(StartupError, match=message):
        Service(cfg).start()
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())  # no run left behind


def test_fmriface_serve_with_a_wrong_decoder_exits_with_one_line(synth, tmp_path, capsys, monkeypatch):
    from fmriface import cli

    model, _ = _wrong_graphs()["image shape"]
    bad = tmp_path / "bad"
    shutil.copytree(synth.path, bad)
    (bad / "decoder.onnx").write_bytes(model)
    watch = tmp_path / "watch"
    watch.mkdir()
    monkeypatch.setenv("FMRIFACE_RAISE", "0")
    argv = ["serve", "--bundle", str(bad), "--watch", str(watch), "--runs", str(tmp_path / "runs"), "--no-verify"]
    argv += ["--pub", "tcp://127.0.0.1:*", "--pull", "tcp://127.0.0.1:*"]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert "is not this bundle's decoder" in err and "Traceback" not in err
