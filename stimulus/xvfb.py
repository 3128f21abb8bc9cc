"""A virtual X display (Xvfb) for headless windows: tests, benchmarks and ``fmriface display --headless``."""

from __future__ import annotations

import os
import select
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["XvfbUnavailable", "virtual_display", "display_works"]


class XvfbUnavailable(RuntimeError):
    """No X display can be started here (Xvfb missing or failing); the message says what to install."""

    user_error = True


def display_works(display: str | None = None) -> bool:
    """Whether an X display (``$DISPLAY`` by default) answers (via ``xdpyinfo`` when installed)."""
    display = display or os.environ.get("DISPLAY")
    if not display:
        return False
    probe = shutil.which("xdpyinfo")
    if probe is None:
        return True  # cannot check: trust $DISPLAY
    env = {**os.environ, "DISPLAY": display}
    return subprocess.run([probe], env=env, capture_output=True, timeout=10).returncode == 0


@contextmanager
def virtual_display(size: tuple[int, int] = (1280, 1024), depth: int = 24, timeout: float = 10.0) -> Iterator[str]:
    """Start Xvfb on a display number it picks itself, point ``$DISPLAY`` at it, and stop it afterwards.

    Yields the display name (``":N"``). Raises :class:`XvfbUnavailable` when Xvfb is missing or does not start.
    """
    exe = shutil.which("Xvfb")
    if exe is None:
        raise XvfbUnavailable("Xvfb is not installed (apt-get install xvfb); headless windows need it")
    read_fd, write_fd = os.pipe()
    cmd = [
        exe,
        "-displayfd",
        str(write_fd),
        "-screen",
        "0",
        f"{size[0]}x{size[1]}x{depth}",
        "-nolisten",
        "tcp",
        "-noreset",
    ]
    errors = tempfile.TemporaryFile()  # a file, not a pipe: Xvfb must never block on a full pipe
    proc = subprocess.Popen(cmd, pass_fds=(write_fd,), stdout=subprocess.DEVNULL, stderr=errors)
    os.close(write_fd)
    data = b""
    deadline = time.monotonic() + timeout
    try:  # read up to the newline: closing the pipe before Xvfb wrote it all kills Xvfb
        while b"\n" not in data and (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([read_fd], [], [], left)
            chunk = os.read(read_fd, 32) if ready else b""
            if not chunk:
                break
            data += chunk
    finally:
        os.close(read_fd)
    number = data.decode(errors="replace").strip()
    if not number.isdigit():
        proc.kill()
        proc.wait(timeout=5)
        errors.seek(0)
        err = errors.read().decode(errors="replace").strip().splitlines()
        errors.close()
        raise XvfbUnavailable(f"Xvfb did not start within {timeout:.0f} s: {err[-1] if err else 'no message'}")
    old = os.environ.get("DISPLAY")
    try:  # Xvfb is stopped however this ends, also when its socket never accepts a client
        _wait_for_socket(f"/tmp/.X11-unix/X{number}", timeout)
        os.environ["DISPLAY"] = f":{number}"
        yield f":{number}"
    finally:
        if old is None:
            os.environ.pop("DISPLAY", None)
        else:
            os.environ["DISPLAY"] = old
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:  # pragma: no cover
            proc.kill()
            proc.wait()
        errors.close()


def _wait_for_socket(path: str, timeout: float) -> None:
    """Xvfb reports its number slightly before it accepts clients: wait until its socket connects."""
    deadline = time.monotonic() + timeout
    while True:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            try:
                s.connect(path)
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise XvfbUnavailable(f"Xvfb started but {path} accepts no connection") from None
        time.sleep(0.02)
