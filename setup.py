"""Ships ``configs/`` (the presets' one source, at the top of the repository) inside the wheel as the package
data ``fmriface/presets/*.toml``, found at run time with ``importlib.resources`` (``fmriface.config``).

Everything else about the build is in ``pyproject.toml``.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent


class BuildWithPresets(build_py):
    """``build_py`` that also copies ``configs/*.toml`` to ``fmriface/presets/`` in the build tree."""

    def run(self) -> None:
        super().run()
        target = Path(self.build_lib) / "fmriface" / "presets"
        self.mkpath(str(target))
        for preset in sorted((HERE / "configs").glob("*.toml")):
            self.copy_file(str(preset), str(target / preset.name))


setup(cmdclass={"build_py": BuildWithPresets})
