"""Parsing scanner files in one helper process while the worker is behind.

Intake (parsing DICOM headers with pydicom, about 1-2 ms of pure Python per mosaic) and the worker (motion
correction) share one interpreter lock. In a live run a volume arrives every TR and the worker is idle when it
does, so parsing in the intake thread costs nothing and adds no hand-over. When volumes queue up (a replay as
fast as possible, a restart catching up), the two threads take turns on the lock and each waits for the other.
Then the parse moves to one helper process: the intake thread sends the file's bytes and waits (without the
lock) while the worker corrects motion, and both cores work.

The helper is started on the first backlog, in the background; until it has answered once, files are parsed in
the intake thread. If it dies, parsing goes back to the intake thread for the rest of the run and ``failure``
says why; no file is lost (the file whose parse was cut short is parsed again in the thread).
"""

from __future__ import annotations

import os
import subprocess
import sys
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from service.readers import read_image

__all__ = ["ParseOffload"]

#: The folder holding this ``service`` package, first on the helper's path so that it runs this very code.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: A parse that takes longer than this in the helper (a hung helper) gives the helper up.
_TIMEOUT_S = 10.0


def _helper(conn_in: Connection, conn_out: Connection) -> None:
    """The helper's loop: (path, raw, sha256, kind) in, ("ok", image) or ("error", exception) out."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: the service decides
    try:
        conn_out.send("ready")
        while True:
            path, raw, sha256, kind = conn_in.recv()
            try:
                out = ("ok", read_image(path, raw, sha256=sha256, kind=kind))
            except Exception as exc:  # noqa: BLE001 - raised again in the intake thread, as if parsed there
                out = ("error", exc)
            conn_out.send(out)
    except (EOFError, OSError):  # the service closed the pipe or exited: nothing more to do
        return


class ParseOffload:
    """``read(path, raw, sha256, kind, backlog)``: :func:`service.readers.read_image`, in the helper process when
    ``backlog`` is true and the helper is up, else in the calling thread.

    The helper is a plain ``python -m service._parse_offload`` child talking over two pipes (not
    :mod:`multiprocessing`'s spawn, which would re-import the embedding program's main module).

    Parameters
    ----------
    enabled : bool
        False: always parse in the calling thread (``WatcherConfig.parse_process = "off"``).
    """

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.failure: str | None = None
        self.n_offloaded = 0
        self._notice: str | None = None
        self._proc: subprocess.Popen | None = None
        self._to: Connection | None = None
        self._from: Connection | None = None
        self._ready = False

    def read(self, path: Path, raw: bytes, sha256: str, kind: str, backlog: bool) -> Any:
        if backlog and self.enabled and self._up():
            try:
                self._to.send((path, raw, sha256, kind))
                if not self._from.poll(_TIMEOUT_S):
                    raise TimeoutError(f"no answer within {_TIMEOUT_S:.0f} s")
                status, value = self._from.recv()
            except (EOFError, OSError, TimeoutError) as exc:  # the helper died or hung: parse here from now on
                self._fail(f"the parse process stopped ({type(exc).__name__}: {exc}); parsing in the intake thread")
            else:
                self.n_offloaded += 1
                if status == "error":
                    raise value
                return value
        return read_image(path, raw, sha256=sha256, kind=kind)

    def _up(self) -> bool:
        """Whether the helper is ready; starts it (in the background) the first time."""
        if self._ready or self.failure is not None:
            return self._ready
        if self._proc is None:
            to_r, to_w = os.pipe()
            from_r, from_w = os.pipe()
            try:
                self._proc = subprocess.Popen(
                    [sys.executable, "-m", "service._parse_offload", str(to_r), str(from_w)],
                    pass_fds=(to_r, from_w),
                    stdin=subprocess.DEVNULL,
                    env={
                        **os.environ,
                        "PYTHONPATH": os.pathsep.join(filter(None, (_ROOT, os.environ.get("PYTHONPATH")))),
                    },
                )
            except OSError as exc:
                for fd in (to_r, to_w, from_r, from_w):
                    os.close(fd)
                self._fail(f"the parse process could not be started ({exc}); parsing in the intake thread")
                return False
            os.close(to_r)
            os.close(from_w)
            self._to, self._from = Connection(to_w, readable=False), Connection(from_r, writable=False)
        try:
            if self._from.poll(0):
                self._ready = self._from.recv() == "ready"
        except (EOFError, OSError) as exc:
            self._fail(f"the parse process failed to start ({type(exc).__name__}); parsing in the intake thread")
        return self._ready

    def _fail(self, reason: str) -> None:
        self.failure = self._notice = reason
        self.close()

    def take_notice(self) -> str | None:
        """Why the helper was given up, once (None otherwise): the watcher reports it as an intake event."""
        notice, self._notice = self._notice, None
        return notice

    def close(self) -> None:
        """Stop the helper: closing its pipe ends it; one that does not end within a second is killed."""
        self._ready = False
        for conn in (self._to, self._from):
            if conn is not None:
                conn.close()
        self._to = self._from = None
        if self._proc is not None:
            try:
                self._proc.wait(timeout=1.0)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=5.0)
            self._proc = None


if __name__ == "__main__":
    _helper(Connection(int(sys.argv[1]), writable=False), Connection(int(sys.argv[2]), readable=False))
