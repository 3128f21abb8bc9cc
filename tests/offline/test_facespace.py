"""The face-space API on the VAE-GAN: save/load, encode/decode, export, features, attribute directions, encode."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from models.config import preset
from models.vaegan import VAEGAN
from offline.facespace import (
    FaceSpace,
    FaceSpaceError,
    VAEGANFaceSpace,
    attribute_directions,
    encode_folder,
    load_facespace,
    perceptual_features,
)

torch.set_num_threads(1)
LATENT = 24


@pytest.fixture(scope="module")
def space_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(2)
    model = VAEGAN(preset("small-64", latent_size=LATENT))
    with torch.no_grad():  # non-trivial batch-norm statistics
        model.train()
        model.decoder(torch.randn(8, LATENT))
        model.encoder(torch.rand(8, 3, 64, 64))
    space = VAEGANFaceSpace(model.eval())
    space.attribute_names = ("Male", "Smiling")
    space.attribute_directions_ = np.arange(2 * LATENT, dtype=np.float32).reshape(2, LATENT)
    return space.save(tmp_path_factory.mktemp("vae"))


def test_save_load_encode_decode(space_dir: Path, rng: np.random.Generator) -> None:
    space = load_facespace(space_dir)
    assert isinstance(space, FaceSpace) and space.name == "vaegan"
    assert (space.latent_size, space.image_size) == (LATENT, 64)
    assert space.attribute_names == ("Male", "Smiling") and space.attribute_directions_.shape == (2, LATENT)
    faces = rng.integers(0, 256, (5, 64, 64, 3), dtype=np.uint8)
    z = space.encode(faces)
    assert z.shape == (5, LATENT) and z.dtype == np.float32 and np.abs(z).max() <= 1
    np.testing.assert_allclose(space.encode(faces.astype(np.float32) / 255), z, atol=1e-6)
    # Another size is resized first; one face without a batch axis is accepted.
    assert space.encode(rng.integers(0, 256, (2, 48, 40, 3), dtype=np.uint8)).shape == (2, LATENT)
    assert space.encode(faces[0]).shape == (1, LATENT)
    img = space.decode(z)
    assert img.shape == (5, 64, 64, 3) and img.dtype == np.float32 and 0 <= img.min() and img.max() <= 1
    assert space.decode(z[0]).shape == (1, 64, 64, 3)
    with pytest.raises(FaceSpaceError, match=f"latents must be \\[N, {LATENT}\\]"):
        space.decode(np.zeros((2, LATENT + 1)))
    with pytest.raises(FaceSpaceError, match="channels last"):
        space.encode(np.zeros((2, 3, 64, 64), np.uint8))


def test_export_onnx_parity_on_real_faces(space_dir: Path, tmp_path: Path, rng: np.random.Generator) -> None:
    space = load_facespace(space_dir)
    report = space.export_onnx(tmp_path, real_images=rng.integers(0, 256, (4, 64, 64, 3), dtype=np.uint8))
    assert report["decoder"]["ok"] and report["encoder"]["ok"] and report["decoder"]["n_real"] == 4
    assert report["decoder"]["max_abs_real"] <= 1e-4 and report["facespace"] == "vaegan"
    assert {p.name for p in tmp_path.iterdir()} == {"decoder.onnx", "encoder.onnx"}


def test_perceptual_features(space_dir: Path, rng: np.random.Generator) -> None:
    faces = rng.integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    feats = perceptual_features(space_dir, faces)
    assert feats.shape[0] == 3 and feats.ndim == 2 and feats.dtype == np.float32
    np.testing.assert_allclose(perceptual_features(load_facespace(space_dir), faces), feats, atol=1e-6)
    assert not np.allclose(feats[0], feats[1])


class _MeanColour(FaceSpace):
    """A hand-made face space: the latent is the mean R, G, B of the face."""

    name, latent_size, image_size = "toy", 3, 4

    def encode(self, images):
        return np.asarray(images, np.float32).mean(axis=(1, 2))

    def decode(self, latents):  # pragma: no cover - not used
        raise NotImplementedError

    def export_onnx(self, out_dir):  # pragma: no cover
        raise NotImplementedError

    def save(self, path):  # pragma: no cover
        raise NotImplementedError


def test_attribute_directions_are_mean_with_minus_mean_without() -> None:
    images = np.zeros((4, 4, 4, 3), np.float32)
    images[0], images[1], images[2], images[3] = 1.0, 0.5, 0.25, 0.0
    attrs = np.array([[1, 1, 1], [1, -1, 1], [-1, -1, 1], [-1, 0, 1]], np.int8)
    names, dirs = attribute_directions(_MeanColour(), images, attrs, ["Male", "Smiling", "Always"])
    assert names == ("Male", "Smiling")  # "Always" has no negative face: dropped
    np.testing.assert_allclose(dirs[0], [0.75 - 0.125] * 3)
    np.testing.assert_allclose(dirs[1], [1.0 - 0.375] * 3)  # 0 counts as unknown
    with pytest.raises(FaceSpaceError, match="attributes must be"):
        attribute_directions(_MeanColour(), images, attrs[:, :2], ["Male", "Smiling", "Always"])


def test_encode_folder_and_commands(space_dir: Path, tmp_path: Path, rng: np.random.Generator) -> None:
    from fmriface.commands.encode import main as encode_main
    from fmriface.commands.export import main as export_main

    stim = tmp_path / "stimuli"
    (stim / "test").mkdir(parents=True)
    faces = rng.integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    for i, face in enumerate(faces):
        Image.fromarray(face).save(stim / "test" / f"test_{i:02d}.png")
    (tmp_path / "order.txt").write_text("test/test_02.png\n\n# comment\ntest/test_00.png\n")
    out = tmp_path / "lat" / "latents.npy"
    assert (
        encode_main(
            [
                "--vaegan",
                str(space_dir),
                "--images",
                str(stim),
                "--list",
                str(tmp_path / "order.txt"),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    lat = np.load(out)
    assert (tmp_path / "lat" / "latents.ids.txt").read_text().split() == ["test/test_02.png", "test/test_00.png"]
    np.testing.assert_allclose(lat, load_facespace(space_dir).encode(faces[[2, 0]]), atol=1e-5)
    ids, all_lat = encode_folder(space_dir, stim)
    assert ids == ["test/test_00.png", "test/test_01.png", "test/test_02.png"] and all_lat.shape == (3, LATENT)
    with pytest.raises(FaceSpaceError, match="missing.*nope.png"):
        encode_folder(space_dir, stim, ["nope.png"])
    (stim / "test" / "test_01.png").write_bytes(b"broken")
    with pytest.raises(FaceSpaceError, match="cannot be read.*test_01.png"):
        encode_folder(space_dir, stim)

    assert export_main(["--vaegan", str(space_dir), "--out", str(tmp_path / "onnx")]) == 0
    manifest = json.loads((tmp_path / "onnx" / "export.json").read_text())
    assert manifest["decoder"]["ok"] and manifest["encoder"]["ok"] and manifest["tolerance"] == 1e-4


def test_not_a_face_space(tmp_path: Path) -> None:
    with pytest.raises(FaceSpaceError, match="no facespace.json"):
        load_facespace(tmp_path)
    (tmp_path / "facespace.json").write_text('{"kind": "gan"}')
    with pytest.raises(FaceSpaceError, match="unknown face space kind"):
        load_facespace(tmp_path)
