"""The bridge: the service's ZeroMQ stream in, LSL samples out, each on the volume's own time.

:class:`LslBridge` owns one SUB socket (every service topic but ``qa``; CurveZMQ with a client's keys, as a
display) and, per run, one :class:`~fmriface.lsl.streams.RunStreams`. It is a subscriber like the dashboard, so
the service neither waits for it nor knows it is there; a bridge that falls behind loses messages at the PUB's
high-water mark, for itself alone (counted from the ``seq`` gaps).

Timestamps. A frame's samples are stamped with its ``t.file_ready`` (``time.time()`` when the volume's file was
last written) mapped onto LSL's clock by :class:`ClockMap`: the offset between ``time.time()`` and
``pylsl.local_clock()`` measured when a run's streams open (the tightest of 50 readings). A trial's samples take
its last volume's ``file_ready`` (the frame came first); the ``run_start`` marker the run's first frame's (it is
pushed with that frame: one pushed as the outlets open would reach no inlet yet), ``run_end`` the time it arrived.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fmriface.lsl.streams import RunStreams, feedback_sample, marker, motion_sample
from service import protocol

__all__ = ["BridgeConfig", "ClockMap", "LslBridge"]

log = logging.getLogger("fmriface.lsl")
#: The topics the bridge takes (the QA maps are images for the dashboard).
TOPICS = ("frame", "trial", "status", "end")


@dataclass(frozen=True)
class BridgeConfig:
    """Options of ``fmriface lsl``.

    Parameters
    ----------
    sub : str
        The service's PUB address.
    bundle : path, optional
        The run's bundle: its latent size (the latent stream opens with the run) and manifest SHA-256 (metadata).
    curve_secret, curve_server_key : path, optional
        CurveZMQ: this bridge's secret key file and the service's public key (``fmriface keys``).
    exit_on_end : bool
        Stop after the first run's ``end`` (a scripted recording); otherwise wait for the next run.
    duration : float
        Stop after this many seconds (0: until stopped).
    hwm : int
        The SUB socket's receive high-water mark.
    """

    sub: str = protocol.DEFAULT_PUB
    bundle: Path | None = None
    curve_secret: Path | None = None
    curve_server_key: Path | None = None
    exit_on_end: bool = False
    duration: float = 0.0
    hwm: int = 10000

    def __post_init__(self) -> None:
        if (self.curve_secret is None) != (self.curve_server_key is None):
            raise ValueError("curve_secret and curve_server_key go together (this bridge's key, the service's)")
        if self.duration < 0:
            raise ValueError(f"duration must not be negative, got {self.duration}")


class ClockMap:
    """``time.time()`` onto ``pylsl.local_clock()``: the offset read where the two clocks were read closest together.

    Parameters
    ----------
    tries : int
        Readings taken; the one with the shortest ``local_clock`` bracket around ``time.time()`` is kept.

    Attributes
    ----------
    offset_ : float
        ``time.time() - local_clock()`` (s).
    uncertainty_ : float
        Half the bracket of the reading kept (s).
    """

    def __init__(self, tries: int = 50) -> None:
        from pylsl import local_clock

        best = (float("inf"), 0.0)
        for _ in range(tries):
            a = local_clock()
            wall = time.time()
            b = local_clock()
            if b - a < best[0]:
                best = (b - a, wall - (a + b) / 2)
        self.uncertainty_, self.offset_ = best[0] / 2, best[1]

    def to_lsl(self, wall: float) -> float:
        """A ``time.time()`` stamp on LSL's clock."""
        return wall - self.offset_


class LslBridge:
    """Subscribe to the service and republish each run as four LSL streams (see :mod:`fmriface.lsl.streams`).

    Parameters
    ----------
    cfg : BridgeConfig

    Attributes
    ----------
    counts : dict
        Messages by topic, ``runs``, ``malformed``, ``missed`` (``seq`` gaps), ``latent_missing`` (trials whose
        header carried no latent: the service's ``latent_in_header`` is below the latent size).
    lag_ms : list of float
        Per frame, from the service's ``t.sent`` to the bridge's last push of it (ms, on the wall clock).
    """

    def __init__(self, cfg: BridgeConfig) -> None:
        self.cfg = cfg
        self.bundle_sha256, self.latent_size = _bundle_facts(cfg.bundle)
        self.streams: RunStreams | None = None
        self.clock: ClockMap | None = None
        self.counts = dict.fromkeys((*TOPICS, "runs", "malformed", "missed", "latent_missing"), 0)
        self.lag_ms: list[float] = []
        self._ready: OrderedDict[int, float] = OrderedDict()  # volume -> file_ready, for its trials
        self._last_seq: dict[str, int] = {}
        self._started = False
        self.ended = threading.Event()
        self.subscribed = threading.Event()

    def run(self, stop: threading.Event | None = None) -> dict[str, Any]:
        """Receive and republish until ``stop`` is set, ``duration`` is over or (``exit_on_end``) the run ends."""
        import zmq

        stop = stop or threading.Event()
        curve = None
        if self.cfg.curve_secret is not None:
            curve = protocol.CurveKeys.load(self.cfg.curve_secret, self.cfg.curve_server_key)
        deadline = time.monotonic() + self.cfg.duration if self.cfg.duration else float("inf")
        ctx = zmq.Context()
        sub = protocol.subscriber(ctx, self.cfg.sub, TOPICS, hwm=self.cfg.hwm, curve=curve)
        self.subscribed.set()
        try:
            while not stop.is_set() and time.monotonic() < deadline:
                try:
                    msg = protocol.recv(sub, 100, TOPICS)
                except protocol.ProtocolError as exc:
                    self.counts["malformed"] += 1
                    log.warning("ignored a malformed message: %s", exc)
                    continue
                if msg is not None:
                    self.handle(msg.topic, msg.header)
                    if self.cfg.exit_on_end and self.ended.is_set():
                        break
        finally:
            sub.close(linger=0)
            ctx.term()
            if self.streams is not None:
                self.streams.close()
        return self.summary()

    def handle(self, topic: str, header: dict[str, Any]) -> None:
        """One service message: open the run's streams if it is a new run, then push its samples."""
        try:
            self._handle(topic, header)
        except (KeyError, TypeError, ValueError) as exc:  # a header without what its topic needs
            self.counts["malformed"] += 1
            log.warning("ignored a %s message the bridge cannot use: %s", topic, exc)

    def _handle(self, topic: str, header: dict[str, Any]) -> None:
        self.counts[topic] += 1
        self._gap(topic, header.get("seq"))
        run_id = str(header.get("run_id") or "")
        if self.streams is None or run_id != self.streams.run_id:
            self._open(run_id)
        streams, clock = self.streams, self.clock
        assert streams is not None and clock is not None
        out = streams.outlets
        if topic == "frame":
            volume, ready = int(header["volume"]), float(header["t"]["file_ready"])
            ts = clock.to_lsl(ready)
            self._ready[volume] = ready
            while len(self._ready) > 4096:
                self._ready.popitem(last=False)
            if not self._started:  # a marker pushed as the outlets open would reach no inlet yet
                self._started = True
                start = marker("run_start", run_id=run_id, volume=volume, bundle_sha256=self.bundle_sha256 or None)
                out["fmriface-markers"].push_sample([start], ts)
            out["fmriface-feedback"].push_sample(feedback_sample(header), ts)
            out["fmriface-motion"].push_sample(motion_sample(header), ts)
            qa = header.get("qa") or {}
            if qa.get("censored"):
                out["fmriface-markers"].push_sample([marker("censored", volume=volume, reasons=qa.get("reasons"))], ts)
            sent = header["t"].get("sent")
            if sent is not None:
                self.lag_ms.append(1000.0 * (time.time() - float(sent)))
        elif topic == "trial":
            self._trial(header)
        elif topic == "end":
            fields = {"run_id": run_id, "reason": header.get("reason")}
            out["fmriface-markers"].push_sample([marker("run_end", **fields)], clock.to_lsl(time.time()))
            self.ended.set()

    def _trial(self, header: dict[str, Any]) -> None:
        streams, clock = self.streams, self.clock
        assert streams is not None and clock is not None
        volume = int(header["volume"])
        ready = self._ready.get(volume, float(header.get("t", {}).get("read", time.time())))
        ts = clock.to_lsl(ready)
        latent = header.get("latent")
        if latent is not None:
            streams.latent_outlet(len(latent)).push_sample([float(v) for v in latent], ts)
        else:
            self.counts["latent_missing"] += 1
            if self.counts["latent_missing"] == 1:
                log.warning(
                    "trial headers carry no latent: serve with latent_in_header at least the latent size "
                    "(default 64) for the fmriface-latent stream"
                )
        keys = ("trial", "trial_type", "stim_id", "onset", "duration")
        fields = {k: header.get(k) for k in keys} | {"volume": volume}
        fields["value"] = (header.get("feedback") or {}).get("value")
        streams.outlets["fmriface-markers"].push_sample([marker("trial", **fields)], ts)

    def _open(self, run_id: str) -> None:
        """A new run: close the last run's streams, measure the clocks, open this one's, mark its start."""
        if self.streams is not None:
            self.streams.close()
        self.clock = ClockMap()
        self.streams = RunStreams(run_id, self.bundle_sha256, self.latent_size).open()
        self._ready.clear()
        self._last_seq.clear()
        self.counts["runs"] += 1
        self._started = False
        log.info("run %s: LSL streams open (clock offset %.6f s)", run_id, self.clock.offset_)

    def _gap(self, topic: str, seq: Any) -> None:
        if not isinstance(seq, int) or topic not in ("frame", "trial"):
            return
        last = self._last_seq.get(topic)
        if last is not None and seq > last + 1:
            self.counts["missed"] += seq - last - 1
        self._last_seq[topic] = seq

    def summary(self) -> dict[str, Any]:
        """Messages by topic, runs, losses, and the lag from ``t.sent`` to the samples being pushed (ms)."""
        import numpy as np

        lag = None
        if self.lag_ms:
            arr = np.asarray(self.lag_ms)
            lag = {f"p{q}": round(float(np.percentile(arr, q)), 3) for q in (50, 99)} | {"max": float(arr.max())}
        return {"counts": dict(self.counts), "lag_ms": lag, "latent_size": self.streams and self.streams.latent_size}


def _bundle_facts(bundle: Path | None) -> tuple[str, int]:
    """(manifest SHA-256, latent size) of a bundle folder; ('', 0) without one."""
    if bundle is None:
        return "", 0
    import json

    from service.bundle import sha256_file

    manifest = Path(bundle) / "manifest.json"
    data = json.loads(manifest.read_text())
    size = int(data.get("latent_size") or 0)
    return sha256_file(manifest), size
