"""LSL kept off the machine's network: a process re-run in a network namespace holding only the loopback.

LSL finds streams by multicast and its outlets bind every interface, so anything that opens LSL streams for a test
or a benchmark runs in a network namespace of its own (``unshare -n`` as root, ``lo`` brought up) with an
``lsl_api.cfg`` (:func:`fmriface.lsl.streams.lsl_config`) that ``LSLAPICFG`` names. :func:`namespace_missing`
says why one cannot be made here; :func:`isolated` whether this process already runs in one;
:func:`run_isolated` runs a command in a fresh one.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import uuid
from functools import cache
from pathlib import Path

__all__ = ["namespace_missing", "isolated", "run_isolated"]


@cache
def namespace_missing() -> str | None:
    """Why an isolated network namespace with LSL cannot be made here, or None."""
    try:
        import pylsl  # noqa: F401
    except ImportError:
        return "pylsl is not installed (pip install -e '.[lsl]')"
    if os.geteuid() != 0:
        return "LSL runs here only in a network namespace of its own, which needs root (unshare -n)"
    for tool in ("unshare", "ip"):
        if shutil.which(tool) is None:
            return f"no {tool} on PATH (util-linux / iproute2)"
    probe = subprocess.run(["unshare", "-n", "--", "ip", "link", "set", "lo", "up"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"unshare -n failed here: {probe.stderr.strip()[:200]}"
    return None


def isolated() -> bool:
    """Whether this process's network namespace holds only the loopback (and LSLAPICFG names a config)."""
    names = {name for _, name in socket.if_nameindex()}
    return names <= {"lo"} and bool(os.environ.get("LSLAPICFG"))


def run_isolated(argv: list[str], folder: Path, **kwargs) -> subprocess.CompletedProcess:
    """Run ``argv`` in a new network namespace with only ``lo`` up and an ``lsl_api.cfg`` written to ``folder``.

    Raises
    ------
    RuntimeError
        Where the namespace cannot be made (:func:`namespace_missing` says why).
    """
    from fmriface.lsl.streams import lsl_config

    reason = namespace_missing()
    if reason:
        raise RuntimeError(reason)
    cfg = Path(folder) / "lsl_api.cfg"
    cfg.write_text(lsl_config(session_id=f"fmriface-{uuid.uuid4().hex[:8]}"))
    env = {**os.environ, **kwargs.pop("env", {}), "LSLAPICFG": str(cfg)}
    script = 'ip link set lo up && exec "$@"'
    return subprocess.run(["unshare", "-n", "--", "sh", "-c", script, "sh", *argv], env=env, **kwargs)
