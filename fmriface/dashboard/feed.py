"""Where the dashboard's items come from: the service's stream and the run's records, each on a thread of its own.

:class:`StreamFeed` owns the ZeroMQ SUB socket and does nothing but read it: it takes every message waiting,
decodes it and encodes the newest face of the batch as PNG (older faces of a burst are superseded: their points
are still plotted), then hands the batch on through a :class:`Handoff`. Nothing a browser does reaches this
thread, so the socket is always read and the service's PUB queue for the dashboard never fills.

:class:`RecordsFeed` polls the run folder (``--runs``): the live run's new ``volumes.jsonl`` and ``flips.jsonl``
lines twice a second and the list of runs every few seconds.

:class:`Handoff` carries items to the event loop: a bounded queue (the oldest items go when the loop falls that
far behind, and the state is then sent whole) and one wake-up per batch.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fmriface.dashboard.runs import Tail, list_runs, valid_run_id
from fmriface.dashboard.state import prepare
from service import protocol

__all__ = ["Handoff", "StreamFeed", "RecordsFeed"]

log = logging.getLogger("fmriface.dashboard")


class Handoff:
    """Items from a thread to the event loop: ``put`` never blocks; ``deliver(items, dropped)`` runs on the loop."""

    def __init__(self, loop: Any, deliver: Callable[[list[Any], int], None], maxlen: int = 10000) -> None:
        self.loop, self.deliver = loop, deliver
        self._q: deque[Any] = deque()
        self.maxlen = maxlen
        self._lock = threading.Lock()
        self._scheduled = False
        self._dropped = 0
        self.dropped_total = 0

    def put(self, items: list[Any]) -> None:
        """Queue items for the loop, dropping the oldest beyond ``maxlen``, and schedule one delivery if none is due."""
        with self._lock:
            self._q.extend(items)
            while len(self._q) > self.maxlen:
                self._q.popleft()
                self._dropped += 1
                self.dropped_total += 1
            if self._scheduled:
                return
            self._scheduled = True
        try:
            self.loop.call_soon_threadsafe(self._drain)
        except RuntimeError:  # the loop closed: the dashboard is stopping
            pass

    def _drain(self) -> None:
        with self._lock:
            items, dropped = list(self._q), self._dropped
            self._q.clear()
            self._dropped = 0
            self._scheduled = False
        self.deliver(items, dropped)


class StreamFeed(threading.Thread):
    """Subscribes to ``address`` (all service topics) and hands decoded items to ``out``.

    A face is encoded (PNG) when it is the newest of its batch and the last one encoded is at least
    ``face_period`` seconds old; otherwise its pixels go along unencoded, and the dashboard sends the newest of
    them once that period is over (at a scanner's pace every face goes at once; a burst sends 20 a second).

    Parameters
    ----------
    address : str
        The service's PUB address.
    out : Handoff
    curve : service.protocol.CurveKeys, optional
        This dashboard's client keys (its secret and the service's public key).
    image_format : str
        ``png`` or ``jpeg``.
    hwm : int
        The SUB socket's receive high-water mark (messages queued here before the thread reads them).
    face_period : float
        Seconds between two faces encoded and sent at once.
    """

    FACE_PERIOD = 0.05

    def __init__(
        self, address: str, out: Handoff, curve: Any = None, image_format: str = "png", hwm: int = 10000
    ) -> None:
        super().__init__(daemon=True, name="dashboard-stream")
        self.address, self.out, self.curve = address, out, curve
        self.image_format, self.hwm = image_format, hwm
        self.stopping = threading.Event()
        self.ready = threading.Event()
        self.received = 0
        self.error: BaseException | None = None
        self._last_face = -1e9

    def run(self) -> None:
        """Receive until stopped, in batches of up to 1000 messages, and hand each batch's items to ``out``."""
        import zmq

        ctx = zmq.Context()
        try:
            sub = protocol.subscriber(ctx, self.address, protocol.SERVICE_TOPICS, hwm=self.hwm, curve=self.curve)
            self.ready.set()
            try:
                while not self.stopping.is_set():
                    if not sub.poll(100, zmq.POLLIN):
                        continue
                    batch = []
                    while len(batch) < 1000:
                        try:
                            batch.append((sub.recv_multipart(flags=zmq.NOBLOCK), time.time()))
                        except zmq.Again:
                            break
                    self.received += len(batch)
                    self.out.put(self._items(batch))
            finally:
                sub.close(linger=0)
        except Exception as exc:  # noqa: BLE001 - reported by the dashboard, which then stops
            self.error = exc
            log.exception("the stream feed stopped")
        finally:
            self.ready.set()
            ctx.term()

    def _items(self, batch: list[tuple[list[bytes], float]]) -> list[dict[str, Any]]:
        """Decode a batch; only the newest frame's image is encoded (a burst's older faces are never shown)."""
        newest = max((i for i, (f, _) in enumerate(batch) if f and f[0] == b"frame"), default=-1)
        items = []
        now = time.monotonic()
        for i, (frames, received) in enumerate(batch):
            try:
                face = bool(frames) and frames[0] == b"frame"
                encode = not face or (i == newest and now - self._last_face >= self.FACE_PERIOD)
                item = prepare(frames, received, encode, self.image_format, keep_raw=face and i == newest)
                if face and item.get("image"):
                    self._last_face = now
                items.append(item)
            except Exception as exc:  # noqa: BLE001 - whatever arrives, the feed goes on
                items.append({"kind": "malformed", "error": f"{type(exc).__name__}: {exc}"[:300], "received": received})
        return items

    def stop(self) -> None:
        """Ask the thread to stop; it notices within 0.1 s."""
        self.stopping.set()


class RecordsFeed(threading.Thread):
    """Polls ``root`` (the runs folder): the records of the run ``run_id()`` names, and the list of runs.

    Items: ``{"kind": "records", "run_id", "volumes": [...], "flips": [...]}`` and ``{"kind": "runs", "runs"}``.
    """

    def __init__(
        self,
        root: Path,
        run_id: Callable[[], str | None],
        out: Handoff,
        interval: float = 0.5,
        list_every: float = 3.0,
    ) -> None:
        super().__init__(daemon=True, name="dashboard-records")
        self.root, self.run_id, self.out = Path(root), run_id, out
        self.interval, self.list_every = interval, list_every
        self.stopping = threading.Event()
        self._tails: tuple[str, Tail, Tail] | None = None
        self._runs: list[dict[str, Any]] | None = None
        self.poke = threading.Event()
        self._list_soon = 0

    def run(self) -> None:
        """Every ``interval`` seconds, pass on the current run's new records and, when it changed, the list of runs."""
        next_list = 0.0
        while not self.stopping.is_set():
            try:
                now = time.monotonic()
                if self.poke.is_set():  # a run began or ended: its manifest changes within moments
                    self.poke.clear()
                    self._list_soon = 4
                if now >= next_list or self._list_soon:
                    self._list_soon = max(0, self._list_soon - 1)
                    next_list = now + self.list_every
                    self._list()
                self._tail()
            except Exception:  # noqa: BLE001 - a folder being written may be read half-way; next time
                log.exception("reading the run records failed")
            self.stopping.wait(self.interval)

    def _list(self) -> None:
        note = "" if self.root.is_dir() else f"{self.root} does not exist (yet)"
        runs = list_runs(self.root)
        if runs != self._runs:
            self._runs = runs
            self.out.put([{"kind": "runs", "runs": runs, "note": note}])

    def _tail(self) -> None:
        run_id = self.run_id()
        if not run_id or not valid_run_id(run_id):
            return
        if self._tails is None or self._tails[0] != run_id:
            d = self.root / run_id
            self._tails = (run_id, Tail(d / "volumes.jsonl"), Tail(d / "flips.jsonl"))
            self.poke.set()  # a new run: list the runs again soon
        _, vols, flips = self._tails
        v, f = vols.read(), flips.read()
        if v or f:
            self.out.put([{"kind": "records", "run_id": run_id, "volumes": v, "flips": f}])

    def stop(self) -> None:
        """Ask the thread to stop; it notices within ``interval`` seconds."""
        self.stopping.set()
