"""Bounded inbound messages: what a peer on the events socket can make the service take.

The experiment and the displays send ``event`` and ``flip`` messages to the service's PULL socket. Whatever a peer
sends, the service must go on publishing frames and recording them, and the records must stay writable and
readable. :class:`InboundGate` checks each message against :class:`InboundLimits` before anything else sees it:

- size: the header's and the payload's bytes, checked before the header is parsed (beyond the protocol's own
  ``MAX_HEADER_BYTES`` and ``MAX_PAYLOAD_BYTES`` a message is malformed, and counted as such);
- shape: the fields of the header (keys and list items, nested ones too) and the length of every string in it
  (a 900 KB ``stim_id`` never reaches ``trials.tsv``);
- rate: ``event`` messages per second (a token bucket that holds one second's worth);
- open trials: ``onset`` events are refused while the trials still waiting for their window reach the limit.

A message over a limit is dropped and counted by kind (:attr:`InboundGate.dropped`, the ``inbound_dropped`` of
the run's status and summary); the log says so at most once per kind per ``log_interval_s``, with how many were
held back (:class:`service.logs.RateLimitedLog`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from service import protocol
from service.logs import RateLimitedLog

__all__ = ["InboundLimits", "InboundGate", "OverLimit", "DROP_KINDS"]

log = logging.getLogger("service.live.inbound")

#: The kinds of dropped message, as counted.
DROP_KINDS = ("size", "fields", "field_length", "rate", "open_trials")


@dataclass(frozen=True)
class InboundLimits:
    """Limits on the messages a peer sends to the service (TOML table ``[inbound]`` of ``serve``).

    Parameters
    ----------
    max_header_bytes : int
        Largest header (its JSON bytes) taken; the events and acks of the protocol need a few hundred.
    max_payload_bytes : int
        Largest payload (the image of a ``target`` event), at most the protocol's ``MAX_PAYLOAD_BYTES``.
    max_fields : int
        Most fields in a header: its keys, nested keys and list items counted together.
    max_field_chars : int
        Longest string (a key or a value, ``stim_id``, ``trial``, ``trial_type`` ...) in a header.
    max_events_per_s : float
        ``event`` messages taken per second, on average (bursts up to one second's worth).
    max_open_trials : int
        Trials announced and still waiting for their window: an ``onset`` beyond them is dropped.
    log_interval_s : float
        At most one log line per kind of dropped or malformed message in this many seconds.
    """

    max_header_bytes: int = 16384
    max_payload_bytes: int = protocol.MAX_PAYLOAD_BYTES
    max_fields: int = 64
    max_field_chars: int = 512
    max_events_per_s: float = 100.0
    max_open_trials: int = 1000
    log_interval_s: float = 10.0

    def __post_init__(self) -> None:
        for name in ("max_header_bytes", "max_payload_bytes", "max_fields", "max_field_chars", "max_open_trials"):
            if getattr(self, name) < 1:
                raise ValueError(f"inbound.{name} must be at least 1, got {getattr(self, name)}")
        if self.max_payload_bytes > protocol.MAX_PAYLOAD_BYTES:
            raise ValueError(
                f"inbound.max_payload_bytes must be at most {protocol.MAX_PAYLOAD_BYTES}, got {self.max_payload_bytes}"
            )
        if not self.max_events_per_s > 0:
            raise ValueError(f"inbound.max_events_per_s must be positive, got {self.max_events_per_s}")
        if self.log_interval_s < 0:
            raise ValueError(f"inbound.log_interval_s must not be negative, got {self.log_interval_s}")


class OverLimit(Exception):
    """A message dropped by the gate (already counted and logged); ``kind`` is one of :data:`DROP_KINDS`."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind


class InboundGate:
    """Receives from the inbound socket and drops what is over the limits (see the module).

    Parameters
    ----------
    limits : InboundLimits
    open_trials : callable, optional
        The number of trials waiting for their window now (the pipeline's); without it, no limit on them.
    clock : callable
        Seconds, monotonic (tests pass their own).

    Attributes
    ----------
    dropped : dict of str to int
        Messages dropped, by kind.
    lines : RateLimitedLog
        The log of dropped and malformed messages, one line per kind per interval.
    """

    def __init__(
        self,
        limits: InboundLimits | None = None,
        open_trials: Callable[[], int] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limits = limits or InboundLimits()
        self.open_trials = open_trials
        self.clock = clock
        self.dropped: dict[str, int] = {}
        self.lines = RateLimitedLog(log, self.limits.log_interval_s, clock=clock)
        self._tokens = self._burst = max(1.0, float(self.limits.max_events_per_s))
        self._t_tokens = clock()

    def receive(self, sock: Any) -> protocol.Message | None:
        """The next message on ``sock`` within its limits (never blocks; None when nothing waits).

        Raises :class:`OverLimit` for a message dropped here and ``ProtocolError`` for one that does not decode.
        """
        import zmq

        try:
            frames = sock.recv_multipart(zmq.NOBLOCK, copy=True)
        except zmq.Again:
            return None
        lim = self.limits
        # beyond the protocol's own maxima a message is malformed (decode says so); below them, over the limit
        header, payload = (len(frames[1]) if len(frames) > 1 else 0), (len(frames[2]) if len(frames) > 2 else 0)
        if lim.max_header_bytes < header <= protocol.MAX_HEADER_BYTES:
            self._drop("size", f"a header of {header} bytes (limit {lim.max_header_bytes})")
        if len(frames) == 3 and lim.max_payload_bytes < payload <= protocol.MAX_PAYLOAD_BYTES:
            self._drop("size", f"a payload of {payload} bytes (limit {lim.max_payload_bytes})")
        msg = protocol.decode(frames, protocol.INBOUND_TOPICS)
        self.check(msg)
        return msg

    def check(self, msg: protocol.Message) -> None:
        """Raise :class:`OverLimit` (counted, logged) if a decoded message is over a limit of its shape, the event
        rate or the open trials."""
        lim = self.limits
        n_fields, longest = _shape(msg.header)
        if n_fields > lim.max_fields:
            self._drop("fields", f"{msg.topic} with {n_fields} fields (limit {lim.max_fields})")
        if longest > lim.max_field_chars:
            self._drop(
                "field_length", f"{msg.topic} with a field of {longest} characters (limit {lim.max_field_chars})"
            )
        if msg.topic != "event":
            return
        now = self.clock()
        self._tokens = min(self._burst, self._tokens + (now - self._t_tokens) * lim.max_events_per_s)
        self._t_tokens = now
        if self._tokens < 1.0:
            self._drop("rate", f"events faster than {lim.max_events_per_s:g} per second")
        self._tokens -= 1.0
        if msg.header.get("kind") == "onset" and self.open_trials is not None:
            waiting = self.open_trials()
            if waiting >= lim.max_open_trials:
                self._drop("open_trials", f"an onset while {waiting} trials wait (limit {lim.max_open_trials})")

    def _drop(self, kind: str, reason: str) -> None:
        self.dropped[kind] = self.dropped.get(kind, 0) + 1
        self.lines.log(logging.WARNING, f"inbound {kind}", "dropped an inbound message: %s", reason)
        raise OverLimit(kind, reason)

    def counts(self) -> dict[str, int]:
        """A copy of :attr:`dropped`."""
        return dict(self.dropped)


def _shape(value: Any, depth: int = 0) -> tuple[int, int]:
    """(fields, longest string) of a decoded JSON value: keys and list items counted, nested ones too."""
    if isinstance(value, str):
        return 0, len(value)
    if depth > 32:  # deeper than any message of the protocol: counted as too many fields
        return 1 << 30, 0
    fields = longest = 0
    items: Any = ()
    if isinstance(value, dict):
        items = value.values()
        fields += len(value)
        longest = max((len(k) for k in value), default=0)
    elif isinstance(value, list):
        items = value
        fields += len(value)
    for item in items:
        f, n = _shape(item, depth + 1)
        fields += f
        longest = max(longest, n)
    return fields, longest
