"""Fixtures of the stimulus tests: stimulus folders, and an X display for the window tests.

Window tests run PsychoPy in a subprocess (``fmriface experiment`` / ``display``, or a small script), so the
pytest process never connects to an X server; they are marked ``display`` and use an existing ``$DISPLAY`` or
an Xvfb started here on a free display number, and are skipped (with the reason) where neither works.
PsychoPy writes its preferences under ``$HOME/.psychopy3``: the subprocesses get a temporary ``HOME``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]


def smooth_image(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A smooth colour image (gradients and a blob), so rescaling on screen changes it little."""
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    c = rng.uniform(0.2, 0.8, size=(3, 3))
    blob = np.exp(-(((yy - c[0, 0] * h / max(h, w)) ** 2 + (xx - c[0, 1]) ** 2) / 0.05))
    img = np.stack([c[1, 0] * xx + 0.3 * blob, c[1, 1] * yy + 0.2, c[1, 2] * (1 - xx) + 0.4 * blob], -1)
    return np.clip(img * 255, 0, 255).astype(np.uint8)


@pytest.fixture
def stimuli_dir(tmp_path, rng) -> Path:
    """A stimulus folder: 10 training and 3 test images (non-square, 24 x 20)."""
    root = tmp_path / "stimuli"
    for split, n in (("train", 10), ("test", 3)):
        (root / split).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(smooth_image(rng, 24, 20)).save(root / split / f"{split}_{i:02d}.png")
    return root


@pytest.fixture(scope="session")
def x_display():
    """The name of a working X display (``$DISPLAY``, or an Xvfb started for the session)."""
    import importlib.util

    from stimulus.xvfb import XvfbUnavailable, display_works, virtual_display

    if importlib.util.find_spec("psychopy") is None:
        pytest.skip("PsychoPy is not installed (make install puts it in .venv)")
    if os.environ.get("DISPLAY") and display_works():
        yield os.environ["DISPLAY"]
        return
    saved = os.environ.get("DISPLAY")
    try:
        cm = virtual_display(size=(1280, 1024))
        name = cm.__enter__()
    except XvfbUnavailable as exc:
        pytest.skip(f"no X display for the PsychoPy window tests: {exc}")
    try:
        yield name
    finally:
        cm.__exit__(None, None, None)
        if saved is not None:
            os.environ["DISPLAY"] = saved


@pytest.fixture
def window_env(x_display, tmp_path) -> dict[str, str]:
    """Environment of a window subprocess: the X display, a private HOME for PsychoPy's preferences."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = {**os.environ, "DISPLAY": x_display, "HOME": str(home), "FMRIFACE_RAISE": "1", "FMRIFACE_QUIET": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return env


def run_fmriface(args: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``python -m fmriface ARGS`` and fail with its output if it fails."""
    proc = subprocess.run(
        [sys.executable, "-m", "fmriface", *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )
    assert proc.returncode == 0, f"fmriface {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc
