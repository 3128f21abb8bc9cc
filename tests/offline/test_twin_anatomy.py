"""The twin's anatomy: EPI contrast, mask, scanner-like affine, from nilearn's MNI152."""

from __future__ import annotations

import numpy as np
import pytest

from offline.twin import grey_matter, make_anatomy
from offline.twin.anatomy import BRAIN_CENTRE_MNI, scanner_affine


def test_default_grid_is_a_typical_epi():
    data, affine, mask = make_anatomy()
    assert data.dtype == np.float32 and data.shape == (64, 64, 36) and mask.dtype == bool
    assert np.allclose(np.abs(np.diag(affine)[:3]), (3.0, 3.0, 3.5))
    assert np.all(np.diag(affine)[:3] > 0)  # RAS+
    centre = affine @ np.array([31.5, 31.5, 17.5, 1.0])
    assert np.linalg.norm(centre[:3]) < 5.0  # the world origin sits at the centre of the grid (and brain)
    ijk = np.argwhere(mask)
    brain_centre = affine[:3, :3] @ ijk.mean(0) + affine[:3, 3]
    assert np.linalg.norm(brain_centre) < 20.0
    assert 1.2e6 < mask.sum() * 3 * 3 * 3.5 < 2.0e6  # a brain of 1.2-2.0 litres
    assert data[~mask].mean() < 0.2 * data[mask].mean()  # dark outside the brain


def test_epi_contrast_csf_grey_white():
    data, _, mask = make_anatomy()
    gm = grey_matter()
    core = data[mask & (gm > 0.7)].mean()
    # White matter: inside the brain, little grey matter, away from the ventricles (the darkest brain voxels).
    low_gm = data[mask & (gm < 0.1)]
    assert np.percentile(low_gm, 25) < core  # white matter darker than grey
    assert np.percentile(data[mask], 99) > 1.2 * core  # CSF brighter than grey


def test_small_non_cubic_grid_and_obliquity():
    data, affine, mask = make_anatomy((20, 24, 16), (9.6, 8.0, 7.875), oblique_deg=10.0)
    assert data.shape == (20, 24, 16) and mask.sum() > 500
    assert np.allclose(affine, scanner_affine((20, 24, 16), (9.6, 8.0, 7.875), 10.0))
    assert np.allclose(np.linalg.norm(affine[:3, :3], axis=0), (9.6, 8.0, 7.875))
    again = make_anatomy((20, 24, 16), (9.6, 8.0, 7.875), oblique_deg=10.0)
    assert np.array_equal(again[0], data)  # deterministic
    again[0][:] = 0  # callers get copies: the cache stays intact
    assert make_anatomy((20, 24, 16), (9.6, 8.0, 7.875), oblique_deg=10.0)[0].max() > 0
    assert BRAIN_CENTRE_MNI.shape == (3,)


def test_bad_grid_is_refused():
    with pytest.raises(ValueError, match="shape"):
        make_anatomy((0, 4, 4))
    with pytest.raises(ValueError, match="voxel_size"):
        make_anatomy((4, 4, 4), (1.0, -1.0, 1.0))
