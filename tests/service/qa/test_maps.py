"""The QA maps image: the mask's outline lies exactly on the mask's boundary, the tSNR colour bar spans its stated
range, any matrix and a run's first moments (no mask, tSNR all NaN or zero) render, and rendering is
deterministic."""

from __future__ import annotations

import numpy as np
import pytest

from service.qa import render_maps
from service.qa.maps import OUTLINE, VIRIDIS, choose_slices, maps_layout, tsnr_scale


def _brain(shape: tuple[int, int, int], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """An ellipsoid 'brain' (the mask) over slices 3 .. Z-4, and a mean EPI bright inside it."""
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    mask = (x / 0.7) ** 2 + (y / 0.8) ** 2 + (z / 0.75) ** 2 <= 1
    rng = np.random.default_rng(seed)
    mean = np.where(mask, 800.0, 40.0) + rng.normal(0, 5, shape)
    return mask, mean.astype(np.float32)


def _tile(img: np.ndarray, lay, row: str, k: int) -> np.ndarray:
    r, c = lay.pixel(row, k, 0, lay.shape[1] - 1)  # the tile's top-left pixel
    return img[r : r + lay.tile[0], c : c + lay.tile[1]]


def _voxels(tile: np.ndarray, lay) -> np.ndarray:
    """A tile's pixels back on the voxel grid (X, Y, 3): one pixel per voxel."""
    s = lay.scale
    return np.flip(tile[::s, ::s], axis=0).swapaxes(0, 1)


@pytest.mark.parametrize("shape", [(64, 64, 36), (104, 104, 72), (7, 8, 9)])
def test_the_outline_lies_on_the_masks_boundary_and_nowhere_else(shape):
    mask, mean = _brain(shape)
    tsnr = np.full(shape, 50.0)
    img = render_maps(mean, tsnr, mask)
    zs = choose_slices(mask, shape)
    lay = maps_layout(shape, len(zs))
    assert img.dtype == np.uint8 and img.shape == lay.image_shape and img.ndim == 3
    assert 1 <= len(zs) <= 5 and all(0 <= z < shape[2] for z in zs)
    zmask = np.flatnonzero(mask.any(axis=(0, 1)))
    assert zmask[0] <= min(zs) and max(zs) <= zmask[-1]  # within the mask's extent
    for k, z in enumerate(zs):
        tile = _tile(img, lay, "mean", k)
        # every pixel of a voxel's block has the voxel's colour
        s = lay.scale
        assert (tile == np.repeat(np.repeat(tile[::s, ::s], s, axis=0), s, axis=1)).all()
        vox = _voxels(tile, lay)
        outline = (vox == OUTLINE).all(axis=2)
        m = mask[:, :, z]
        inner = np.zeros_like(m)
        inner[1:-1, 1:-1] = m[1:-1, 1:-1] & m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:]
        assert outline.any() == m.any()
        assert (outline == (m & ~inner)).all(), f"slice {z}: the outline is not the mask's boundary"
        grey = ~outline
        assert (vox[grey, 0] == vox[grey, 1]).all() and (vox[grey, 1] == vox[grey, 2]).all()  # the rest is grey
        assert vox[inner, 0].mean() > 4 * vox[~m, 0].mean()  # the brain is bright, the outside dark


def test_the_colour_bar_spans_the_stated_range_and_tiles_follow_it():
    shape = (20, 24, 12)
    mask, mean = _brain(shape)
    tsnr = np.where(mask, np.linspace(0, 73, mask.size).reshape(shape), 5.0)
    lo, hi = tsnr_scale(tsnr, mask)
    p98 = np.percentile(tsnr[mask], 98)
    assert lo == 0 and p98 <= hi < 1.5 * p98 and hi in (60, 80, 100)
    img = render_maps(mean, tsnr, mask)
    lay = maps_layout(shape, len(choose_slices(mask, shape)))
    (r0, r1), (c0, c1) = lay.bar_rows, lay.bar_cols
    bar = img[r0:r1, c0:c1]
    assert (bar == bar[:, :1]).all()  # each row one colour
    assert (bar[0, 0] == VIRIDIS[255]).all() and (bar[-1, 0] == VIRIDIS[0]).all()  # hi at the top, 0 at the bottom
    # the labels: something written above the bar (hi) and below it (0)
    assert (img[r0 - 11 : r0 - 1, c0 : c0 + 40] != img[0, -1]).any()
    assert (img[r1 + 1 : r1 + 11, c0 : c0 + 8] != img[0, -1]).any()
    # a tSNR tile: a voxel of value v has colour VIRIDIS[round(255 v / hi)]
    z = choose_slices(mask, shape)[1]
    vox = _voxels(_tile(img, lay, "tsnr", 1), lay)
    idx = np.clip(np.rint(tsnr[:, :, z] * 255 / hi), 0, 255).astype(int)
    assert (vox == VIRIDIS[idx]).all()


def test_a_runs_first_moments_and_no_mask_render():
    shape = (64, 64, 36)
    mask, mean = _brain(shape)
    for tsnr in (np.full(shape, np.nan), np.zeros(shape)):
        img = render_maps(mean, tsnr, None)
        assert img.shape == maps_layout(shape, 5).image_shape
        assert not (img == OUTLINE).all(axis=2).any()  # no mask: no outline
        assert tsnr_scale(tsnr) == (0.0, 1.0)
    img = render_maps(np.full(shape, np.nan), np.full(shape, np.nan), mask)  # nothing defined yet at all
    assert img.dtype == np.uint8
    assert render_maps(mean, np.zeros(shape), np.zeros(shape, bool)).shape == img.shape  # an empty mask
    assert choose_slices(None, shape) == choose_slices(np.zeros(shape, bool), shape) == [6, 12, 18, 23, 29]
    assert choose_slices(None, (4, 4, 2)) == [0, 1]


def test_rendering_is_deterministic_and_takes_explicit_slices():
    shape = (30, 26, 16)
    mask, mean = _brain(shape, seed=1)
    tsnr = np.random.default_rng(2).uniform(0, 80, shape)
    a = render_maps(mean, tsnr, mask, slices=[2, 8, 13])
    b = render_maps(mean.copy(), tsnr.copy(), mask.copy(), slices=[2, 8, 13])
    assert a.shape == maps_layout(shape, 3).image_shape and np.array_equal(a, b)
    assert not np.array_equal(a, render_maps(mean, tsnr, mask, slices=[3, 8, 13]))
    with pytest.raises(ValueError, match="slices"):
        render_maps(mean, tsnr, mask, slices=[16])
    with pytest.raises(ValueError, match="shape"):
        render_maps(mean, tsnr, mask[:, :, :4])
