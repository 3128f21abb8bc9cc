"""Procedural faces: API shapes, determinism, attributes that match the pixels, anti-aliasing, the command."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest

from offline.faces import (
    ATTRIBUTE_NAMES,
    PARAM_NAMES,
    attributes_from_params,
    iter_faces,
    render_faces,
    sample_params,
    write_faces,
)


def _hashes(folder) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_names_and_shapes():
    assert len(PARAM_NAMES) >= 12
    for name in ("Male", "Smiling", "Eyeglasses", "Black_Hair", "Blond_Hair", "Brown_Hair", "Gray_Hair"):
        assert name in ATTRIBUTE_NAMES
    params = sample_params(7, np.random.default_rng(3))
    assert params.dtype == np.float32 and params.shape == (7, len(PARAM_NAMES))
    assert params.min() >= 0.0 and params.max() <= 1.0
    images = render_faces(params, 48)
    assert images.dtype == np.uint8 and images.shape == (7, 48, 48, 3)
    attrs = attributes_from_params(params)
    assert attrs.dtype == np.int8 and attrs.shape == (7, len(ATTRIBUTE_NAMES))
    assert set(np.unique(attrs)) <= {-1, 1}


def test_attribute_rates_are_plausible():
    attrs = attributes_from_params(sample_params(4000, np.random.default_rng(0)))
    share = dict(zip(ATTRIBUTE_NAMES, (attrs == 1).mean(0)))
    assert 0.45 < share["Male"] < 0.55
    assert 0.3 < share["Smiling"] < 0.6
    assert 0.12 < share["Eyeglasses"] < 0.3
    hair = sum(share[k] for k in ("Black_Hair", "Brown_Hair", "Blond_Hair", "Gray_Hair"))
    assert hair == pytest.approx(1.0)  # exactly one hair colour per face
    male = attrs[:, ATTRIBUTE_NAMES.index("Male")] == 1
    beard = attrs[:, ATTRIBUTE_NAMES.index("No_Beard")] == -1
    assert not (beard & ~male).any() and beard[male].mean() > 0.25


def test_iterator_matches_written_faces_whatever_the_batch(tmp_path):
    table = write_faces(tmp_path, 10, 32, seed=5)
    it = iter_faces(4, 32, seed=5)
    images = np.concatenate([next(it)[0] for _ in range(3)])[:10]
    from PIL import Image

    for i in range(10):
        assert np.array_equal(np.asarray(Image.open(tmp_path / f"face_{i:05d}.png")), images[i])
    attrs = pd.read_csv(tmp_path / "attributes.csv")
    assert list(attrs.columns) == ["image_id", *ATTRIBUTE_NAMES]
    params = pd.read_csv(tmp_path / "params.csv")
    assert list(params.columns) == ["image_id", *PARAM_NAMES]
    assert list(table["image_id"]) == [f"face_{i:05d}.png" for i in range(10)]
    again = attributes_from_params(params[list(PARAM_NAMES)].to_numpy(np.float32))
    assert np.array_equal(again, attrs[list(ATTRIBUTE_NAMES)].to_numpy())


def test_same_seed_same_files(tmp_path):
    write_faces(tmp_path / "a", 6, 40, seed=11)
    write_faces(tmp_path / "b", 6, 40, seed=11)
    write_faces(tmp_path / "c", 6, 40, seed=12)
    assert _hashes(tmp_path / "a") == _hashes(tmp_path / "b")
    assert _hashes(tmp_path / "a")["face_00000.png"] != _hashes(tmp_path / "c")["face_00000.png"]


def _with(params: np.ndarray, **values: float) -> np.ndarray:
    out = params.copy()
    for name, v in values.items():
        out[:, PARAM_NAMES.index(name)] = v
    return out


def test_attributes_show_in_the_right_place():
    base = _with(sample_params(8, np.random.default_rng(1)), glasses=0.1, smile=0.3, yaw=0.5, roll=0.5)
    base = _with(base, shift_x=0.5, shift_y=0.5, scale=0.5)
    size = 64
    plain = render_faces(base, size).astype(float)
    glasses = render_faces(_with(base, glasses=0.95), size).astype(float)
    smile = render_faces(_with(base, smile=0.95), size).astype(float)
    assert (attributes_from_params(_with(base, glasses=0.95))[:, ATTRIBUTE_NAMES.index("Eyeglasses")] == 1).all()
    rows = np.arange(size)
    for changed, lo, hi in ((glasses, 0.35, 0.62), (smile, 0.3, 0.85)):
        diff = np.abs(changed - plain).sum(axis=(2, 3))  # [n, rows]
        inside = diff[:, (rows >= lo * size) & (rows < hi * size)].sum(1)
        assert (inside > 0.8 * diff.sum(1)).all()  # the change sits where the feature is
        assert (diff.sum(1) > 500).all()  # and it is visible


def test_edges_are_anti_aliased():
    params = sample_params(6, np.random.default_rng(2))
    small = render_faces(params, 64).astype(float)
    big = render_faces(params, 128).astype(float)
    down = big.reshape(6, 64, 2, 64, 2, 3).mean((2, 4))
    # Without anti-aliasing, every edge pixel would differ by a full step; with it, sizes agree closely.
    assert np.abs(small - down).mean() < 4.0
    assert len(np.unique(small[0].reshape(-1, 3), axis=0)) > 500


def test_faces_command(tmp_path):
    from fmriface.commands import faces

    out = tmp_path / "f"
    assert faces.main(["--n", "5", "--size", "32", "--seed", "2", "--out", str(out), "--json"]) == 0
    assert len(list(out.glob("face_*.png"))) == 5
    assert (out / "attributes.csv").is_file() and (out / "params.csv").is_file()
    from fmriface.common import UsageError

    with pytest.raises(UsageError, match="not empty"):
        faces.main(["--n", "5", "--size", "32", "--out", str(out)])
    assert faces.main(["--n", "3", "--size", "32", "--out", str(out), "--force"]) == 0
    assert len(list(out.glob("face_*.png"))) == 3
    with pytest.raises(UsageError, match="--n"):
        faces.main(["--n", "0", "--out", str(tmp_path / "g")])


def test_rendering_does_not_depend_on_the_batch():
    params = sample_params(12, np.random.default_rng(9))
    together = render_faces(params, 80, batch_size=12)
    alone = np.concatenate([render_faces(params[i : i + 1], 80, batch_size=1) for i in range(12)])
    assert np.array_equal(together, alone)
