"""The service's sockets: a PUB for frames/trials/status/end and a PULL for events and flip acks.

Publishing never blocks: the PUB socket has a bounded send high-water mark, so a subscriber that reads slowly
or not at all only misses frames (ZeroMQ drops them for that subscriber alone). Inbound messages are drained
without blocking; a malformed one is counted and logged, never raised.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from service import protocol as P

__all__ = ["Publisher", "PortInUseError", "check_bindable"]

log = logging.getLogger("service.live.publisher")


class PortInUseError(OSError):
    """A ZeroMQ address the service must bind is taken."""

    user_error = True


def check_bindable(ctx: Any, address: str, what: str) -> None:
    """Raise PortInUseError (saying what to do) if ``address`` cannot be bound."""
    import zmq

    sock = ctx.socket(zmq.PUB)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.bind(address)
        sock.unbind(address)
    except zmq.ZMQError as exc:
        raise PortInUseError(
            f"cannot bind the {what} address {address}: {exc.strerror}; another fmriface serve may be running "
            f"(stop it) or pass another address (--{what} tcp://127.0.0.1:PORT)"
        ) from None
    finally:
        sock.close(linger=0)


class Publisher:
    """Bound PUB and PULL sockets with per-topic sequence numbers.

    Parameters
    ----------
    pub, pull : str
        Addresses to bind (``pull`` may be empty: no inbound messages).
    hwm : int
        Send high-water mark per subscriber.
    seq : dict, optional
        Sequence counters to continue (a resumed run).
    curve : service.protocol.CurveKeys, optional
        The service's CURVE server keys: both sockets then encrypt and admit only ``allowed`` peers.
    allowed : path or iterable of keys, optional
        The public keys of the peers admitted (with ``curve``); see :class:`service.live.security.Authenticator`.

    Attributes
    ----------
    sent, dropped : dict
        Messages sent per topic; messages ZeroMQ refused (only when no peer can take them).
    malformed : int
        Inbound messages that could not be decoded.
    """

    def __init__(
        self,
        pub: str,
        pull: str = "",
        hwm: int = P.DEFAULT_HWM,
        seq: dict[str, int] | None = None,
        curve: P.CurveKeys | None = None,
        allowed: Any = None,
    ):
        import zmq

        self.ctx = zmq.Context()
        self.pub_address, self.pull_address = pub, pull
        self.auth = None
        if curve is not None:  # the ZAP handler must run before the CURVE sockets bind
            from service.live.security import Authenticator

            self.auth = Authenticator(self.ctx, allowed if allowed is not None else ()).start()
        try:
            self.pub = P.publisher(self.ctx, pub, hwm=hwm, curve=curve)
            self.pull = P.puller(self.ctx, pull, curve=curve) if pull else None
        except zmq.ZMQError as exc:
            if self.auth is not None:
                self.auth.stop()
            self.ctx.destroy(linger=0)
            raise PortInUseError(f"cannot bind {pub} / {pull}: {exc.strerror}; pass other addresses") from None
        self.seq = P.SeqCounter(seq)
        self.sent: dict[str, int] = {}
        self.malformed = 0

    def send(self, topic: str, header: dict[str, Any], payload: bytes | np.ndarray = b"") -> int:
        """Send one message; its ``seq`` (returned) is assigned here and ``t.sent`` stamped just before."""
        seq = self.seq.next(topic)
        header["seq"] = seq
        t = header.get("t")
        if isinstance(t, dict):
            t["sent"] = time.time()
        if P.send(self.pub, topic, header, payload):  # a PUB socket drops at its high-water mark, silently
            self.sent[topic] = self.sent.get(topic, 0) + 1
        return seq

    def receive(self, limit: int = 100) -> list[P.Message]:
        """Inbound ``event``/``flip`` messages waiting now (never blocks); malformed ones are counted."""
        out: list[P.Message] = []
        if self.pull is None:
            return out
        for _ in range(limit):
            try:
                msg = P.recv(self.pull, 0, P.INBOUND_TOPICS)
            except P.ProtocolError as exc:
                self.malformed += 1
                log.warning("ignored a malformed inbound message: %s", exc)
                continue
            if msg is None:
                break
            out.append(msg)
        return out

    def close(self) -> None:
        self.pub.close(linger=0)
        if self.pull is not None:
            self.pull.close(linger=0)
        if self.auth is not None:
            self.auth.stop()
        self.ctx.term()
