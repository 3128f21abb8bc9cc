"""The ds001761 derivatives reader on tiny MATLAB v7.3-style (HDF5) files made here."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from fmriface.commands.evaluate import main as evaluate_main
from offline.decoding.released import Ds001761Error, evaluate_subject, find_subject_dir, read_decoder, read_patterns

LATENT, VOXELS, N_TEST, N_MASK = 12, 40, 6, 55


def _mat(path, **arrays):
    """Write arrays as MATLAB does in v7.3 files: HDF5 with a 512-byte user block, column-major (transposed)."""
    with h5py.File(path, "w", userblock_size=512) as f:
        for name, arr in arrays.items():
            f.create_dataset(name, data=np.asarray(arr).T)


@pytest.fixture
def derivatives(tmp_path, rng):
    sub = tmp_path / "derivatives" / "sub-02"
    sub.mkdir(parents=True)
    w = rng.normal(size=(LATENT + 1, VOXELS))  # MATLAB W: 1025 x voxels (latents, then the bias row)
    z = rng.uniform(-1, 1, size=(N_TEST, LATENT))
    y = np.hstack([z, np.ones((N_TEST, 1))]) @ w + 0.3 * rng.normal(size=(N_TEST, VOXELS))
    valid = np.sort(rng.choice(N_MASK, VOXELS, replace=False)) + 1  # 1-based
    full = rng.normal(size=(N_TEST, N_MASK))
    full[:, valid - 1] = y
    _mat(sub / "ROI_VAEGAN.mat", W=w, invcovW=np.linalg.inv(w @ w.T), validindices=valid[None, :])
    _mat(sub / "test_patterns.mat", vol=full)  # patterns over the whole mask: validindices selects
    _mat(sub / "test_images.mat", testimage_vaeganlatentvars=z)
    return tmp_path / "derivatives", w, z, y


def test_reader_transposes_and_decodes_like_the_authors(derivatives):
    root, w, z, y = derivatives
    folder = find_subject_dir(root, 2)
    dec = read_decoder(folder, latent_size=LATENT)
    np.testing.assert_allclose(dec.w, w)  # back to MATLAB's orientation
    patterns = read_patterns(folder, VOXELS)
    np.testing.assert_allclose(patterns, y)
    decoded = dec.decode(patterns)
    expected = np.linalg.solve(w @ w.T, w @ y.T).T[:, :LATENT]
    np.testing.assert_allclose(decoded, expected, atol=1e-8)
    assert np.corrcoef(decoded.ravel(), z.ravel())[0, 1] > 0.9


def test_evaluate_subject_scores_pairwise(derivatives):
    root, *_ = derivatives
    res = evaluate_subject(root, "02", latent_size=LATENT)
    assert res["vaegan"]["latent"]["accuracy"] == 1.0
    assert res["vaegan"]["latent"]["n_items"] == N_TEST
    assert "pca" not in res


def test_evaluate_command(derivatives, capsys, tmp_path):
    root, *_ = derivatives
    out = tmp_path / "eval.json"
    assert (
        evaluate_main(
            [
                "--ds001761-derivatives",
                str(root),
                "--subject",
                "2",
                "--latent-size",
                str(LATENT),
                "--out",
                str(out),
                "--json",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert '"accuracy": 1.0' in printed and out.is_file()


def test_bad_layouts_are_named(derivatives, tmp_path):
    root, *_ = derivatives
    with pytest.raises(Ds001761Error, match="no ROI_VAEGAN.mat for subject 3"):
        find_subject_dir(root, 3)
    with pytest.raises(Ds001761Error, match="expected 1025 x voxels"):
        read_decoder(find_subject_dir(root, 2), latent_size=1024)
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "ROI_VAEGAN.mat").write_bytes(b"not hdf5")
    with pytest.raises(Ds001761Error, match="not a MATLAB v7.3"):
        read_decoder(tmp_path / "x", latent_size=LATENT)
