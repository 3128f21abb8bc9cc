"""Parsing scanner files in one helper process while the worker is behind.

Intake (parsing DICOM headers with pydicom, about 1-2 ms of pure Python per mosaic) and the worker (motion
correction) share one interpreter lock. In a live run a volume arrives every TR and the worker is idle when it
does, so parsing in the intake thread costs nothing and adds no hand-over. When volumes queue up (a replay as
fast as possible, a restart catching up), the two threads take turns on the lock and each waits for the other.
Then the parse moves to one helper process: the intake thread sends the file's bytes and waits (without the
lock) while the worker corrects motion, and both cores work.

The helper is started on the first backlog, in the background; until it has answered once, files are parsed in
the intake thread. If it dies, parsing goes back to the intake thread for the rest of the run, ``failure`` says
why and ``on_give_up`` is told; no file is lost (the file whose parse was cut short is parsed again in the thread).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from service.intake.assembly import read_image

__all__ = ["ParseOffload"]

#: The folder holding this ``service`` package: the helper's first import path, so that it runs this very code
#: (not a ``service`` folder in the working directory).
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: A parse that takes longer than this in the helper (a hung helper) gives the helper up.
_TIMEOUT_S = 10.0
#: The helper's start: Ctrl-C ignored before anything is imported, the import path fixed, then the loop.
_BOOT = (
    "import signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); sys.path[0] = {root!r}; "
    "from service.intake.parse_offload import _main; _main()"
)


def _main() -> None:
    """The helper process: ``argv`` holds the two pipe descriptors."""
    _helper(Connection(int(sys.argv[1]), writable=False), Connection(int(sys.argv[2]), readable=False))


def _helper(conn_in: Connection, conn_out: Connection) -> None:
    """The helper's loop: (path, raw, sha256, kind) in, ("ok", image) or ("error", exception) out."""
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
    """``read(path, raw, sha256, kind, backlog)``: :func:`service.intake.assembly.read_image`, in the helper process when
    ``backlog`` is true and the helper is up, else in the calling thread.

    One thread (the watcher's intake thread) calls ``read``; :meth:`kill` may come from another thread (it ends
    a wait on the helper), :meth:`close` once that thread has ended. The helper is a plain ``python -c`` child
    in a session of its own (the terminal's Ctrl-C is the service's to handle) talking over two pipes, not
    :mod:`multiprocessing`'s spawn, which would re-import the embedding program's main module; its stderr goes
    to a temporary file, quoted when it fails to start, so ``--json-log`` output stays JSON.

    Parameters
    ----------
    enabled : bool
        False: always parse in the calling thread (``WatcherConfig.parse_process = "off"``).
    on_give_up : callable(reason, path), optional
        Called once, when the helper is given up, with why and the file being read then (the watcher reports it
        as an intake event).
    """

    def __init__(self, enabled: bool = True, on_give_up: Callable[[str, Path | None], None] | None = None) -> None:
        self.enabled = enabled
        self.on_give_up = on_give_up
        self.failure: str | None = None
        self.n_offloaded = 0
        self._proc: subprocess.Popen | None = None
        self._stderr = None
        self._to: Connection | None = None
        self._from: Connection | None = None
        self._ready = False

    def read(self, path: Path, raw: bytes, sha256: str, kind: str, backlog: bool) -> Any:
        """Parse one file into an image, in the helper process when ``backlog`` is true and it is up.

        When the helper dies or does not answer, it is given up (``on_give_up`` is told) and this file and all later
        ones are parsed in the calling thread; a parse error from the helper is raised here as it was raised there.
        """
        if backlog and self.enabled and self._up(path):
            try:
                self._to.send((path, raw, sha256, kind))
                if not self._from.poll(_TIMEOUT_S):
                    raise TimeoutError(f"no answer within {_TIMEOUT_S:.0f} s")
                status, value = self._from.recv()
            except (EOFError, OSError, TimeoutError) as exc:  # the helper died or hung: parse here from now on
                self._fail(
                    f"the parse process stopped ({type(exc).__name__}: {exc}); parsing in the intake thread", path
                )
            else:
                self.n_offloaded += 1
                if status == "error":
                    raise value
                return value
        return read_image(path, raw, sha256=sha256, kind=kind)

    def _up(self, path: Path | None = None) -> bool:
        """Whether the helper is ready; starts it (in the background) the first time (``path``: the file that
        asks, named if the helper is given up)."""
        if self._ready or self.failure is not None:
            return self._ready
        if self._proc is None:
            to_r, to_w = os.pipe()
            from_r, from_w = os.pipe()
            try:
                self._stderr = tempfile.TemporaryFile()
                self._proc = subprocess.Popen(
                    [sys.executable, "-c", _BOOT.format(root=_ROOT), str(to_r), str(from_w)],
                    pass_fds=(to_r, from_w),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=self._stderr,
                    start_new_session=True,
                )
            except Exception as exc:  # noqa: BLE001 - OSError, or anything else: intake goes on in the thread
                for fd in (to_r, to_w, from_r, from_w):
                    os.close(fd)
                self._fail(f"the parse process could not be started ({exc}); parsing in the intake thread", path)
                return False
            finally:
                if self._proc is not None:
                    os.close(to_r)
                    os.close(from_w)
            self._to, self._from = Connection(to_w, readable=False), Connection(from_r, writable=False)
        try:
            if self._from.poll(0):
                self._ready = self._from.recv() == "ready"
        except (EOFError, OSError) as exc:
            said = self._helper_stderr()
            self._fail(
                f"the parse process failed to start ({type(exc).__name__}{': ' + said if said else ''}); "
                "parsing in the intake thread",
                path,
            )
        return self._ready

    def _helper_stderr(self) -> str:
        """The end of what the helper wrote on stderr (one line), for a failure's reason."""
        if self._stderr is None:
            return ""
        try:
            self._stderr.seek(0)
            return " | ".join(self._stderr.read()[-600:].decode(errors="replace").strip().splitlines()[-3:])
        except (OSError, ValueError):
            return ""

    def _fail(self, reason: str, path: Path | None) -> None:
        self.failure = reason
        self.close()
        if self.on_give_up is not None:
            self.on_give_up(reason, path)

    def kill(self) -> None:
        """End the helper process now (from any thread): a ``read`` waiting on it returns and parses in its
        thread. Descriptors are left to :meth:`close`."""
        proc = self._proc
        if proc is not None:
            try:
                proc.kill()
            except OSError:
                pass

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
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
