"""The wire protocol between the service, the displays and the experiment: the one part of ``service`` that the
stimulus programs import (numpy, pyzmq and the standard library only).

- :mod:`service.protocol.messages`: topics, headers, encoding and decoding, images, sequence numbers;
- :mod:`service.protocol.sockets`: the bounded, never-blocking ZeroMQ sockets;
- :mod:`service.protocol.keys`: CurveZMQ key files and key pairs.

See ``docs/protocol.md`` for the messages and their fields.
"""

from service.protocol.keys import CurveKeys, KeyFileError, read_key_file
from service.protocol.messages import (
    DEFAULT_HWM,
    DEFAULT_PUB,
    DEFAULT_PULL,
    EVENT_KINDS,
    INBOUND_TOPICS,
    MAX_HEADER_BYTES,
    MAX_IMAGE_SIDE,
    MAX_PAYLOAD_BYTES,
    SCHEMA,
    SERVICE_TOPICS,
    Message,
    ProtocolError,
    SeqCounter,
    decode,
    decode_image,
    encode,
    encode_image,
    event_header,
    flip_header,
)
from service.protocol.sockets import apply_curve, check_address, publisher, puller, pusher, recv, send, subscriber

__all__ = [
    "SCHEMA",
    "DEFAULT_PUB",
    "DEFAULT_PULL",
    "DEFAULT_HWM",
    "MAX_HEADER_BYTES",
    "MAX_PAYLOAD_BYTES",
    "MAX_IMAGE_SIDE",
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
    "check_address",
]
