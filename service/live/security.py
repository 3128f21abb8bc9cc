"""CurveZMQ between hosts: key pairs on disk, keys for the service's and the peers' sockets, and an authenticator.

On one host the service binds to 127.0.0.1 and needs none of this. When the display or the experiment runs on
another computer, the sockets must bind to a routable address, and then anyone on the network could read the
faces or inject events; CurveZMQ encrypts every message and lets the service refuse any peer whose public key
it does not list.

Key files use ZeroMQ's certificate format (``zmq.auth.load_certificate`` reads them): ``NAME.key`` holds the
public key (share it), ``NAME.key_secret`` both keys (mode 0600, never leaves its host). ``fmriface keys`` makes
them. The service needs its own secret file and a folder of the public keys it accepts; a peer needs its own
secret file and the service's public key.

    ctx = zmq.Context()
    with Authenticator(ctx, allowed="keys/allowed"):
        pub = protocol.publisher(ctx, "tcp://0.0.0.0:5556", curve=server_keys("keys/server.key_secret"))
    # on the display's host:
    sub = protocol.subscriber(ctx, addr, curve=client_keys("keys/display.key_secret", "keys/server.key"))
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from service.protocol import CurveKeys, KeyFileError, read_key_file

__all__ = [
    "KeyFileError",
    "Authenticator",
    "create_keypair",
    "load_public_key",
    "load_secret_keypair",
    "load_allowed_keys",
    "server_keys",
    "client_keys",
    "PUBLIC_SUFFIX",
    "SECRET_SUFFIX",
]

log = logging.getLogger("service.live.security")

PUBLIC_SUFFIX = ".key"
SECRET_SUFFIX = ".key_secret"

_BANNER = """#   ****  Generated on {when} by fmriface keys  ****
#   ZeroMQ CURVE {what} Certificate
#   {advice}

"""


def _write_key_file(path: Path, public: bytes, secret: bytes | None) -> None:
    what, advice = (
        ("**Secret**", "DO NOT PROVIDE THIS FILE TO OTHER USERS nor change its permissions.")
        if secret is not None
        else ("Public", "Give this file to the hosts that must accept this key.")
    )
    text = _BANNER.format(when=time.strftime("%Y-%m-%d %H:%M:%S"), what=what, advice=advice)
    text += f'metadata\ncurve\n    public-key = "{public.decode("ascii")}"\n'
    if secret is not None:
        text += f'    secret-key = "{secret.decode("ascii")}"\n'
    mode = 0o600 if secret is not None else 0o644
    # created with its final mode (no moment where a secret is world-readable), then written
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(text)
    os.chmod(path, mode)  # the umask may have removed bits from a public file


def create_keypair(folder: str | Path, name: str) -> tuple[Path, Path]:
    """Make a new key pair ``folder/NAME.key`` (public) and ``folder/NAME.key_secret`` (mode 0600).

    Refuses to overwrite an existing key (a lost secret cannot be recovered, a replaced one locks peers out).
    """
    import zmq

    if not name or not all(c.isalnum() or c in "-_." for c in name) or name.startswith("."):
        raise KeyFileError(f"key name {name!r} may hold letters, digits, '-', '_' and '.' only")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    public_path, secret_path = folder / f"{name}{PUBLIC_SUFFIX}", folder / f"{name}{SECRET_SUFFIX}"
    for p in (public_path, secret_path):
        if p.exists():
            raise KeyFileError(f"{p} exists; remove it first or choose another name")
    public, secret = zmq.curve_keypair()
    _write_key_file(secret_path, public, secret)
    _write_key_file(public_path, public, None)
    return public_path, secret_path


def load_public_key(path: str | Path) -> bytes:
    """The public key in a ``.key`` (or ``.key_secret``) file."""
    return read_key_file(path)[0]


def load_secret_keypair(path: str | Path) -> tuple[bytes, bytes]:
    """(public, secret) from a ``.key_secret`` file; refuses a file that others may read (like ssh does)."""
    public, secret = read_key_file(path, secret=True)
    return public, secret  # type: ignore[return-value]


def load_allowed_keys(allowed: str | Path | Iterable[str | Path | bytes]) -> set[bytes]:
    """Public keys from a folder of ``*.key`` files, or from a list of files or raw Z85 keys."""
    if isinstance(allowed, (str, Path)):
        folder = Path(allowed)
        if not folder.is_dir():
            raise KeyFileError(f"allowed-keys folder {folder} does not exist")
        items: list[Any] = sorted(folder.glob(f"*{PUBLIC_SUFFIX}"))
        if not items:
            raise KeyFileError(f"allowed-keys folder {folder} holds no *{PUBLIC_SUFFIX} file: no peer could connect")
    else:
        items = list(allowed)
    keys = set()
    for item in items:
        if isinstance(item, bytes):
            if len(item) != 40:
                raise KeyFileError("an allowed key is not 40 Z85 characters")
            keys.add(item)
        else:
            keys.add(load_public_key(item))
    return keys


def server_keys(secret_file: str | Path) -> CurveKeys:
    """Keys of the service's bound sockets (CURVE server)."""
    return CurveKeys.load(secret_file)


def client_keys(secret_file: str | Path, server_public: str | Path | bytes) -> CurveKeys:
    """Keys of a peer's socket (CURVE client) that talks to the server with public key ``server_public``.

    (A stimulus program, which may import only :mod:`service.protocol`, calls ``CurveKeys.load`` directly.)
    """
    public, secret = load_secret_keypair(secret_file)
    server = server_public if isinstance(server_public, bytes) else load_public_key(server_public)
    return CurveKeys(public, secret, server_key=server)


class Authenticator:
    """A ZAP handler thread in ``ctx`` that admits only CURVE clients whose public key is allowed.

    Every CURVE server socket of the context consults it during the handshake; a refused peer never completes
    the handshake, so it receives nothing and what it sends is never delivered. Plain-TCP peers fail the
    handshake before ZAP is asked (the mechanisms differ) and are not counted here.

    ``domain`` is the ZAP domain the server sockets declare (:attr:`service.protocol.CurveKeys.domain`).

    Attributes
    ----------
    accepted, refused : int
        Handshakes admitted and refused so far.
    refused_keys : list of str
        The public keys refused (public keys are not secret; they identify the peer to the operator).
    """

    def __init__(self, ctx: Any, allowed: str | Path | Iterable[str | Path | bytes], domain: str = "fmriface") -> None:
        self.ctx = ctx
        self.allowed = frozenset(load_allowed_keys(allowed))
        self.domain = domain
        self.accepted = 0
        self.refused = 0
        self.refused_keys: list[str] = []
        self._auth: Any = None
        self._judged = threading.Condition()  # notified at every handshake judged

    def callback(self, domain: str, key: bytes) -> bool:
        """The credentials provider pyzmq calls for each CURVE handshake (``key`` is Z85)."""
        ok = key in self.allowed
        with self._judged:
            if ok:
                self.accepted += 1
            else:
                self.refused += 1
                self.refused_keys.append(key.decode("ascii", "replace"))
            self._judged.notify_all()
        if not ok:
            log.warning("refused a CURVE peer with unknown public key %s", self.refused_keys[-1])
        return ok

    def wait_for_handshakes(self, accepted: int = 0, refused: int = 0, timeout: float = 10.0) -> bool:
        """Block until at least ``accepted`` / ``refused`` handshakes were judged (or ``timeout`` s pass): a start-up
        check or a test can know a peer was let in or turned away without polling. True if they were."""
        with self._judged:
            return self._judged.wait_for(lambda: self.accepted >= accepted and self.refused >= refused, timeout)

    def start(self) -> Authenticator:
        """Start ZeroMQ's authenticator thread with the allowed keys."""
        from zmq.auth.thread import ThreadAuthenticator

        self._auth = ThreadAuthenticator(self.ctx, log=logging.getLogger("service.live.security.zap"))
        self._auth.start()
        self._auth.configure_curve_callback(domain=self.domain, credentials_provider=self)
        return self

    def stop(self) -> None:
        """Stop the authenticator thread (idempotent)."""
        if self._auth is not None:
            self._auth.stop()
            self._auth = None

    def __enter__(self) -> Authenticator:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
