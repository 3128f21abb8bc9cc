"""Optional packages: one message for a package the install left out, naming what needs it and the extra to add.

The base install is what the service needs; onnxruntime (``cpu`` or ``gpu``), the offline stack (``offline``)
and the dashboard's web server (``dashboard``) come as extras of ``pyproject.toml``. Every place that finds one
missing says so with :func:`missing_extra`, and raises the error its caller expects. This module imports
nothing, so every room of ``service`` may use it, and so may ``offline`` and ``fmriface``. The stimulus programs
may import only :mod:`service.protocol`, and PsychoPy is not installed as a plain extra (``make install`` adds it
without its dependencies), so ``stimulus/window.py`` and ``stimulus/triggers.py`` word their own.
"""

from __future__ import annotations

__all__ = ["missing_extra"]


def missing_extra(package: str, needed_by: str, extra: str, *alternatives: str) -> str:
    """The message for an optional package that is not installed.

    Parameters
    ----------
    package : str
        The missing package, as Python imports it (``onnxruntime``, ``aiohttp``).
    needed_by : str
        What needs it, as the start of a sentence (``"the dashboard"``).
    extra : str
        The extra of ``pyproject.toml`` that installs it (``"dashboard"``; several as ``"dev,dashboard"``).
    *alternatives : str
        Other extras that would do instead (``"gpu"`` beside ``"cpu"``).

    Returns
    -------
    str
        ``"<needed_by> needs <package>, which is not installed: pip install -e '.[<extra>]'"``, with
        ``" (or '.[<alternative>]')"`` for each alternative.
    """
    others = "".join(f" (or '.[{alt}]')" for alt in alternatives)
    return f"{needed_by} needs {package}, which is not installed: pip install -e '.[{extra}]'{others}"
