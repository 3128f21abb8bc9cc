"""Test harness for the service: a queue-fed volume source and a run with a subscriber attached."""

from __future__ import annotations

import hashlib
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from service import protocol
from service.live.serve import ServeConfig, Service
from service.volume import Volume


class QueueSource:
    """What the service takes volumes from (the watcher's interface), fed by the test."""

    def __init__(self) -> None:
        self.q: queue.Queue = queue.Queue()
        self.started = threading.Event()

    def start(self) -> None:
        self.started.set()

    def stop(self) -> None:
        pass

    def get(self, timeout: float) -> Any:
        try:
            return self.q.get(timeout=timeout)
        except queue.Empty:
            return None


def serve_config(bundle_path: Path, tmp_path: Path, **overrides: Any) -> ServeConfig:
    """A ServeConfig for an in-process test run: records under ``tmp_path/runs``, loopback ports, a 0.1 s
    heartbeat and a send queue deep enough that the test's subscriber misses nothing."""
    from tests.conftest import free_port

    values: dict[str, Any] = dict(
        bundle=bundle_path,
        watch=tmp_path,
        runs=tmp_path / "runs",
        pub=f"tcp://127.0.0.1:{free_port()}",
        pull=f"tcp://127.0.0.1:{free_port()}",
        heartbeat=0.1,
        hwm=1000,
    )
    return ServeConfig(**{**values, **overrides})


def make_volume(i: int, data: np.ndarray, affine: np.ndarray, tr: float) -> Volume:
    t = time.time()
    sha = hashlib.sha256(np.ascontiguousarray(data).tobytes()).hexdigest()
    return Volume(i, i + 1, data, affine, tr, Path(f"/scanner/vol_{i:04d}.nii"), sha, "1", t, t)


@dataclass
class Served:
    service: Service
    summary: dict[str, Any]
    messages: list[protocol.Message] = field(default_factory=list)

    def topic(self, name: str) -> list[protocol.Message]:
        return [m for m in self.messages if m.topic == name]


def serve(
    cfg: ServeConfig,
    volumes: list[Volume],
    *,
    stop_after: bool = False,
    inbound: list[list[bytes]] | None = None,
    on_frame=None,
    extra_sub: bool = False,
    pace: float = 0.0,
) -> Served:
    """Start the service on a queue source, feed ``volumes``, collect every message until ``end``.

    ``stop_after`` stops the service (as SIGTERM would) once the last volume's frame is in; ``inbound`` are
    raw multipart messages pushed to the service's PULL before the volumes; ``on_frame(msg, push)`` is called
    for each frame received (to send flip acks); ``extra_sub`` attaches a subscriber that never reads;
    ``pace`` spaces the volumes (seconds), as a scanner does.
    """
    source = QueueSource()
    svc = Service(cfg, source=source).start()
    ctx = zmq.Context()
    sub = protocol.subscriber(ctx, cfg.pub, hwm=100000)
    lazy = None
    if extra_sub:  # a subscriber that never reads, with small queues and a small TCP buffer
        lazy = ctx.socket(zmq.SUB)
        lazy.setsockopt(zmq.RCVHWM, 1)
        lazy.setsockopt(zmq.RCVBUF, 8192)
        lazy.setsockopt(zmq.LINGER, 0)
        lazy.setsockopt(zmq.SUBSCRIBE, b"frame")
        lazy.connect(cfg.pub)
    push = protocol.pusher(ctx, cfg.pull)
    thread = threading.Thread(target=svc.run, daemon=True)
    thread.start()
    out = Served(svc, {})
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # wait until the subscription is up (heartbeats arrive)
            msg = protocol.recv(sub, 200, protocol.SERVICE_TOPICS)
            if msg is not None and msg.topic == "status":
                out.messages.append(msg)  # kept: a short run may end before the next heartbeat
                break
        else:
            raise AssertionError("no status heartbeat within 10 s")
        for frames in inbound or []:
            push.send_multipart(frames)
        if inbound:  # the service has taken them (and handles them before its next volume)
            assert svc.pub_.wait_inbound(len(inbound), 10), f"the service took {svc.pub_.inbound} of {len(inbound)}"
        for v in volumes:  # volumes, or intake events as the watcher would hand them on
            if isinstance(v, Volume):
                v.t_seen = v.t_ready = time.time()
            source.q.put(v)
            if pace:
                time.sleep(pace)
        frames_seen = 0
        while True:
            msg = protocol.recv(sub, 30000, protocol.SERVICE_TOPICS)
            assert msg is not None, "service went silent for 30 s"
            out.messages.append(msg)
            if msg.topic == "frame":
                frames_seen += 1
                if on_frame is not None:
                    on_frame(msg, push)
                if stop_after and frames_seen == len(volumes):  # the flag is read after the batch in hand
                    svc.stop("SIGTERM")
            if msg.topic == "end":
                break
        if lazy is not None:
            out.lazy_count = 0  # type: ignore[attr-defined]
            while protocol.recv(lazy, 100, protocol.SERVICE_TOPICS) is not None:
                out.lazy_count += 1  # type: ignore[attr-defined]
    finally:
        svc.stop("test")
        thread.join(10)
        for s in (sub, push, lazy):
            if s is not None:
                s.close(linger=0)
        ctx.term()
    out.summary = svc.summary_
    return out


def _collect_until_end(svc: Service, sub, start=None, timeout: float = 60.0) -> list[protocol.Message]:
    """Run a started service in a thread, call ``start()`` once its heartbeat arrives, collect until ``end``."""
    thread = threading.Thread(target=svc.run, daemon=True)
    thread.start()
    messages: list[protocol.Message] = []
    try:
        deadline = time.monotonic() + 30
        while (msg := protocol.recv(sub, 200, protocol.SERVICE_TOPICS)) is None or msg.topic != "status":
            assert time.monotonic() < deadline, "no status heartbeat within 30 s"
        if start is not None:
            start()
        while True:
            msg = protocol.recv(sub, int(timeout * 1000), protocol.SERVICE_TOPICS)
            assert msg is not None, f"service went silent for {timeout} s"
            messages.append(msg)
            if msg.topic == "end":
                return messages
    finally:
        svc.stop("test")
        thread.join(10)
