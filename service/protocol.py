"""The wire protocol between the service, the displays and the experiment (ZeroMQ, never pickle).

Every message is a multipart ``[topic, header, payload]``: ``topic`` is ASCII, ``header`` is UTF-8 JSON (a
dict), ``payload`` is raw bytes (an image ``uint8 H x W x 3`` in C order) or empty.

Topics
------
service -> displays (PUB, default ``tcp://127.0.0.1:5556``)
    ``frame``  one decoded face per volume
    ``trial``  one decoded face per finished trial
    ``status`` heartbeat (~1 Hz): run state, volumes seen, last motion/FD
    ``end``    run finished, with its summary
experiment and displays -> service (PUSH to the service's PULL, default ``tcp://127.0.0.1:5557``)
    ``event``  ``kind`` is ``trigger`` (scanner trigger time), ``onset`` (a trial: onset, duration,
               trial_type, stim_id), ``target`` (neurofeedback target: ``stim_id`` or an image payload) or
               ``clear_target``
    ``flip``   a display showed frame ``shown_seq`` of topic ``shown_topic`` at ``flip_time``

Common header fields: ``schema``, ``run_id``, ``seq`` (per topic and sender, from 0, no gaps), ``volume``,
``acquisition``, ``t`` (stage timestamps, seconds of ``time.time()``), ``motion`` (6 values: mm, degrees),
``fd`` (mm), ``latent`` (list of floats, omitted when large), ``feedback``, ``shape``, ``dtype``. Receivers
must tolerate unknown fields; this module only checks what it needs to decode a message safely.

This module imports only numpy, pyzmq and the standard library: the stimulus programs import it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "SCHEMA",
    "DEFAULT_PUB",
    "DEFAULT_PULL",
    "SERVICE_TOPICS",
    "INBOUND_TOPICS",
    "EVENT_KINDS",
    "ProtocolError",
    "KeyFileError",
    "read_key_file",
    "Message",
    "SeqCounter",
    "encode",
    "decode",
    "encode_image",
    "decode_image",
    "event_header",
    "flip_header",
    "publisher",
    "subscriber",
    "pusher",
    "puller",
    "send",
    "recv",
    "CurveKeys",
    "apply_curve",
]

SCHEMA = 1
DEFAULT_PUB = "tcp://127.0.0.1:5556"
DEFAULT_PULL = "tcp://127.0.0.1:5557"
SERVICE_TOPICS = ("frame", "trial", "status", "end")
INBOUND_TOPICS = ("event", "flip")
EVENT_KINDS = ("trigger", "onset", "target", "clear_target")
#: Largest header we accept (bytes); a header is a few hundred bytes, or ~20 kB with a 1024-D latent.
MAX_HEADER_BYTES = 1 << 20
#: Largest image payload we accept: 1024 x 1024 x 3.
MAX_PAYLOAD_BYTES = 1024 * 1024 * 3
#: Default send high-water mark: a slow display never slows the service, it just misses old frames.
DEFAULT_HWM = 16


class ProtocolError(ValueError):
    """A message that cannot be decoded: wrong part count, bad JSON, unknown topic, inconsistent payload."""

    user_error = True


@dataclass
class Message:
    """One decoded message."""

    topic: str
    header: dict[str, Any]
    payload: bytes = b""
    received: float = field(default_factory=time.time)

    def image(self) -> np.ndarray:
        """The payload as a ``uint8`` image of the header's ``shape`` (raises ProtocolError if inconsistent)."""
        return decode_image(self.header, self.payload)


class SeqCounter:
    """Per-topic sequence numbers from 0 without gaps; ``resume`` continues a restarted run's numbering."""

    def __init__(self, start: dict[str, int] | None = None) -> None:
        self._next: dict[str, int] = dict(start or {})

    def next(self, topic: str) -> int:
        n = self._next.get(topic, 0)
        self._next[topic] = n + 1
        return n

    def advance_to(self, topic: str, n: int) -> None:
        """Make ``n`` the next number of ``topic`` unless it is already past it (resume from records)."""
        self._next[topic] = max(self._next.get(topic, 0), int(n))

    def peek(self, topic: str) -> int:
        return self._next.get(topic, 0)

    def state(self) -> dict[str, int]:
        return dict(self._next)


def _jsonable(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    raise TypeError(f"cannot send {type(v).__name__} in a message header")


def encode(topic: str, header: dict[str, Any], payload: bytes | memoryview | np.ndarray = b"") -> list[bytes]:
    """Encode a message as the three frames ``[topic, header, payload]``; ``schema`` is added if missing."""
    if not topic.isascii() or not topic:
        raise ProtocolError(f"topic {topic!r} must be non-empty ASCII")
    if "schema" not in header:
        header = {"schema": SCHEMA, **header}
    if isinstance(payload, np.ndarray):
        payload = np.ascontiguousarray(payload).tobytes()
    return [topic.encode("ascii"), json.dumps(header, default=_jsonable, allow_nan=False).encode(), bytes(payload)]


def decode(frames: list[bytes] | list[Any], topics: tuple[str, ...] | None = None) -> Message:
    """Decode ``[topic, header, payload]``; raises ProtocolError with the reason for anything malformed.

    Parameters
    ----------
    frames : list of bytes (or zmq.Frame)
    topics : tuple of str, optional
        Accepted topics; any other is an error.
    """
    frames = [bytes(f.bytes if hasattr(f, "bytes") else f) for f in frames]
    if len(frames) not in (2, 3):
        raise ProtocolError(f"expected 3 message parts [topic, header, payload], got {len(frames)}")
    topic_b, header_b = frames[0], frames[1]
    payload = frames[2] if len(frames) == 3 else b""
    try:
        topic = topic_b.decode("ascii")
    except UnicodeDecodeError:
        raise ProtocolError("topic is not ASCII") from None
    if topics is not None and topic not in topics:
        raise ProtocolError(f"unknown topic {topic!r}; expected one of {list(topics)}")
    if len(header_b) > MAX_HEADER_BYTES:
        raise ProtocolError(f"header of {len(header_b)} bytes exceeds {MAX_HEADER_BYTES}")
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise ProtocolError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD_BYTES}")
    try:
        header = json.loads(header_b.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"header is not UTF-8 JSON: {exc}") from None
    if not isinstance(header, dict):
        raise ProtocolError(f"header must be a JSON object, got {type(header).__name__}")
    schema = header.get("schema")
    if schema != SCHEMA:
        raise ProtocolError(f"schema {schema!r} is not supported (this side speaks {SCHEMA})")
    if payload and "shape" in header:
        decode_image(header, payload)  # validates shape/dtype against the payload length
    return Message(topic, header, payload)


def encode_image(image: np.ndarray) -> tuple[dict[str, Any], bytes]:
    """Header fields (``shape``, ``dtype``) and payload bytes of an image.

    A float image in [0, 1] is converted to ``uint8``; the image must be ``H x W x 3``.
    """
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ProtocolError(f"an image must be H x W x 3, got shape {img.shape}")
    if img.dtype != np.uint8:
        img = np.clip(np.rint(img.astype(np.float32) * 255.0), 0, 255).astype(np.uint8)
    return {"shape": list(img.shape), "dtype": "uint8"}, np.ascontiguousarray(img).tobytes()


def decode_image(header: dict[str, Any], payload: bytes) -> np.ndarray:
    """The image carried by a message (a read-only view of the payload)."""
    shape = header.get("shape")
    dtype = header.get("dtype", "uint8")
    if dtype != "uint8":
        raise ProtocolError(f"image dtype {dtype!r} is not supported (uint8 only)")
    if not (isinstance(shape, list) and len(shape) == 3 and all(isinstance(s, int) and s > 0 for s in shape)):
        raise ProtocolError(f"image shape {shape!r} is not [H, W, 3]")
    if shape[2] != 3:
        raise ProtocolError(f"image shape {shape} has {shape[2]} channels, expected 3")
    expected = shape[0] * shape[1] * 3
    if len(payload) != expected:
        raise ProtocolError(f"payload has {len(payload)} bytes, shape {shape} needs {expected}")
    return np.frombuffer(payload, dtype=np.uint8).reshape(shape)


def event_header(kind: str, seq: int, **fields: Any) -> dict[str, Any]:
    """Header of an ``event`` message (experiment -> service).

    ``kind`` is one of :data:`EVENT_KINDS`. Typical fields: ``trigger_time`` (``time.time()`` of the first
    scanner trigger), ``onset`` and ``duration`` (s from the trigger), ``trial_type``, ``stim_id``,
    ``trial`` (index in run).
    """
    if kind not in EVENT_KINDS:
        raise ProtocolError(f"event kind {kind!r} is not one of {list(EVENT_KINDS)}")
    return {"schema": SCHEMA, "kind": kind, "seq": seq, "sent": time.time(), **fields}


def flip_header(seq: int, shown_topic: str, shown_seq: int, flip_time: float, **fields: Any) -> dict[str, Any]:
    """Header of a ``flip`` ack (display -> service): frame ``shown_seq`` reached the screen at ``flip_time``."""
    return {
        "schema": SCHEMA,
        "seq": seq,
        "shown_topic": shown_topic,
        "shown_seq": shown_seq,
        "flip_time": flip_time,
        **fields,
    }


# --- sockets ---------------------------------------------------------------------------------------------


class KeyFileError(ProtocolError):
    """A CURVE key file that is missing, unreadable, malformed or too open (a secret readable by others)."""


def read_key_file(path: str | Path, secret: bool = False) -> tuple[bytes, bytes | None]:
    """``(public, secret)`` Z85 keys of a ZeroMQ certificate file (``secret`` None in a public ``.key`` file).

    With ``secret=True`` the file must hold the secret key and be readable by its owner alone (like ssh).
    The one reader of key files: :mod:`service.security` and the stimulus programs both use it.
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
    """CurveZMQ keys of one socket (Z85 text, 40 bytes each); see :mod:`service.security` to make and load them.

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
