"""`bench motion`'s draws of a later session: the offsets stay within the stated range (the length of the shift,
the angle of the turn), not a per-axis box that reaches beyond it."""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

from fmriface.benchmarks.motion import draw_rigid, rigid_size
from service.motion import rigid_matrix


def test_session_offsets_are_drawn_within_their_stated_range():
    rng = np.random.default_rng(0)
    sizes = np.array([rigid_size(draw_rigid(rng, 10.0, 8.0)) for _ in range(500)])
    assert sizes[:, 0].max() <= 10.0 + 1e-9 and sizes[:, 1].max() <= 8.0 + 1e-9
    assert sizes[:, 0].min() >= 2.5 - 1e-9 and sizes[:, 1].min() >= 2.0 - 1e-9  # low = a quarter of the limit
    assert sizes[:, 0].max() > 9.5 and sizes[:, 1].max() > 7.6  # and the far end of the range is reached


def test_rigid_size_reads_a_known_turn_and_shift():
    m = np.eye(4)
    m[:3, :3] = Rotation.from_rotvec(np.deg2rad(7.0) * np.array([1.0, 2.0, 2.0]) / 3.0).as_matrix()
    from service.motion import params_from_matrix

    params = np.concatenate([[3.0, 4.0, 0.0], params_from_matrix(m)[3:]])
    np.testing.assert_allclose(rigid_matrix(params)[:3, :3], m[:3, :3], atol=1e-12)
    length, angle = rigid_size(params)
    assert abs(length - 5.0) < 1e-12 and abs(angle - 7.0) < 1e-9
