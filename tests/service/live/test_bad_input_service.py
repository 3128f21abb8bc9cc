"""Bad input at the service's edges gets a clear error that names the file or value, and the run goes on:
one strict JSON policy (non-finite numbers refused at the socket and never written), validated bundles and
events files. Each case here was a crash, a hang or a silent failure on the old main (issue #16)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fmriface.benchmarks.synth import make_bundle, make_run
from service import jsonsafe, protocol
from service.bundle import BundleError, load_bundle, sha256_file
from service.live.runlog import read_volumes
from service.live.trials import read_events_tsv
from tests.service.harness import make_volume, serve, serve_config

TR = 2.0


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_a_header_with_a_non_finite_number_is_refused_on_the_way_in(literal):
    frames = [b"flip", f'{{"schema": 1, "shown_seq": 0, "flip_time": {literal}}}'.encode(), b""]
    with pytest.raises(protocol.ProtocolError, match="strict JSON"):
        protocol.decode(frames)


def test_a_header_with_nan_is_refused_on_the_way_out_naming_the_field():
    with pytest.raises(protocol.ProtocolError, match=r"frame header: feedback\.value is not a finite number"):
        protocol.encode("frame", {"volume": 3, "feedback": {"value": float("nan")}})
    with pytest.raises(jsonsafe.NonFiniteError, match=r"motion\[2\]"):
        jsonsafe.dumps({"motion": [0.0, 1.0, np.float32("inf")]})


def test_an_image_no_display_can_draw_is_refused():
    header = {"schema": 1, "shape": [1, 1_000_000, 3], "dtype": "uint8"}
    with pytest.raises(protocol.ProtocolError, match="larger than 4096"):
        protocol.decode_image(header, bytes(3_000_000))


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return make_bundle(tmp_path_factory.mktemp("bundle") / "b", n_voxels=60, latent_size=8, image_size=8, tr=TR)


def test_a_nan_flip_ack_is_counted_and_the_run_ends_cleanly(synth, tmp_path, monkeypatch):
    monkeypatch.setenv("FMRIFACE_RAISE", "0")
    n = 6
    data = make_run(synth, [], n, amplitude=0.0, noise=1.0, drift=0.0, seed=1)
    vols = [make_volume(i, data[i], synth.affine, TR) for i in range(n)]
    nan_flip = [b"flip", b'{"schema": 1, "shown_topic": "frame", "shown_seq": 0, "flip_time": NaN}', b""]
    cfg = serve_config(synth.path, tmp_path, max_volumes=n)
    out = serve(cfg, vols, inbound=[nan_flip])
    end = out.topic("end")
    assert end and end[0].header["reason"] == "max_volumes"
    assert out.summary["malformed_inbound"] == 1 and out.summary["volumes_ok"] == n
    manifest = json.loads((out.service.run_dir_ / "manifest.json").read_text())
    assert manifest["state"] == "ended"
    assert len(read_volumes(out.service.run_dir_)) == n


def _edit_manifest(src, dst, change):
    import shutil

    shutil.copytree(src, dst)
    path = dst / "manifest.json"
    manifest = json.loads(path.read_text())
    path.write_text(json.dumps(change(manifest)))
    return dst


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: [m], "must hold a JSON object, not a list"),
        (lambda m: {**m, "n_voxels": "abc"}, "n_voxels is 'abc', not a whole number"),
        (lambda m: {**m, "tr": -2}, "tr is -2; it must be > 0"),
        (lambda m: {**m, "latent_size": 2.5}, "latent_size is 2.5, not a whole number"),
    ],
    ids=["list", "n_voxels-abc", "tr-negative", "latent-float"],
)
def test_a_bad_manifest_is_refused_naming_the_key(synth, tmp_path, change, message):
    folder = _edit_manifest(synth.path, tmp_path / "b", change)
    with pytest.raises(BundleError, match=message) as err:
        load_bundle(folder)
    assert "manifest.json" in str(err.value)


def test_nan_mapping_weights_are_refused_at_start(synth, tmp_path):
    import shutil

    folder = tmp_path / "b"
    shutil.copytree(synth.path, folder)
    mapping = dict(np.load(folder / "mapping.npz"))
    mapping["weights"] = mapping["weights"].copy()
    mapping["weights"][3, 1] = np.nan
    np.savez(folder / "mapping.npz", **mapping)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"]["mapping.npz"] = sha256_file(folder / "mapping.npz")
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"mapping.npz: weights holds 1 NaN or infinite values"):
        load_bundle(folder)


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ("onset\tduration\ttrial_type\n", "holds no trials"),
        ("onset\tduration\ttrial_type\n4.0\t1.0\n", "row 2 has fewer fields"),
        ("onset\tduration\ttrial_type\nnan\t1.0\tface\n", "must be finite"),
        ("onset\tduration\ttrial_type\ninf\t1.0\tface\n", "must be finite"),
        ("onset\tduration\ttrial_type\n-3\t1.0\tface\n", "must not be negative"),
        ("onset\tduration\ttrial_type\nabc\t1.0\tface\n", "not numbers"),
    ],
    ids=["empty", "short-row", "nan", "inf", "negative", "abc"],
)
def test_a_bad_events_file_is_refused_naming_the_file_and_row(tmp_path, rows, message):
    path = tmp_path / "run_events.tsv"
    path.write_text(rows)
    with pytest.raises(ValueError, match=message) as err:
        read_events_tsv(path)
    assert str(path) in str(err.value)


def test_an_events_file_that_is_not_text_is_refused(tmp_path):
    path = tmp_path / "events.tsv"
    path.write_bytes(b"onset\tduration\n\xff\xfe\x00\n")
    with pytest.raises(ValueError, match="not UTF-8"):
        read_events_tsv(path)


def test_records_that_become_unwritable_end_the_run_cleanly_saying_why(synth, tmp_path, monkeypatch):
    from service.live.runlog import RunLog

    monkeypatch.setenv("FMRIFACE_RAISE", "0")
    n = 8
    data = make_run(synth, [], n, amplitude=0.0, noise=1.0, drift=0.0, seed=1)
    vols = [make_volume(i, data[i], synth.affine, TR) for i in range(n)]
    real_volume = RunLog.volume
    written = []

    def disk_full_after_three(self, record, voxels, latent):
        if len(written) >= 3:
            raise OSError(28, "No space left on device")
        written.append(record["volume"])
        return real_volume(self, record, voxels, latent)

    monkeypatch.setattr(RunLog, "volume", disk_full_after_three)
    cfg = serve_config(synth.path, tmp_path, max_volumes=n)
    out = serve(cfg, vols)
    end = out.topic("end")
    assert end, "no end message"
    assert "run records cannot be written" in end[0].header["reason"] and "No space left" in end[0].header["reason"]
    assert written == [0, 1, 2]
