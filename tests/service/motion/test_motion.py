"""Rigid registration: conventions, recovery of known motions, resampling, grids and errors."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from service.motion import (
    GridMismatchError,
    RigidRegistration,
    framewise_displacement,
    params_from_matrix,
    realign_run,
    rigid_matrix,
)

SHAPE = (28, 32, 24)  # 84 x 96 x 84 mm: the phantom head and 3 mm / 3 deg of motion fit inside
VOXEL = (3.0, 3.0, 3.5)


def grid_affine(shape=SHAPE, voxel=VOXEL, tilt_deg=(0.0, 0.0, 0.0), shift=(0.0, 0.0, 0.0)) -> np.ndarray:
    """A voxel-to-world affine centred on the world origin (plus ``shift``), optionally oblique."""
    rot = rigid_matrix([0, 0, 0, *tilt_deg])[:3, :3]
    aff = np.eye(4)
    aff[:3, :3] = rot @ np.diag(voxel)
    aff[:3, 3] = -aff[:3, :3] @ ((np.asarray(shape) - 1) / 2.0) + np.asarray(shift)
    return aff


class Phantom:
    """A smooth head-like function of world position: textured ellipsoid, off the world origin."""

    def __init__(self, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.centre = np.array([2.0, -3.0, 1.5])
        self.radii = np.array([29.0, 35.0, 27.0])
        self.blobs = self.centre + rng.uniform(-0.8, 0.8, (30, 3)) * self.radii
        self.sigmas = rng.uniform(5.0, 10.0, 30)
        self.amps = rng.uniform(-0.6, 0.8, 30)

    def __call__(self, world: np.ndarray) -> np.ndarray:
        """Values at world points ``[3, N]``."""
        q = ((world - self.centre[:, None]) / self.radii[:, None]) ** 2
        envelope = 1.0 / (1.0 + np.exp((np.sqrt(q.sum(axis=0)) - 1.0) * 12.0))
        tex = np.ones(world.shape[1])
        for c, s, a in zip(self.blobs, self.sigmas, self.amps):
            tex += a * np.exp(-((world - c[:, None]) ** 2).sum(axis=0) / (2 * s * s))
        return 100.0 * envelope * tex

    def volume(self, affine: np.ndarray, params=(0, 0, 0, 0, 0, 0), shape=SHAPE) -> np.ndarray:
        """The head moved by ``params``, imaged on the grid: value at y is f(T^-1 y)."""
        ijk = np.indices(shape).reshape(3, -1).astype(np.float64)
        y = affine @ np.vstack([ijk, np.ones((1, ijk.shape[1]))])
        x = np.linalg.inv(rigid_matrix(params)) @ y
        return self(x[:3]).reshape(shape).astype(np.float32)

    def mask(self, affine: np.ndarray, shape=SHAPE) -> np.ndarray:
        return self.volume(affine, shape=shape) > 30.0


def about_point(centre, angles_deg, translation=(0.0, 0.0, 0.0)) -> np.ndarray:
    """Parameters of a rotation about an axis through ``centre`` (not the origin), then a translation."""
    r = rigid_matrix([0, 0, 0, *angles_deg])[:3, :3]
    c = np.asarray(centre, dtype=float)
    return np.concatenate([c - r @ c + np.asarray(translation), angles_deg])


def assert_close_params(estimated, true, mm=0.1, deg=0.1):
    err = np.abs(np.asarray(estimated) - np.asarray(true))
    assert err[:3].max() < mm, f"translation error {err[:3]} (estimated {estimated}, true {true})"
    assert err[3:].max() < deg, f"rotation error {err[3:]} (estimated {estimated}, true {true})"


@pytest.fixture(scope="module")
def phantom() -> Phantom:
    return Phantom(0)


@pytest.fixture(scope="module")
def fitted(phantom):
    aff = grid_affine()
    ref = phantom.volume(aff)
    reg = RigidRegistration(warm_start=False).fit(ref, aff, phantom.mask(aff))
    return reg, aff


# ------------------------------------------------------------------------------------------ conventions
def test_rigid_matrix_is_rz_ry_rx_about_the_origin():
    def rx(a):
        c, s = np.cos(a), np.sin(a)
        return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])

    def ry(a):
        c, s = np.cos(a), np.sin(a)
        return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])

    def rz(a):
        c, s = np.cos(a), np.sin(a)
        return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])

    p = [1.0, -2.0, 3.0, 10.0, -20.0, 30.0]
    m = rigid_matrix(p)
    a = np.deg2rad(p[3:])
    np.testing.assert_allclose(m[:3, :3], rz(a[2]) @ ry(a[1]) @ rx(a[0]), atol=1e-12)
    np.testing.assert_allclose(m[:3, 3], p[:3])
    # A right-handed 90 degree turn about z takes +x to +y.
    np.testing.assert_allclose(rigid_matrix([0, 0, 0, 0, 0, 90]) @ [1, 0, 0, 1], [0, 1, 0, 1], atol=1e-12)
    np.testing.assert_allclose(rigid_matrix(np.zeros(6)), np.eye(4))


def test_params_round_trip(rng):
    for _ in range(20):
        p = np.concatenate([rng.uniform(-10, 10, 3), rng.uniform(-40, 40, 3)])
        np.testing.assert_allclose(params_from_matrix(rigid_matrix(p)), p, atol=1e-9)


def test_framewise_displacement_hand_computed():
    params = np.array(
        [
            [0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
            [1.0, 0.0, 0.0, 0.0, 0.0, 0.0],
            [1.0, -2.0, 0.5, 1.0, 0.0, 0.0],
            [1.0, -2.0, 0.5, 1.0, -1.0, 2.0],
        ]
    )
    one_deg_at_50 = 50.0 * np.pi / 180.0  # 0.8727 mm
    expected = [0.0, 1.0, 2.0 + 0.5 + one_deg_at_50, 3 * one_deg_at_50]
    np.testing.assert_allclose(framewise_displacement(params), expected, rtol=1e-12)
    np.testing.assert_allclose(framewise_displacement(params, radius=80.0)[3], 3 * 80.0 * np.pi / 180.0)
    with pytest.raises(ValueError, match=r"\[T, 6\]"):
        framewise_displacement(np.zeros(6))


# --------------------------------------------------------------------------------------------- recovery
def test_identity_gives_zeros(fitted, phantom):
    reg, aff = fitted
    p = reg.estimate(phantom.volume(aff), init=np.zeros(6))
    np.testing.assert_allclose(p, 0.0, atol=2e-3)


@pytest.mark.parametrize(
    "true",
    [
        [2.5, 0.0, 0.0, 0.0, 0.0, 0.0],
        [0.0, -1.7, 0.0, 0.0, 0.0, 0.0],
        [0.0, 0.0, 3.0, 0.0, 0.0, 0.0],
        [-1.2, 2.2, -0.8, 0.0, 0.0, 0.0],
        [0.0, 0.0, 0.0, 3.0, 0.0, 0.0],
        [0.0, 0.0, 0.0, 0.0, -2.5, 0.0],
        [0.0, 0.0, 0.0, 0.0, 0.0, 2.8],
        [2.0, -3.0, 1.5, -2.0, 3.0, -1.5],
        [-3.0, 3.0, -3.0, 3.0, -3.0, 3.0],
    ],
)
def test_known_motions_are_recovered_from_a_cold_start(fitted, phantom, true):
    reg, aff = fitted
    assert_close_params(reg.estimate(phantom.volume(aff, true)), true)


@pytest.mark.parametrize(
    ("centre", "angles", "shift"),
    [
        ((0.0, 40.0, 0.0), (3.0, 0.0, 0.0), (0.0, 0.0, 0.0)),  # nod about a neck-like axis behind the grid
        ((20.0, -10.0, -15.0), (0.0, 2.0, -2.0), (0.5, 0.0, 0.0)),
        ((-12.0, 8.0, 10.0), (-1.5, -2.0, 2.5), (0.0, -1.0, 0.7)),
    ],
)
def test_rotations_about_off_centre_axes(fitted, phantom, centre, angles, shift):
    reg, aff = fitted
    true = about_point(centre, angles, shift)
    vol = phantom.volume(aff, true)
    assert_close_params(reg.estimate(vol), true)
    # The same motion, checked as a displacement of the head: points inside it move as they should.
    pts = np.array([[10.0, 0.0, 0.0, 1.0], [0.0, 20.0, -10.0, 1.0], [-15.0, -15.0, 12.0, 1.0]]).T
    moved = rigid_matrix(reg.estimate(vol)) @ pts
    np.testing.assert_allclose(moved, rigid_matrix(true) @ pts, atol=0.1)


def test_noise_and_intensity_drift(phantom, rng):
    aff = grid_affine()
    reg = RigidRegistration(warm_start=False).fit(phantom.volume(aff), aff, phantom.mask(aff))
    true = [1.3, -0.6, 2.1, 1.8, -2.2, 0.9]
    vol = phantom.volume(aff, true)
    drifted = 1.18 * vol + 25.0 + rng.normal(0.0, 1.5, SHAPE).astype(np.float32)  # tSNR about 50
    assert_close_params(reg.estimate(drifted), true)
    # Noise alone around no motion stays near zero.
    p = reg.estimate(phantom.volume(aff) + rng.normal(0.0, 1.5, SHAPE).astype(np.float32))
    assert_close_params(p, np.zeros(6))


@pytest.mark.parametrize("slab", [8, 12])
def test_a_slice_dropout_does_not_pull_the_estimate(phantom, slab):
    aff = grid_affine()
    true = [1.2, -0.8, 0.6, 1.5, -1.0, 0.8]
    vol = phantom.volume(aff, true)
    vol[:, :, slab] *= 0.3  # one slice lost most of its signal (spike, dropout, an edge slice losing tissue)
    robust = RigidRegistration(warm_start=False).fit(phantom.volume(aff), aff, phantom.mask(aff))
    assert_close_params(robust.estimate(vol), true)
    plain = RigidRegistration(robust=False, warm_start=False).fit(phantom.volume(aff), aff, phantom.mask(aff))
    assert np.abs(plain.estimate(vol) - true).max() > 0.5  # least squares alone is pulled off by degrees


@pytest.mark.parametrize(
    ("voxel", "tilt", "shift"),
    [
        ((2.5, 3.0, 4.0), (0.0, 0.0, 0.0), (0.0, 0.0, 0.0)),  # anisotropic
        ((3.0, 3.0, 3.5), (18.0, 0.0, 0.0), (0.0, 0.0, 0.0)),  # oblique (AC-PC tilt)
        ((2.5, 3.2, 3.8), (12.0, -8.0, 25.0), (4.0, -3.0, 2.0)),  # anisotropic, doubly oblique, off centre
    ],
)
def test_anisotropic_and_oblique_grids(phantom, voxel, tilt, shift):
    aff = grid_affine(voxel=voxel, tilt_deg=tilt, shift=shift)
    reg = RigidRegistration(warm_start=False).fit(phantom.volume(aff), aff, phantom.mask(aff))
    for true in ([1.5, -2.0, 0.7, 2.0, 1.0, -2.5], about_point((5.0, 30.0, -20.0), (2.5, -1.0, 1.0))):
        assert_close_params(reg.estimate(phantom.volume(aff, true)), true)


def test_coarse_to_fine_recovers_the_same_motions(phantom):
    aff = grid_affine(voxel=(2.5, 3.2, 3.8), tilt_deg=(12.0, -8.0, 25.0))
    reg = RigidRegistration(levels=(2, 1), n_points=(1500, 3000), max_iter=(12, 8), warm_start=False)
    reg.fit(phantom.volume(aff), aff, phantom.mask(aff))
    assert [lv.factor for lv in reg.levels_] == [2, 1] and reg.levels_[0].shape == (14, 16, 12)
    for true in ([-3.0, 3.0, -3.0, 3.0, -3.0, 3.0], about_point((0.0, 40.0, 0.0), (3.0, 0.0, 0.0))):
        assert_close_params(reg.estimate(phantom.volume(aff, true)), true)


def test_warm_start_carries_the_previous_estimate(phantom):
    aff = grid_affine()
    reg = RigidRegistration().fit(phantom.volume(aff), aff, phantom.mask(aff))
    true = np.array([2.0, -1.0, 1.0, 2.0, -1.5, 1.0])
    reg.estimate(phantom.volume(aff, true))
    cold_iters = reg.n_iter_
    nearby = true + np.array([0.05, 0.0, -0.05, 0.05, 0.0, 0.0])
    p = reg.estimate(phantom.volume(aff, nearby))
    assert_close_params(p, nearby)
    assert reg.n_iter_ < cold_iters
    np.testing.assert_allclose(reg.previous_, p)


def test_a_garbage_volume_does_not_poison_the_warm_start(phantom, rng):
    aff = grid_affine()
    reg = RigidRegistration().fit(phantom.volume(aff), aff, phantom.mask(aff))
    true = [1.0, -0.5, 0.5, 1.0, 0.0, -1.0]
    reg.estimate(phantom.volume(aff, true))
    assert reg.converged_ and reg.cost_ < 0.05
    noise = rng.normal(50.0, 30.0, SHAPE).astype(np.float32)  # e.g. a corrupt reconstruction
    p = reg.estimate(noise)
    assert np.all(np.isfinite(p)) and not reg.converged_ and reg.cost_ > 0.3
    assert_close_params(reg.estimate(phantom.volume(aff, true)), true)
    # Intensities on another scale (a different scanner scaling) are absorbed by the gain.
    assert_close_params(reg.estimate(37.0 * phantom.volume(aff, true), init=np.zeros(6)), true)


# ------------------------------------------------------------------------------------------- resampling
def test_masked_resample_equals_full_resample_at_the_mask(fitted, phantom):
    reg, aff = fitted
    vol = phantom.volume(aff, [1.0, 2.0, -1.5, 2.0, -3.0, 1.0])
    params = [0.9, 2.1, -1.4, 2.2, -2.8, 1.1]
    full = reg.resample(vol, params)
    mask = phantom.mask(aff)
    np.testing.assert_allclose(reg.resample(vol, params, mask), full[mask], rtol=1e-6, atol=1e-5)
    # Several masks in turn, and a mask changed in place, each get their own voxels.
    other = np.zeros_like(mask)
    other[5:9, 6:10, 4:8] = True
    for m in (other, mask, other):
        np.testing.assert_allclose(reg.resample(vol, params, m), full[m], rtol=1e-6, atol=1e-5)
    other[10:12, 10:12, 10:12] = True
    np.testing.assert_allclose(reg.resample(vol, params, other), full[other], rtol=1e-6, atol=1e-5)
    # A read-only mask is cached by identity; a writable copy with other voxels still gets its own.
    frozen = other.copy()
    frozen.flags.writeable = False
    for _ in range(2):
        np.testing.assert_allclose(reg.resample(vol, params, frozen), full[frozen], rtol=1e-6, atol=1e-5)
    assert any(f is frozen for f, _ in reg._mask_cache)
    thawed = frozen.copy()
    thawed[20:22, 20:22, 8:10] = True
    np.testing.assert_allclose(reg.resample(vol, params, thawed), full[thawed], rtol=1e-6, atol=1e-5)
    # Trilinear with zeros outside, the same as scipy's grid-constant order-1 resampling.
    mv = np.linalg.inv(aff) @ rigid_matrix(params) @ aff
    expected = ndimage.affine_transform(vol, mv[:3, :3], mv[:3, 3], order=1, mode="grid-constant", prefilter=False)
    np.testing.assert_allclose(full, expected, rtol=1e-5, atol=1e-3)


def test_chunked_sampling_equals_one_pass(rng):
    from service.motion.interp import TrilinearSampler

    vol = rng.normal(size=(9, 8, 7)).astype(np.float32)
    sampler = TrilinearSampler(vol.shape)
    sampler.load(vol)
    points = np.vstack([rng.uniform(-2.0, 10.0, (3, 1000)), np.ones((1, 1000))]).astype(np.float32)
    matrix = rigid_matrix([0.3, -0.2, 0.1, 4.0, -3.0, 2.0])
    np.testing.assert_array_equal(
        sampler.sample_affine(matrix, points, chunk=64), sampler.sample_affine(matrix, points)
    )
    coords = (matrix[:3] @ points).astype(np.float64)
    expected = ndimage.map_coordinates(vol, coords, order=1, mode="grid-constant", prefilter=False)
    np.testing.assert_allclose(sampler.sample_affine(matrix, points), expected, rtol=1e-5, atol=1e-5)


def test_resampling_at_the_estimate_undoes_the_motion(phantom):
    aff = grid_affine(voxel=(2.5, 3.0, 4.0), tilt_deg=(15.0, 0.0, 5.0))
    ref, mask = phantom.volume(aff), phantom.mask(aff)
    reg = RigidRegistration().fit(ref, aff, mask)
    true = [2.0, -1.0, 1.5, -2.5, 2.0, 1.0]
    moved = phantom.volume(aff, true)
    realigned = reg.transform(moved)
    before = np.abs(moved[mask] - ref[mask]).mean()
    after = np.abs(realigned - ref[mask]).mean()
    assert realigned.shape == (int(mask.sum()),)
    assert after < 0.25 * before, (before, after)


def test_transform_accepts_a_batch(fitted, phantom):
    reg, aff = fitted
    run = np.stack([phantom.volume(aff, [t * 0.5, 0, 0, 0, 0, t * 0.5]) for t in range(3)], axis=-1)
    out = reg.transform(run)
    assert out.shape == (3, int(reg.mask_.sum()))
    np.testing.assert_allclose(out[1], reg.transform(run[..., 1]))
    small = np.zeros(SHAPE, bool)
    small[10:14, 12:16, 8:12] = True
    assert reg.transform(run, mask=small).shape == (3, 64)


# ------------------------------------------------------------------------------------------------ grids
def test_grid_mismatch_names_both_grids(fitted, phantom):
    reg, aff = fitted
    with pytest.raises(GridMismatchError, match=r"\(28, 32, 23\).*\(28, 32, 24\)"):
        reg.estimate(np.zeros((28, 32, 23), np.float32))
    other = grid_affine(voxel=(3.0, 3.0, 3.0))
    with pytest.raises(GridMismatchError, match="affine") as info:
        reg.estimate(phantom.volume(aff), affine=other)
    assert "-40.25]" in str(info.value) and "-34.5]" in str(info.value)  # both affines are printed
    assert GridMismatchError.user_error is True

    class Volume:  # an object with .data and .affine, like service.volume.Volume
        data = np.zeros(SHAPE, np.float32)
        affine = other

    with pytest.raises(GridMismatchError):
        reg.resample(Volume(), np.zeros(6), reg.mask_)
    with pytest.raises(GridMismatchError, match="resampling mask"):
        reg.resample(phantom.volume(aff), np.zeros(6), np.ones((4, 4, 4), bool))


def test_unfitted_and_bad_inputs(phantom):
    with pytest.raises(RuntimeError, match="not fitted"):
        RigidRegistration().estimate(np.zeros(SHAPE))
    with pytest.raises(GridMismatchError, match="3-D"):
        RigidRegistration().fit(np.zeros((4, 4, 4, 2)), np.eye(4))
    with pytest.raises(ValueError, match="invertible"):
        RigidRegistration().fit(np.zeros(SHAPE), np.zeros((4, 4)))


def test_estimator_api_stores_parameters_only():
    from sklearn.base import clone

    reg = RigidRegistration(n_points=(2000,), tol_mm=1e-3)
    assert reg.get_params()["n_points"] == (2000,) and not hasattr(reg, "levels_")
    copy = clone(reg)
    assert copy.get_params() == reg.get_params() and copy is not reg
    assert reg.set_params(seed=3).seed == 3 and "seed=3" in repr(reg)
    with pytest.raises(ValueError, match="no parameter 'nope'"):
        reg.set_params(nope=1)


def test_auto_mask_when_none_is_given(phantom):
    aff = grid_affine()
    reg = RigidRegistration(warm_start=False).fit(phantom.volume(aff), aff)
    assert 0.1 * reg.mask_.size < reg.mask_.sum() < 0.6 * reg.mask_.size
    true = [1.0, -2.0, 0.5, 1.5, 0.5, -2.0]
    assert_close_params(reg.estimate(phantom.volume(aff, true)), true)


# --------------------------------------------------------------------------------------------- run level
def make_run(phantom: Phantom, aff: np.ndarray, rng: np.random.Generator, n: int = 6):
    steps = rng.uniform(-0.6, 0.6, (n, 6))
    steps[0] = 0.0
    params = np.cumsum(steps, axis=0)
    run = np.stack([phantom.volume(aff, p) for p in params], axis=-1)
    return run, params


def test_realign_run_with_each_kind_of_reference(phantom, rng):
    aff = grid_affine()
    run, true = make_run(phantom, aff, rng)
    params, realigned = realign_run(run, aff, reference=phantom.volume(aff), mask=phantom.mask(aff))
    assert realigned is None
    for p, t in zip(params, true):
        assert_close_params(p, t)
    # Volume 0 has no motion, so referencing it gives the same parameters, and the realigned run is returned.
    seen = []
    params0, realigned0 = realign_run(run, aff, reference_volume=0, return_realigned=True, callback=seen.append)
    assert seen == list(range(run.shape[3]))
    assert realigned0.shape == run.shape and realigned0.dtype == np.float32
    for p, t in zip(params0, true):
        assert_close_params(p, t, mm=0.15, deg=0.15)
    np.testing.assert_allclose(realigned0[..., 0], run[..., 0], atol=0.05)
    # The default reference is the run's mean: motion is then relative to it, but consecutive differences agree.
    params_mean, _ = realign_run(run, aff)
    np.testing.assert_allclose(np.diff(params_mean, axis=0), np.diff(true, axis=0), atol=0.25)


def test_realign_run_errors(phantom):
    aff = grid_affine()
    with pytest.raises(GridMismatchError, match="4-D"):
        realign_run(np.zeros(SHAPE), aff)
    with pytest.raises(GridMismatchError, match="reference's shape"):
        realign_run(np.zeros((*SHAPE, 2)), aff, reference=np.zeros((28, 32, 23)))
    with pytest.raises(ValueError, match="outside the run"):
        realign_run(np.zeros((*SHAPE, 2)), aff, reference_volume=5)


def test_estimate_resample_equals_the_two_calls(phantom):
    aff = grid_affine()
    ref = phantom.volume(aff, np.zeros(6))
    mask = phantom.mask(aff)
    one, two = RigidRegistration().fit(ref, aff), RigidRegistration().fit(ref, aff)
    for motion in ([0.5, -1.0, 0.8, 1.0, -0.5, 0.7], [0.9, -1.2, 1.1, 1.4, -0.2, 0.3]):
        vol = phantom.volume(aff, motion).astype(np.int16)  # converted once, then sampled at the mask
        params, values = one.estimate_resample(vol, mask)
        expected_params = two.estimate(vol)
        np.testing.assert_allclose(params, expected_params, rtol=0, atol=1e-9)
        np.testing.assert_allclose(values, two.resample(vol, expected_params, mask), rtol=0, atol=0)
    # float32 input: the sampler already holds it after the estimate and is not reloaded
    vol = phantom.volume(aff, [0.3, 0.2, -0.4, 0.5, 0.1, -0.6]).astype(np.float32)
    params, values = one.estimate_resample(vol, mask)
    np.testing.assert_allclose(values, two.resample(vol, two.estimate(vol), mask), rtol=0, atol=0)
