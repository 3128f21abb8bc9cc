"""The wire protocol between the service, the displays and the experiment (ZeroMQ, never pickle).

Every message is a multipart ``[topic, header, payload]``: ``topic`` is ASCII, ``header`` is UTF-8 JSON (a
dict), ``payload`` is raw bytes (an image ``uint8 H x W x 3`` in C order) or empty.

Topics
------
service -> displays (PUB, default ``tcp://127.0.0.1:5556``)
    ``frame``  one decoded face per volume
    ``trial``  one decoded face per finished trial
    ``status`` heartbeat (~1 Hz): run state, volumes seen, last motion/FD, QA counts
    ``qa``     every few volumes: the QA maps (mean EPI with the mask outlined, tSNR) as an image
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

The package imports only numpy, pyzmq, the standard library and service.jsonsafe: the stimulus programs import it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from service import jsonsafe as strict_json

__all__ = [
    "SCHEMA",
    "DEFAULT_PUB",
    "DEFAULT_PULL",
    "SERVICE_TOPICS",
    "INBOUND_TOPICS",
    "EVENT_KINDS",
    "ProtocolError",
    "Message",
    "SeqCounter",
    "encode",
    "decode",
    "encode_image",
    "decode_image",
    "event_header",
    "flip_header",
]

SCHEMA = 1
DEFAULT_PUB = "tcp://127.0.0.1:5556"
DEFAULT_PULL = "tcp://127.0.0.1:5557"
SERVICE_TOPICS = ("frame", "trial", "status", "qa", "end")
INBOUND_TOPICS = ("event", "flip")
EVENT_KINDS = ("trigger", "onset", "target", "clear_target")
#: Largest header we accept (bytes); a header is a few hundred bytes, or ~20 kB with a 1024-D latent.
MAX_HEADER_BYTES = 1 << 20
#: Largest image payload we accept: 1024 x 1024 x 3.
MAX_PAYLOAD_BYTES = 1024 * 1024 * 3
#: Largest image side a receiver takes (a display cannot draw a 1 x 1,000,000 face).
MAX_IMAGE_SIDE = 4096
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
        """The next number of ``topic`` (0 first), counted as used."""
        n = self._next.get(topic, 0)
        self._next[topic] = n + 1
        return n

    def advance_to(self, topic: str, n: int) -> None:
        """Make ``n`` the next number of ``topic`` unless it is already past it (resume from records)."""
        self._next[topic] = max(self._next.get(topic, 0), int(n))

    def peek(self, topic: str) -> int:
        """The number :meth:`next` would give ``topic``, without using it."""
        return self._next.get(topic, 0)

    def state(self) -> dict[str, int]:
        """The next number of every topic seen, saved in the run's state so a restart resumes the numbering."""
        return dict(self._next)


def encode(topic: str, header: dict[str, Any], payload: bytes | memoryview | np.ndarray = b"") -> list[bytes]:
    """Encode a message as the three frames ``[topic, header, payload]``; ``schema`` is added if missing."""
    if not topic.isascii() or not topic:
        raise ProtocolError(f"topic {topic!r} must be non-empty ASCII")
    if "schema" not in header:
        header = {"schema": SCHEMA, **header}
    if isinstance(payload, np.ndarray):
        payload = np.ascontiguousarray(payload).tobytes()
    try:
        text = strict_json.dumps(header)
    except strict_json.NonFiniteError as exc:
        raise ProtocolError(f"{topic} header: {exc}") from None
    return [topic.encode("ascii"), text.encode(), bytes(payload)]


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
        header = strict_json.loads(header_b.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"header is not UTF-8 JSON: {exc}") from None
    except strict_json.NonFiniteError as exc:
        raise ProtocolError(f"header is not strict JSON: {exc}") from None
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
    if max(shape[0], shape[1]) > MAX_IMAGE_SIDE:
        raise ProtocolError(f"image shape {shape} is larger than {MAX_IMAGE_SIDE} pixels on a side")
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
