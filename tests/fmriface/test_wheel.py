"""The wheel works outside the checkout: built from the project, installed into a fresh virtual environment in a
temporary folder, its presets (``configs/`` shipped as ``fmriface/presets``) found with ``importlib.resources``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONSTRAINTS = ROOT / ".ci" / "constraints.txt"


def _run(argv: list, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    proc = subprocess.run([str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{argv} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.mark.slow
def test_the_wheel_installed_outside_the_checkout_finds_its_presets(tmp_path):
    # build from a copy of the tracked files, so that the checkout gets no build/ folder
    src, dist = tmp_path / "src", tmp_path / "dist"
    files = _run(["git", "ls-files", "-z"], ROOT).stdout.split("\0")
    for name in filter(None, files):
        if (ROOT / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    _run([sys.executable, "-m", "pip", "wheel", src, "--no-deps", "--no-build-isolation", "-q", "-w", dist], tmp_path)
    (wheel,) = dist.glob("fmriface-*.whl")
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", venv], tmp_path)
    py, exe = venv / "bin" / "python", venv / "bin" / "fmriface"
    _run([py, "-m", "pip", "install", "-q", "-c", CONSTRAINTS, f"{wheel}[cpu,offline]"], tmp_path, timeout=900)

    work = tmp_path / "work"
    work.mkdir()
    where = _run([py, "-c", "import fmriface.config as c; print(c.__file__); print(c.CONFIG_DIR)"], work)
    module_file, preset_dir = where.stdout.split()
    assert Path(module_file).is_relative_to(venv) and Path(preset_dir).is_relative_to(venv), where.stdout
    assert (Path(preset_dir) / "simulate-tiny.toml").read_text() == (
        ROOT / "configs" / "simulate-tiny.toml"
    ).read_text()

    # a preset by --preset, and one resolved by name through --config (NAME -> simulate-NAME)
    for args, out in ((["--preset", "tiny"], "twin"), (["--config", "tiny"], "twin2")):
        _run([exe, "simulate", *args, "--out", work / out], work)
        runs = sorted((work / out).glob("sub-*/ses-*/func/*_bold.nii.gz"))
        assert runs, f"no BOLD runs under {work / out}"
    helped = _run([exe, "serve", "--help"], work)
    assert "--bundle" in helped.stdout and "--watch" in helped.stdout
