"""The shipped reference face space: packing a train-vaegan output in float16 with its parity measured, the
manifest's hashes checked before use, and the face-space folder the demo's fit reads."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fmriface.demo import reference as ref
from fmriface.demo.steps import DemoConfig, _facespace_step


def _run_folder(tmp_path, latent=64):
    """A train-vaegan-shaped output: a small-64 network (seeded, untrained) with its records."""
    from models.checkpoint import save_checkpoint
    from models.config import preset
    from models.vaegan import VAEGAN
    from offline.facespace.vaegan import write_vaegan_meta

    torch.manual_seed(0)
    model = VAEGAN(preset("small-64", latent)).eval()
    run = tmp_path / "run"
    run.mkdir()
    save_checkpoint(run / "checkpoint.pt", model, step=12)
    quality = {"heldout_pixel_corr": 0.5, "attribute_readout": {"Male": 0.8, "Smiling": 0.5}}
    write_vaegan_meta(run, model.cfg, "resize", quality=quality)
    cfg = {"data": "procedural", "seed": 0, "n_held_out": 8, "batch_size": 8, "threads": 1}
    (run / "train_config.json").write_text(json.dumps(cfg))
    held = ref._held_out_faces(run, 64)
    np.save(run / "heldout_faces.npy", held)
    return run, model


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("reference")
    run, model = _run_folder(tmp)
    manifest = ref.pack_reference(run, tmp / "ref", command="fmriface train-vaegan --config vaegan-tiny")
    return run, model, tmp / "ref", manifest


def test_fp16_state_halves_the_matrices_drops_the_training_head_and_loads_back():
    from models.config import preset
    from models.vaegan import VAEGAN

    torch.manual_seed(1)
    model = VAEGAN(preset("small-64", 32)).eval()
    state = ref.fp16_state(model.state_dict())
    assert not any(k.startswith("encoder.fc_log_sigma") for k in state)
    assert state["decoder.fc.weight"].dtype == torch.float16
    assert state["decoder.fc.bias"].dtype == torch.float32  # 1-D tensors stay float32
    assert state["encoder.features.1.running_var"].dtype == torch.float32
    again = VAEGAN(preset("small-64", 32))
    again.load_state_dict(ref.full_state(state, again))  # strict: every key present
    assert torch.count_nonzero(again.encoder.fc_log_sigma.weight) == 0
    assert torch.allclose(again.decoder.fc.weight, model.decoder.fc.weight, atol=1e-3)


def test_pack_measures_float16_parity_and_lists_every_file_with_its_hash(packed):
    run, _, folder, manifest = packed
    p = manifest["parity"]
    assert p["n_faces"] == 8
    assert p["decoded_max_abs"] <= ref.IMAGE_TOLERANCE
    assert abs(p["heldout_pixel_corr_fp32"] - p["heldout_pixel_corr_fp16"]) <= ref.CORR_TOLERANCE
    names = set(manifest["files"])
    assert {ref.WEIGHTS, ref.CARD, "facespace.json", "heldout_faces.npy", "train_config.json"} <= names
    for name, f in manifest["files"].items():
        assert ref.sha256(folder / name) == f["sha256"]
    card = (folder / ref.CARD).read_text()
    assert manifest["files"][ref.WEIGHTS]["sha256"] in card and "fmriface train-vaegan --config vaegan-tiny" in card
    assert "| Male | 0.80 |" in card
    assert ref.verify_reference(folder) == json.loads((folder / ref.MANIFEST).read_text())


def test_a_materialised_reference_is_the_face_space_the_fit_reads(packed, tmp_path):
    from offline.facespace import load_facespace

    run, _, folder, _ = packed
    out = ref.materialise_reference(folder, tmp_path / "vaegan")
    space, original = load_facespace(out), load_facespace(run)
    held = np.load(run / "heldout_faces.npy")
    z, z32 = space.encode(held), original.encode(held)
    assert np.abs(z - z32).max() < 0.02
    assert np.abs(space.decode(z32) - original.decode(z32)).max() <= ref.IMAGE_TOLERANCE
    assert space.framing == "resize"
    assert space.features(held).shape == original.features(held).shape  # the discriminator came along


@pytest.mark.parametrize("damage", ["flip", "lfs", "missing", "no-manifest"])
def test_a_damaged_reference_is_refused_with_the_file_named(packed, tmp_path, damage):
    import shutil

    _, _, folder, _ = packed
    copy = tmp_path / "ref"
    shutil.copytree(folder, copy)
    weights = copy / ref.WEIGHTS
    if damage == "flip":
        data = bytearray(weights.read_bytes())
        data[-100] ^= 0xFF
        weights.write_bytes(bytes(data))
        match = "SHA-256"
    elif damage == "lfs":
        weights.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 1\n")
        match = "Git LFS pointer"
    elif damage == "missing":
        weights.unlink()
        match = "is missing"
    else:
        (copy / ref.MANIFEST).unlink()
        match = "no reference face space"
    with pytest.raises(ref.ReferenceError, match=match) as err:
        ref.verify_reference(copy)
    assert "--train-facespace" in str(err.value)


def test_the_demo_uses_a_reference_by_path_and_reuses_it_while_its_hashes_hold(packed, tmp_path):
    _, _, folder, _ = packed
    cfg = DemoConfig(facespace="reference", reference=str(folder))
    out = tmp_path / "demo"
    out.mkdir()
    vaegan, seconds = _facespace_step(cfg, out)
    assert (vaegan / "checkpoint.pt").is_file() and (vaegan / "facespace.json").is_file() and seconds is not None
    assert _facespace_step(cfg, out) == (vaegan, None)  # reused
    with pytest.raises(ValueError, match="facespace"):
        DemoConfig(facespace="download")


def test_the_shipped_reference_verifies_and_fits_the_budget():
    folder = ref.reference_dir()
    if not (folder / ref.MANIFEST).is_file():
        pytest.skip(f"no reference face space packed at {folder} yet")
    manifest = ref.verify_reference(folder)
    assert sum(f["bytes"] for f in manifest["files"].values()) <= ref.MAX_BYTES
    assert manifest["parity"]["decoded_max_abs"] <= ref.IMAGE_TOLERANCE
    assert manifest["network"] == "small-64" and manifest["latent_size"] == 1024
    assert manifest["files"]["MODEL_CARD.md"]["sha256"] == ref.sha256(folder / "MODEL_CARD.md")


def test_the_card_says_when_the_cap_not_the_plateau_ended_training():
    cfg = {"max_minutes": 60.0, "plateau_checks": 6, "plateau_tol": 0.002}
    assert "Not at its plateau" in ref._not_converged({"stop_reason": "max_minutes"}, cfg)
    assert ref._not_converged({"stop_reason": "plateau"}, cfg) == ""
