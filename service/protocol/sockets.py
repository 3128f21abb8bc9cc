"""ZeroMQ sockets of the wire protocol: bounded, never blocking, optionally CURVE-encrypted."""

from __future__ import annotations

from typing import Any

import numpy as np

from service.protocol.keys import CurveKeys
from service.protocol.messages import (
    DEFAULT_HWM,
    DEFAULT_PUB,
    DEFAULT_PULL,
    MAX_HEADER_BYTES,
    MAX_PAYLOAD_BYTES,
    SERVICE_TOPICS,
    Message,
    ProtocolError,
    decode,
    encode,
)

__all__ = ["publisher", "subscriber", "pusher", "puller", "send", "recv", "apply_curve", "check_address"]


def apply_curve(sock: Any, curve: CurveKeys | None) -> Any:
    """Make ``sock`` a CURVE server or client (before it binds or connects); None leaves it plain TCP."""
    if curve is None:
        return sock
    zmq = _zmq()
    if not zmq.has("curve"):  # pragma: no cover - every pyzmq wheel has libsodium/tweetnacl
        raise ProtocolError("this libzmq has no CURVE support; install pyzmq from its wheels")
    sock.setsockopt(zmq.CURVE_PUBLICKEY, curve.public)
    sock.setsockopt(zmq.CURVE_SECRETKEY, curve.secret)
    if curve.is_server:
        sock.setsockopt(zmq.CURVE_SERVER, 1)
        sock.setsockopt(zmq.ZAP_DOMAIN, curve.domain.encode("ascii"))
    else:
        sock.setsockopt(zmq.CURVE_SERVERKEY, curve.server_key)
    return sock


def _zmq():
    import zmq

    return zmq


def publisher(
    ctx: Any, address: str = DEFAULT_PUB, hwm: int = DEFAULT_HWM, bind: bool = True, *, curve: CurveKeys | None = None
) -> Any:
    """A PUB socket with a bounded send high-water mark and ``linger=0``: sending never blocks.

    ``curve``: CurveZMQ keys (None = plain TCP, as on one host).
    """
    zmq = _zmq()
    sock = ctx.socket(zmq.PUB)
    sock.setsockopt(zmq.SNDHWM, hwm)
    sock.setsockopt(zmq.LINGER, 0)
    apply_curve(sock, curve)
    (sock.bind if bind else sock.connect)(address)
    return sock


def subscriber(
    ctx: Any,
    address: str = DEFAULT_PUB,
    topics: tuple[str, ...] = SERVICE_TOPICS,
    hwm: int = 64,
    *,
    curve: CurveKeys | None = None,
) -> Any:
    """A SUB socket connected to ``address`` and subscribed to ``topics`` (reconnects by itself)."""
    zmq = _zmq()
    sock = ctx.socket(zmq.SUB)
    apply_curve(sock, curve)
    sock.setsockopt(zmq.RCVHWM, hwm)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RECONNECT_IVL, 100)
    sock.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
    for t in topics:
        sock.setsockopt(zmq.SUBSCRIBE, t.encode("ascii"))
    sock.connect(address)
    return sock


def pusher(ctx: Any, address: str = DEFAULT_PULL, hwm: int = 1000, *, curve: CurveKeys | None = None) -> Any:
    """A PUSH socket connected to the service's PULL; ``linger=0`` so a dead service never blocks exit."""
    zmq = _zmq()
    sock = ctx.socket(zmq.PUSH)
    apply_curve(sock, curve)
    sock.setsockopt(zmq.SNDHWM, hwm)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(address)
    return sock


def puller(ctx: Any, address: str = DEFAULT_PULL, bind: bool = True, *, curve: CurveKeys | None = None) -> Any:
    """The service's PULL socket for ``event`` and ``flip`` messages.

    A frame larger than any valid one (``MAX_HEADER_BYTES``, ``MAX_PAYLOAD_BYTES``) makes ZeroMQ drop the
    sending peer's connection before the frame is buffered, so a broken or hostile peer cannot make the
    service allocate gigabytes; well-behaved peers reconnect on their own.
    """
    zmq = _zmq()
    sock = ctx.socket(zmq.PULL)
    apply_curve(sock, curve)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVHWM, 1000)
    sock.setsockopt(zmq.MAXMSGSIZE, max(MAX_HEADER_BYTES, MAX_PAYLOAD_BYTES) + 1024)
    (sock.bind if bind else sock.connect)(address)
    return sock


def send(sock: Any, topic: str, header: dict[str, Any], payload: bytes | np.ndarray = b"") -> bool:
    """Send without blocking; returns False when the message was dropped (high-water mark reached)."""
    zmq = _zmq()
    try:
        sock.send_multipart(encode(topic, header, payload), flags=zmq.NOBLOCK, copy=False)
    except zmq.Again:
        return False
    return True


def recv(sock: Any, timeout_ms: int, topics: tuple[str, ...] | None = None) -> Message | None:
    """Receive one message within ``timeout_ms`` (None on timeout); raises ProtocolError if malformed."""
    zmq = _zmq()
    if not sock.poll(timeout_ms, zmq.POLLIN):
        return None
    frames = sock.recv_multipart(copy=True)
    return decode(frames, topics)


def check_address(address: str, what: str = "address", bind: bool = False) -> str:
    """``address`` if it is a ZeroMQ endpoint this project can use, else ProtocolError naming ``what``.

    ``tcp://HOST:PORT`` with a port in 1-65535 (``*`` for any free port when binding; ZeroMQ itself takes a port
    such as 72645 and silently binds 72645 - 65536), ``ipc://PATH`` or ``inproc://NAME``.
    """
    text = str(address)
    scheme, sep, rest = text.partition("://")
    if not sep or scheme not in ("tcp", "ipc", "inproc"):
        raise ProtocolError(f"{what} {text!r} is not a ZeroMQ address (tcp://HOST:PORT, ipc://PATH or inproc://NAME)")
    if scheme != "tcp":
        if not rest:
            raise ProtocolError(f"{what} {text!r} names no {scheme} endpoint")
        return text
    host, colon, port = rest.rpartition(":")
    if not colon or not host:
        raise ProtocolError(f"{what} {text!r} has no host and port (tcp://HOST:PORT)")
    if port == "*" and bind:
        return text
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ProtocolError(f"{what} {text!r}: port {port!r} is not a number from 1 to 65535")
    return text
