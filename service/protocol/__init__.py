"""The wire protocol between the service, the displays and the experiment: the one part of ``service`` that the
stimulus programs import (numpy, pyzmq and the standard library only).

- :mod:`service.protocol.messages`: topics, headers, encoding and decoding, images, sequence numbers;
- :mod:`service.protocol.sockets`: the bounded, never-blocking ZeroMQ sockets;
- :mod:`service.protocol.keys`: CurveZMQ key files and key pairs.

See ``docs/protocol.md`` for the messages and their fields.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "keys": ["KeyFileError", "read_key_file", "CurveKeys"],
        "messages": [
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
            "Message",
            "SeqCounter",
            "encode",
            "decode",
            "encode_image",
            "decode_image",
            "event_header",
            "flip_header",
        ],
        "sockets": ["publisher", "subscriber", "pusher", "puller", "send", "recv", "apply_curve", "check_address"],
    },
)
