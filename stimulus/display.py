"""The live display: the newest decoded face (or the feedback value, or the operator's view) from the service.

:func:`run_display` subscribes to the service's PUB socket (ZeroMQ reconnects by itself when the service
restarts), drains every queued message, shows the newest frame (older ones are counted stale), and after each
flip that shows a new frame pushes a ``flip`` ack with the flip time to the service. Headless, it saves what it
shows as PNG (read from the back buffer just before the flip: under Xvfb the front buffer reads black).
It stops on Escape, after ``max_frames`` frames, on the service's ``end`` message, after ``timeout`` seconds
without any message, or after ``duration`` seconds.
"""

from __future__ import annotations

import contextlib
import csv
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from service import protocol
from stimulus.messages import MODES, DisplayState, Screen, what_to_show
from stimulus.window import WindowConfig

__all__ = ["DisplayConfig", "run_display"]

FRAME_INDEX_COLUMNS = ("file", "topic", "run_id", "seq", "volume", "received", "flip_time", "latency_ms")


@dataclass(frozen=True)
class DisplayConfig:
    """Options of ``fmriface display`` (TOML table ``[window]`` for the window)."""

    sub: str = protocol.DEFAULT_PUB
    topic: str = "frame"
    mode: str = "face"
    ack: str = protocol.DEFAULT_PULL
    headless: bool = False
    save_frames: Path | None = None
    max_frames: int = 0
    timeout: float = 0.0
    duration: float = 0.0
    exit_on_end: bool = True
    feedback_range: tuple[float, float] = (-1.0, 1.0)
    name: str = "display"
    poll_ms: int = 20
    #: CurveZMQ to a service on another host: this display's secret key file and the service's public key.
    curve_secret: Path | None = None
    curve_server_key: Path | None = None
    window: WindowConfig = field(default_factory=lambda: WindowConfig(size=(800, 600), face_size=384))

    def __post_init__(self) -> None:
        if self.topic not in ("frame", "trial"):
            raise ValueError(f"topic must be frame or trial, got {self.topic!r}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {list(MODES)}, got {self.mode!r}")
        if self.max_frames < 0 or self.timeout < 0 or self.duration < 0 or self.poll_ms < 1:
            raise ValueError("max_frames, timeout and duration must be >= 0 and poll_ms >= 1")
        if (self.curve_secret is None) != (self.curve_server_key is None):
            raise ValueError("curve_secret and curve_server_key go together (this display's key, the service's)")
        if self.feedback_range[1] <= self.feedback_range[0]:
            raise ValueError(f"feedback_range must be (low, high) with low < high, got {self.feedback_range}")


def run_display(cfg: DisplayConfig) -> dict[str, Any]:
    """Run the display until one of its stop conditions; returns a summary (why it stopped, counts, latency)."""
    if cfg.headless and not os.environ.get("DISPLAY"):
        from stimulus.xvfb import virtual_display

        with virtual_display():
            return _run(cfg)
    return _run(cfg)


def _run(cfg: DisplayConfig) -> dict[str, Any]:
    import zmq

    zctx = zmq.Context()
    try:  # subscribe first: what the service sends while the window opens is queued (the newest is shown)
        curve = None if cfg.curve_secret is None else protocol.CurveKeys.load(cfg.curve_secret, cfg.curve_server_key)
        sub = protocol.subscriber(zctx, cfg.sub, (cfg.topic, "status", "end"), curve=curve)
        ack = protocol.pusher(zctx, cfg.ack, curve=curve) if cfg.ack else None
        return _show(cfg, sub, ack)
    finally:
        zctx.destroy(linger=0)


def _show(cfg: DisplayConfig, sub: Any, ack: Any) -> dict[str, Any]:
    from stimulus.window import Painter, import_psychopy, open_window

    _, core, event = import_psychopy()
    clock = core.getTime
    wall = time.time() - clock()
    acks = protocol.SeqCounter()
    state = DisplayState(cfg.topic)
    saver = _FrameSaver(cfg.save_frames) if cfg.save_frames is not None else None
    win = open_window(cfg.window, f"fmriface display ({cfg.mode})")
    latencies: list[float] = []
    reason = ""
    try:
        painter = Painter(win, cfg.window.face_size)
        _draw(painter, what_to_show(state, cfg.mode), cfg)
        painter.warm_up()
        _draw(painter, what_to_show(state, cfg.mode), cfg)
        if saver is not None:
            win.getMovieFrame(buffer="back")
        win.flip()
        if saver is not None:
            saver.save(win, "wait.png", None, None)
        t_start = t_last = clock()
        status_seen: Any = None
        t_flip = [0.0]
        while not reason:
            got = _drain(sub, state, clock, cfg.poll_ms)
            now = clock()
            t_last = now if got else t_last
            shown = state.take()
            redraw = shown is not None or (cfg.mode == "operator" and state.status is not status_seen)
            if redraw:
                status_seen = state.status
                screen = what_to_show(state, cfg.mode)
                # Laying out new text costs milliseconds: a new face goes first with the text as it was, and
                # the new text follows on the next flip (both screens hold face and text: no flicker).
                two_step = shown is not None and (
                    bool(screen.lines) or (screen.kind == "feedback" and screen.value is not None)
                )
                _draw(painter, screen, cfg, new_text=not two_step)
                if saver is not None and not two_step:
                    win.getMovieFrame(buffer="back")
                win.callOnFlip(lambda: t_flip.__setitem__(0, clock()))
                win.flip()
                if shown is not None:
                    latencies.append(t_flip[0] - shown.received)
                    if ack is not None:
                        header = protocol.flip_header(
                            acks.next("flip"), shown.topic, shown.seq, t_flip[0] + wall, run_id=shown.run_id,
                            volume=shown.volume, received=shown.received + wall, display=cfg.name,
                        )  # fmt: skip
                        protocol.send(ack, "flip", header)
                if two_step:
                    _draw(painter, screen, cfg)
                    if saver is not None:
                        win.getMovieFrame(buffer="back")
                    win.flip()
                if saver is not None:
                    name = f"{state.counts['shown']:05d}_{shown.topic}-{shown.seq:06d}.png" if shown else None
                    saver.save(win, name, shown, (t_flip[0] + wall, wall))
            reason = _stop_reason(cfg, state, event, now, t_start, t_last)
    finally:
        win.close()
        if saver is not None:
            saver.close()
    lat = np.array(latencies) * 1000.0
    return {
        "stopped": reason,
        **state.counts,
        "last_error": state.last_error,
        "latency_p50_ms": round(float(np.percentile(lat, 50)), 3) if lat.size else None,
        "latency_p99_ms": round(float(np.percentile(lat, 99)), 3) if lat.size else None,
        "acks_sent": acks.peek("flip"),
        "frames_dir": cfg.save_frames,
        **({"frames_error": f"{type(saver.error).__name__}: {saver.error}"} if saver and saver.error else {}),
    }


def _drain(sub: Any, state: DisplayState, clock: Any, poll_ms: int) -> bool:
    """Wait up to ``poll_ms`` for messages, then take every queued one; True if any valid one arrived."""
    import zmq

    got = False
    if sub.poll(poll_ms, zmq.POLLIN):
        while True:
            try:
                frames = sub.recv_multipart(flags=zmq.NOBLOCK)
            except zmq.Again:
                break
            got = state.ingest(frames, clock()) or got
    return got


def _stop_reason(cfg: DisplayConfig, state: DisplayState, event: Any, now: float, t_start: float, t_last: float):
    if event.getKeys(keyList=["escape"]):
        return "escape"
    if cfg.max_frames and state.counts["shown"] >= cfg.max_frames:
        return "max_frames"
    if cfg.exit_on_end and state.ended is not None and state.pending is None:
        return "end"
    if cfg.timeout and now - t_last > cfg.timeout:
        return "timeout"
    if cfg.duration and now - t_start > cfg.duration:
        return "duration"
    return ""


def _draw(painter: Any, screen: Screen, cfg: DisplayConfig, new_text: bool = True) -> None:
    """Draw a screen; with ``new_text`` False the text (lines, the thermometer's number) keeps what it showed last."""
    half = cfg.window.size[1] / 2
    if screen.kind in ("wait", "ended"):
        painter.draw_cross()
        if cfg.mode == "operator":
            painter.draw_text("run ended" if screen.kind == "ended" else "waiting for the service", (0, -60), 24)
    elif screen.kind == "face":
        painter.draw_face(screen.image, key=screen.key)
    elif screen.kind == "feedback":
        painter.draw_face(screen.image, key=screen.key)
        lo, hi = cfg.feedback_range
        painter.draw_thermometer(screen.value, lo, hi, pos=(cfg.window.face_size / 2 + 60, 0), new_text=new_text)
    if screen.lines:
        painter.draw_lines(screen.lines if new_text else None, half - 8)


class _FrameSaver:
    """Writes each saved screen as PNG and one row per saved frame in ``frames.tsv``.

    The window's pixels are read on the display's thread (they must be, before the next flip); encoding and
    writing the PNG happens on a thread of its own, in order, so a frame that arrives meanwhile is not kept
    waiting behind a file write. ``close`` writes whatever is still queued.
    """

    def __init__(self, folder: Path) -> None:
        import queue
        import threading

        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._f = open(self.folder / "frames.tsv", "w", newline="", encoding="utf-8")
        self._w = csv.writer(self._f, delimiter="\t", lineterminator="\n")
        self._w.writerow(FRAME_INDEX_COLUMNS)
        self._todo: queue.SimpleQueue = queue.SimpleQueue()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._write_all, name="fmriface-frame-saver", daemon=True)
        self._thread.start()

    def save(self, win: Any, name: str | None, shown: Any, times: tuple[float, float] | None) -> None:
        frame = win.movieFrames.pop() if win.movieFrames else None
        win.movieFrames.clear()
        if frame is None:
            return
        if name is None:  # a redraw without a new frame (operator status): keep only the latest
            name = "status.png"
        row = None
        if shown is not None and times is not None:
            flip, wall = times
            received = shown.received + wall
            row = [name, shown.topic, shown.run_id, shown.seq, shown.volume, f"{received:.6f}", f"{flip:.6f}",
                   f"{(flip - received) * 1000:.3f}"]  # fmt: skip
        self._todo.put((frame, name, row))

    def _write_all(self) -> None:
        while (item := self._todo.get()) is not None:
            frame, name, row = item
            try:
                frame.save(self.folder / name)
                if row is not None:
                    self._w.writerow(row)
                    self._f.flush()
            except (OSError, ValueError) as exc:  # a full disk: keep the first error, go on displaying
                self.error = self.error or exc

    def close(self) -> None:
        self._todo.put(None)
        self._thread.join()
        with contextlib.suppress(OSError):
            self._f.close()
