"""The experiment's window loop: wait for the trigger, then draw / flip once per frame until the run ends."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from service import protocol
from stimulus.messages import DisplayState, feedback_value
from stimulus.records import EventsWriter, RunLog
from stimulus.schedule import Trial, run_duration
from stimulus.timeline import RunRecorder, Timeline
from stimulus.triggers import EmulatedResponses, KeyResponses, make_trigger
from stimulus.window import FramePacer, Painter, import_psychopy, open_window


@dataclass
class RunContext:
    """What one run needs: the config, the stimulus folder, its type and trials, and the paths it writes to."""

    cfg: Any  # ExperimentConfig
    stimuli_root: Path
    run_type: str
    trials: list[Trial]
    paths: dict[str, Path]


class _Events:
    """``event`` messages to the service (PUSH; never blocks: a missing service only costs dropped messages)."""

    def __init__(self, ctx: Any, address: str, log: RunLog) -> None:
        self.sock = protocol.pusher(ctx, address) if address else None
        self.seq = protocol.SeqCounter()
        self.log = log
        self.dropped = 0

    def send(self, kind: str, payload: bytes = b"", **fields: Any) -> None:
        if self.sock is None:
            return
        if not protocol.send(
            self.sock, "event", protocol.event_header(kind, self.seq.next("event"), **fields), payload
        ):
            self.dropped += 1
            self.log(f"event {kind} not sent (service queue full)")


def run_loop(rc: RunContext) -> dict[str, Any]:
    """Run one run in a PsychoPy window: wait for the first trigger, then draw and flip once per frame until the end.

    Events are written and flushed as they complete, each onset is sent to the service (when ``cfg.service`` is
    set), and the quit key aborts the run at once. Returns the run's summary: ``aborted``, ``n_triggers``,
    ``events_sent`` and, once the trigger came, ``n_events``, ``frames``, ``dropped_frames``,
    ``max_frame_interval_ms``, ``pacing`` (and ``feedback_messages`` in a feedback run).
    """
    import zmq

    cfg = rc.cfg
    _, core, event = import_psychopy()
    clock = core.getTime
    wall = time.time() - clock()  # wall clock = run clock + wall
    log = RunLog(rc.paths["log"])
    log(f"start sub-{cfg.subject} ses-{cfg.session} run-{cfg.run} {rc.run_type}, {len(rc.trials)} events")
    zctx = zmq.Context()
    events = _Events(zctx, cfg.service, log)
    fb_state = DisplayState(cfg.feedback_topic) if rc.run_type == "feedback" else None
    sub = protocol.subscriber(zctx, cfg.feedback_sub, (cfg.feedback_topic,)) if fb_state and cfg.feedback_sub else None
    trigger = make_trigger(cfg.trigger, clock)
    if cfg.emulate_responses:
        rt = (0.15 * cfg.timing.soa, 0.3 * cfg.timing.soa)  # 0.45-0.9 s at the paper's 3 s
        responses: Any = EmulatedResponses(cfg.response_keys[0], cfg.plan.seed + cfg.run, rt=rt, clock=clock,
                                           real_keys=cfg.response_keys)  # fmt: skip
    else:
        responses = KeyResponses(cfg.response_keys)
    out: dict[str, Any] = {"aborted": False, "n_triggers": 0, "events_sent": 0}
    win = None
    try:
        win = open_window(cfg.window, f"fmriface {rc.run_type} run {cfg.run}")
        painter = Painter(win, cfg.window.face_size)
        for stim in sorted({t.stim_file for t in rc.trials if t.stim_file != "n/a"}):
            painter.load(stim, rc.stimuli_root / stim)
        painter.draw_text(CUE_TEXT, _cue_pos(cfg), 24)
        painter.warm_up()
        pacer = FramePacer(win, cfg.window, clock)
        log(f"pacing: {'sleep' if pacer.sleep else 'vsync'} at {1 / pacer.period:.2f} Hz")
        triggers = _wait_for_trigger(win, painter, pacer, trigger, event, cfg.quit_key)
        if not triggers:
            log("aborted before the trigger")
            out["aborted"] = True
            return out
        t0 = triggers[0]
        pacer.anchor(t0)
        log.t0 = t0 + wall
        if cfg.rush and not core.rush(True):
            log("could not raise the priority (rush): see PsychoPy's notes on Linux permissions")
        log("first trigger", t0 + wall)
        out["n_triggers"] = len(triggers)
        events.send("trigger", trigger_time=t0 + wall, subject=cfg.subject, session=cfg.session, run=cfg.run,
                    run_type=rc.run_type, n_trials=len(rc.trials))  # fmt: skip
        if rc.run_type == "feedback":
            _send_target(events, painter, rc.trials, cfg.send_target_image)

        def on_onset(trial: Trial, onset: float) -> None:
            events.send("onset", onset=onset, duration=trial.duration, trial_type=trial.trial_type,
                        stim_id=trial.stim_file, trial=trial.index, oneback=trial.oneback, run=cfg.run,
                        flip_time=onset + t0 + wall)  # fmt: skip
            responses.on_onset(trial.oneback, onset + t0)

        with EventsWriter(rc.paths["events"]) as writer:
            recorder = RunRecorder(rc.trials, writer, on_onset)
            timeline = Timeline(rc.trials, pacer.period)
            end = run_duration(rc.trials, cfg.timing)
            end = min(end, cfg.max_duration) if cfg.max_duration > 0 else end
            flips: list[float] = []
            t_flip = [0.0]
            while True:
                t_next = pacer.wait() - t0
                if t_next >= end:
                    break
                index = timeline.trial_at(t_next)
                _draw(painter, rc.trials[index] if index is not None else None, fb_state, cfg)
                win.callOnFlip(lambda: t_flip.__setitem__(0, clock()))
                win.flip()
                pacer.flipped(t_flip[0])
                if flips and t_flip[0] - flips[-1] > 1.5 * pacer.period:
                    log(f"frame drop: {1000 * (t_flip[0] - flips[-1]):.1f} ms between flips", t_flip[0] + wall)
                flips.append(t_flip[0])
                recorder.flipped(index, t_flip[0] - t0)
                keys = event.getKeys(timeStamped=True)
                if any(k == cfg.quit_key for k, _ in keys):
                    log(f"aborted by {cfg.quit_key}", t_flip[0] + wall)
                    out["aborted"] = True
                    break
                for t in trigger.poll(keys):
                    out["n_triggers"] += 1
                    log(f"trigger {out['n_triggers']}", t + wall)
                for key, t in responses.poll(keys):
                    row = recorder.respond(key, t - t0)
                    log(f"response {key}" + (f" to event {row.trial.index}" if row else " (no event)"), t + wall)
                if sub is not None:
                    _drain(sub, fb_state, clock)
            rows = recorder.close((flips[-1] if flips else clock()) - t0)
        if rc.run_type == "feedback":
            events.send("clear_target")
        intervals = np.diff(flips) if len(flips) > 1 else np.zeros(0)
        out.update(
            n_events=len(rows),
            frames=len(flips),
            dropped_frames=int(np.sum(intervals > 1.5 * pacer.period)),
            max_frame_interval_ms=round(float(intervals.max()) * 1000, 2) if intervals.size else None,
            events_sent=events.seq.peek("event") - events.dropped,
            pacing="sleep" if pacer.sleep else "vsync",
        )
        if fb_state is not None:
            out["feedback_messages"] = fb_state.counts
        log(f"end: {len(rows)} events, {out['n_triggers']} triggers, {out['dropped_frames']} dropped frames")
        return out
    finally:
        if cfg.rush:
            core.rush(False)
        if win is not None:
            win.close()
        trigger.close()
        log.close()
        zctx.destroy(linger=0)


def _wait_for_trigger(
    win: Any, painter: Painter, pacer: FramePacer, trigger: Any, event: Any, quit_key: str
) -> list[float]:
    """Show the waiting screen until the first trigger; the trigger times seen, or [] if the quit key was pressed."""
    event.clearEvents()
    trigger.start()
    while True:
        pacer.wait()
        painter.draw_text("Waiting for the scanner...", (0, 60), 24)
        painter.draw_cross()
        win.flip()
        pacer.flipped(pacer.clock())
        keys = event.getKeys(timeStamped=True)
        if any(k == quit_key for k, _ in keys):
            return []
        times = trigger.poll(keys)
        if times:
            return times


CUE_TEXT = "Imagine this face"


def _cue_pos(cfg: Any) -> tuple[float, float]:
    return (0.0, -cfg.window.face_size / 2 - 30)


def _draw(painter: Painter, trial: Trial | None, fb_state: DisplayState | None, cfg: Any) -> None:
    kind = trial.trial_type if trial is not None else None
    if kind in ("train_face", "test_face"):
        painter.draw_face(key=trial.stim_file)
    elif kind == "Cue":
        painter.draw_face(key=trial.stim_file)
        painter.draw_text(CUE_TEXT, _cue_pos(cfg), 24)
        return
    elif kind == "Img":
        painter.draw_frame()
    elif kind == "Feedback":
        cur = fb_state.current if fb_state is not None else None
        if cur is not None and cfg.feedback_show_face:
            painter.draw_face(cur.image, key=(cur.run_id, cur.seq))
        else:
            painter.draw_frame()
        value = feedback_value(cur.header) if cur is not None else None
        lo, hi = cfg.feedback_range
        painter.draw_thermometer(value, lo, hi, pos=(cfg.window.face_size / 2 + 60, 0))
    painter.draw_cross()


def _drain(sub: Any, state: DisplayState, clock: Any) -> None:
    """Take every queued message; the newest frame becomes the one shown."""
    import zmq

    while True:
        try:
            frames = sub.recv_multipart(flags=zmq.NOBLOCK)
        except zmq.Again:
            break
        state.ingest(frames, clock())
    state.take()


def _send_target(events: _Events, painter: Painter, trials: list[Trial], with_image: bool) -> None:
    target = next(t.stim_file for t in trials if t.trial_type == "Cue")
    if with_image:
        fields, payload = protocol.encode_image(painter.image(target))
        events.send("target", payload, stim_id=target, **fields)
    else:
        events.send("target", stim_id=target)
