"""CurveZMQ key files and key pairs: the encryption and authentication of links between hosts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.protocol.messages import ProtocolError

__all__ = ["KeyFileError", "read_key_file", "CurveKeys"]


class KeyFileError(ProtocolError):
    """A CURVE key file that is missing, unreadable, malformed or too open (a secret readable by others)."""


def read_key_file(path: str | Path, secret: bool = False) -> tuple[bytes, bytes | None]:
    """``(public, secret)`` Z85 keys of a ZeroMQ certificate file (``secret`` None in a public ``.key`` file).

    With ``secret=True`` the file must hold the secret key and be readable by its owner alone (like ssh).
    The one reader of key files: :mod:`service.live.security` and the stimulus programs both use it.
    """
    import stat

    import zmq.auth

    path = Path(path)
    if not path.is_file():
        raise KeyFileError(f"key file {path} does not exist (make one with `fmriface keys`)")
    try:
        public, secret_key = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise KeyFileError(f"key file {path} is not a ZeroMQ certificate: {exc}") from None
    for what, key in (("public", public), ("secret", secret_key)):
        if key is not None and len(key) != 40:
            raise KeyFileError(f"key file {path}: the {what} key is not 40 Z85 characters")
    if secret:
        if secret_key is None:
            raise KeyFileError(f"key file {path} holds no secret key; pass the .key_secret file")
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise KeyFileError(f"secret key file {path} has mode {mode:04o}; others may read it: chmod 600 {path}")
    return public, secret_key


@dataclass(frozen=True)
class CurveKeys:
    """CurveZMQ keys of one socket (Z85 text, 40 bytes each); see :mod:`service.live.security` to make and load them.

    ``server_key`` None: the socket is a CURVE *server* (the service's PUB and PULL), which needs a ZAP
    authenticator in its context to refuse unknown clients. ``server_key`` set (the server's public key): the
    socket is a CURVE *client* (a display's SUB, an experiment's PUSH) that proves ``public``/``secret``.
    """

    public: bytes
    secret: bytes
    server_key: bytes | None = None
    domain: str = "fmriface"

    def __post_init__(self) -> None:
        for name in ("public", "secret") + (("server_key",) if self.server_key is not None else ()):
            key = getattr(self, name)
            if not isinstance(key, bytes) or len(key) != 40:
                raise ProtocolError(f"CURVE {name} must be a 40-character Z85 key, got {_describe_key(key)}")

    @property
    def is_server(self) -> bool:
        """True for the server's keys (no server public key given), False for a client's."""
        return self.server_key is None

    @classmethod
    def load(cls, secret_file: str | Path, server_public_file: str | Path | None = None) -> CurveKeys:
        """Keys from ZeroMQ certificate files (``fmriface keys`` writes them): this side's ``NAME.key_secret``
        and, for a client, the server's public ``server.key``. A secret file others may read is refused."""
        public, secret = read_key_file(secret_file, secret=True)
        server = None if server_public_file is None else read_key_file(server_public_file)[0]
        return cls(public, secret, server_key=server)  # type: ignore[arg-type]

    def __repr__(self) -> str:  # never print a secret key in a log or a traceback
        role = "server" if self.is_server else "client"
        return f"CurveKeys({role}, public={self.public.decode('ascii', 'replace')})"


def _describe_key(key: Any) -> str:
    return f"{type(key).__name__} of length {len(key)}" if hasattr(key, "__len__") else type(key).__name__
