"""The service's sockets: a PUB for frames/trials/status/qa/end and a PULL for events and flip acks.

:class:`Publisher` is the service's primary output (:mod:`service.live.outputs`): it numbers the frames and
trials, and its PUB socket is what the wire protocol (docs/protocol.md) describes.

Publishing never blocks: the PUB socket has a bounded send high-water mark, so a subscriber that reads slowly
or not at all only misses frames (ZeroMQ drops them for that subscriber alone). Inbound messages are drained
without blocking; a malformed one is counted and logged, never raised, and one over the inbound limits
(:mod:`service.live.inbound`) is dropped and counted by kind; their log lines are rate-limited.

An address may name port ``*`` (``tcp://127.0.0.1:*``): the system picks a free port, and ``pub_address`` /
``pull_address`` hold the endpoints actually bound.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import numpy as np

from service import protocol
from service.live.inbound import InboundGate, InboundLimits, OverLimit

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
        sock.unbind(sock.getsockopt_string(zmq.LAST_ENDPOINT))  # the bound endpoint: "*" names no port to unbind
    except zmq.ZMQError as exc:
        raise PortInUseError(
            f"cannot bind the {what} address {address}: {exc.strerror}; another fmriface serve may be running "
            f"(stop it) or pass another address (--{what} tcp://127.0.0.1:PORT)"
        ) from None
    finally:
        sock.close(linger=0)


class Publisher:
    """Bound PUB and PULL sockets with per-topic sequence numbers: the primary :class:`~service.live.outputs.Output`
    (``frame``, ``trial``, ``status``, ``qa``, ``end``) and the inbound side (``receive``).

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
    limits : InboundLimits, optional
        The limits on inbound messages (default :class:`~service.live.inbound.InboundLimits`).

    Attributes
    ----------
    pub_address, pull_address : str
        The endpoints bound (an address with port ``*`` reads back with the port the system chose).
    sent : dict
        Messages ZeroMQ accepted, per topic. Accepted is not delivered: a PUB socket queues a message for each
        connected subscriber whose queue has room and drops it, silently and for that subscriber alone, where
        the queue is full (no count here can see those).
    dropped : dict
        Messages ZeroMQ refused outright (``EAGAIN``), per topic: none with a plain PUB socket, which never
        refuses; counted so that ``sent`` counts accepted messages only.
    malformed : int
        Inbound messages that could not be decoded here, or that whoever handled them could not use
        (:meth:`count_malformed`).
    gate : InboundGate
        The inbound limits: ``gate.dropped`` counts the messages dropped, by kind; ``gate.open_trials`` may be
        set to the pipeline's count of trials waiting for their window.
    """

    #: How long (ms) :meth:`close` lets ZeroMQ go on handing queued messages (the ``end`` message) to connected
    #: subscribers: a peer that reads costs milliseconds, one that stopped reading holds the close this long.
    CLOSE_LINGER_MS = 1000

    def __init__(
        self,
        pub: str,
        pull: str = "",
        hwm: int = protocol.DEFAULT_HWM,
        seq: dict[str, int] | None = None,
        curve: protocol.CurveKeys | None = None,
        allowed: Any = None,
        limits: InboundLimits | None = None,
    ):
        import zmq

        self.ctx = zmq.Context()
        self.pub_address, self.pull_address = pub, pull
        self.auth = None
        if curve is not None:  # the ZAP handler must run before the CURVE sockets bind
            from service.live.security import Authenticator

            self.auth = Authenticator(self.ctx, allowed if allowed is not None else ()).start()
        try:
            self.pub = protocol.publisher(self.ctx, pub, hwm=hwm, curve=curve)
            self.pull = protocol.puller(self.ctx, pull, curve=curve) if pull else None
        except zmq.ZMQError as exc:
            if self.auth is not None:
                self.auth.stop()
            self.ctx.destroy(linger=0)
            raise PortInUseError(f"cannot bind {pub} / {pull}: {exc.strerror}; pass other addresses") from None
        self.pub_address = self.pub.getsockopt_string(zmq.LAST_ENDPOINT)
        if self.pull is not None:
            self.pull_address = self.pull.getsockopt_string(zmq.LAST_ENDPOINT)
        self.seq = protocol.SeqCounter(seq)
        self.sent: dict[str, int] = {}
        self.dropped: dict[str, int] = {}
        self.malformed = 0
        self.gate = InboundGate(limits)
        self.inbound = 0  # inbound messages taken off the socket, malformed ones included
        self._inbound_cv = threading.Condition()

    def send(self, topic: str, header: dict[str, Any], payload: bytes | np.ndarray = b"") -> int:
        """Send one message; its ``seq`` (returned) is assigned here and ``t.sent`` stamped just before, unless the
        caller stamped it (a frame: just before its record is written, so that the record and the frame agree)."""
        seq = self.seq.next(topic)
        header["seq"] = seq
        t = header.get("t")
        if isinstance(t, dict) and "sent" not in t:
            t["sent"] = time.time()
        # accepted (queued for the subscribers with room; a PUB drops at a full queue silently) or refused
        counts = self.sent if protocol.send(self.pub, topic, header, payload) else self.dropped
        counts[topic] = counts.get(topic, 0) + 1
        return seq

    # --- the Output interface (service.live.outputs) ---------------------------------------------------------

    def frame(self, header: dict[str, Any], image: np.ndarray) -> int:
        """Send a ``frame`` message; returns its ``seq``."""
        return self.send("frame", header, image)

    def trial(self, header: dict[str, Any], image: np.ndarray) -> int:
        """Send a ``trial`` message; returns its ``seq``."""
        return self.send("trial", header, image)

    def status(self, header: dict[str, Any]) -> None:
        """Send a ``status`` heartbeat."""
        self.send("status", header)

    def qa(self, header: dict[str, Any], image: np.ndarray) -> None:
        """Send a ``qa`` message: the QA maps image with its header (``seq``, and ``shape`` / ``dtype`` when the
        header lacks them, set here)."""
        fields, payload = protocol.encode_image(image)
        for key, value in fields.items():
            header.setdefault(key, value)
        self.send("qa", header, payload)

    def end(self, header: dict[str, Any]) -> None:
        """Send the ``end`` message."""
        self.send("end", header)

    def counts(self) -> dict[str, dict[str, int]]:
        """Copies of :attr:`sent` and :attr:`dropped` (per topic)."""
        return {"sent": dict(self.sent), "dropped": dict(self.dropped)}

    # --- inbound ------------------------------------------------------------------------------------------

    def count_malformed(self) -> None:
        """Count an inbound message that was received but could not be used (an unknown event kind, a stimulus
        the bundle lacks): the ``malformed_inbound`` of the status and the summary."""
        self.malformed += 1

    def receive(self, limit: int = 100) -> list[protocol.Message]:
        """Inbound ``event``/``flip`` messages waiting now (never blocks); malformed ones are counted, those over
        the limits dropped and counted (:attr:`gate`)."""
        out: list[protocol.Message] = []
        if self.pull is None:
            return out
        taken = 0
        for _ in range(limit):
            try:
                msg = self.gate.receive(self.pull)
            except OverLimit:  # counted and logged by the gate
                taken += 1
                continue
            except protocol.ProtocolError as exc:
                taken += 1
                self.count_malformed()
                kind = "malformed: " + " ".join(str(exc).split()[:2])  # one line per kind of fault per interval
                self.gate.lines.log(logging.WARNING, kind, "ignored a malformed inbound message: %s", exc)
                continue
            if msg is None:
                break
            taken += 1
            out.append(msg)
        self.gate.lines.flush()
        if taken:
            with self._inbound_cv:
                self.inbound += taken
                self._inbound_cv.notify_all()
        return out

    def wait_inbound(self, n: int, timeout: float) -> bool:
        """Block until ``n`` inbound messages in all have been taken (the worker handles a batch before it takes
        the next volume); False at ``timeout``. For whoever feeds the service and must know it heard them."""
        with self._inbound_cv:
            return self._inbound_cv.wait_for(lambda: self.inbound >= n, timeout)

    def close(self, linger_ms: int | None = None) -> None:
        """Close the sockets: messages still queued (the ``end`` message) go on out to connected subscribers for
        at most ``linger_ms`` (default :attr:`CLOSE_LINGER_MS`); the inbound socket closes at once."""
        self.pub.close(linger=self.CLOSE_LINGER_MS if linger_ms is None else linger_ms)
        self.gate.lines.flush(force=True)
        if self.pull is not None:
            self.pull.close(linger=0)
        if self.auth is not None:
            self.auth.stop()
        self.ctx.term()
