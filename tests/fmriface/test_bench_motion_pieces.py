"""``fmriface bench motion``: its ground-truth helpers and one tiny run (timings are not asserted)."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

from fmriface.benchmarks import motion as bench
from service.motion import rigid_matrix


def test_known_motions_stay_within_the_limits(rng):
    for kind in ("independent", "trajectory"):
        p = bench.make_motions(50, 3.0, 2.0, kind, rng)
        assert p.shape == (50, 6)
        assert np.abs(p[:, :3]).max() <= 3.0 + 1e-12 and np.abs(p[:, 3:]).max() <= 2.0 + 1e-12
    walk = bench.make_motions(50, 3.0, 3.0, "trajectory", rng)
    assert np.abs(np.diff(walk, axis=0)).mean() < np.abs(p).mean()  # a walk moves little between volumes


def test_displacement_error_hand_computed():
    points = np.array([[0.0, 0.0, 0.0, 1.0], [50.0, 0.0, 0.0, 1.0]]).T
    true = np.zeros((1, 6))
    est = np.array([[0.1, 0.0, 0.0, 0.0, 0.0, 0.0]])
    np.testing.assert_allclose(bench.displacement_errors(est, true, points), [[0.1, 0.1]])
    est = np.array([[0.0, 0.0, 0.0, 0.0, 0.0, 1.0]])  # 1 degree about z: the point at 50 mm moves 0.873 mm
    expected = np.linalg.norm((rigid_matrix(est[0]) @ points[:, 1])[:3] - points[:3, 1])
    np.testing.assert_allclose(bench.displacement_errors(est, true, points), [[0.0, expected]])
    assert expected == pytest.approx(2 * 50 * np.sin(np.deg2rad(0.5)))


@pytest.mark.slow  # builds the twin's anatomy from nilearn's templates (about 10 s)
def test_a_tiny_run_reports_every_key():
    pytest.importorskip("nilearn")
    p = argparse.ArgumentParser()
    bench.add_arguments(p)
    args = p.parse_args(["--volumes", "3", "--repeats", "1", "--no-peers"])
    r = bench.run(args)
    for key in ("median_ms", "p95_ms", "full_resample_median_ms", "mean_error_mm", "max_error_mm", "peers"):
        assert key in r
    assert r["mean_error_mm"] < 0.05 and r["max_error_mm"] < 0.2
    assert r["peers"] == {} and r["mask_voxels"] > 30000
