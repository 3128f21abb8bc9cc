"""The body of the LSL tests, run inside a network namespace of its own (``tests/fmriface/test_lsl.py``).

``python -m tests.fmriface.lsl_scenario OUT N_FRAMES`` checks it holds only the loopback, plays a fake service (a
PUB socket sending status, frames, trials and end as docs/protocol.md says) through :class:`LslBridge`, records
the four streams with LSL inlets and writes what was sent and received to ``OUT/result.json``.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from pathlib import Path

import numpy as np
import zmq

from fmriface.lsl import BridgeConfig, ClockMap, LslBridge
from fmriface.lsl.streams import STREAM_NAMES
from service import protocol

LATENT = 8
RUN_ID = "run-lsltest"


def _frame(k: int, rng: np.random.Generator) -> dict:
    now = time.time()
    censored = k % 7 == 5
    qa = {"censored": censored, "reasons": ["spike"] if censored else [], "fd": 0.1}
    qa.update(dvars=None if k == 0 else round(float(rng.uniform(5, 10)), 4), std_dvars=None if k == 0 else 1.1)
    qa.update(global_signal=round(float(rng.uniform(900, 1000)), 3), outlier_fraction=0.001, slice_z=1.5)
    h = {"run_id": RUN_ID, "volume": k, "acquisition": k + 1, "tr": 2.0, "ready": k >= 4}
    h["t"] = {"file_ready": now - 0.006, "seen": now - 0.0055, "read": now - 0.005, "dequeued": now - 0.004}
    h["t"].update(motion=now - 0.003, decoded=now - 0.001)
    h["motion"] = [round(float(v), 5) for v in rng.normal(scale=0.2, size=6)]
    h["fd"], h["qa"] = round(float(rng.uniform(0, 0.3)), 5), qa
    h["feedback"] = {"projections": {"Male": 0.1}, **({"value": round(float(rng.uniform(-1, 1)), 5)} if k else {})}
    h["latent"] = [round(float(v), 5) for v in rng.normal(size=LATENT)]
    return h


def _pull(inlet, n: int, out: list, timeout: float) -> None:
    from pylsl import local_clock

    deadline = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < deadline:
        sample, ts = inlet.pull_sample(timeout=0.5)
        if sample is not None:
            out.append((sample, ts, local_clock()))


def main(out_dir: str, n_frames: int, rate: float) -> None:
    import pylsl

    out = Path(out_dir)
    nets = sorted(name for _, name in socket.if_nameindex())  # this namespace's (sysfs shows the host's)
    bundle = out / "bundle"
    bundle.mkdir(exist_ok=True)
    (bundle / "manifest.json").write_text(json.dumps({"latent_size": LATENT, "tr": 2.0}))
    ctx = zmq.Context()
    address = "tcp://127.0.0.1:5599"
    pub = protocol.publisher(ctx, address, hwm=100000)
    seq = protocol.SeqCounter()

    def send(topic: str, header: dict) -> dict:
        header = {**header, "seq": seq.next(topic)}
        if topic == "frame":
            header["t"]["sent"] = time.time()
        assert protocol.send(pub, topic, header)
        return header

    bridge = LslBridge(BridgeConfig(sub=address, bundle=bundle, exit_on_end=True))
    stop = threading.Event()
    result: dict = {}
    thread = threading.Thread(target=lambda: result.update(summary=bridge.run(stop)), daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while bridge.streams is None and time.monotonic() < deadline:  # heartbeats until the bridge has the run
        send("status", {"run_id": RUN_ID, "state": "waiting", "uptime_s": 0.1, "volumes": 0})
        time.sleep(0.05)
    inlets = {}
    for name in STREAM_NAMES:
        found = pylsl.resolve_byprop("name", name, 1, 10.0)
        assert found, f"stream {name} not found"
        inlets[name] = pylsl.StreamInlet(found[0], max_buflen=360, processing_flags=0)
        inlets[name].open_stream(timeout=5.0)
    # open_stream returned: each inlet is connected, so nothing pushed from here on is missed
    infos = {name: inlet.info(timeout=5.0).as_xml() for name, inlet in inlets.items()}
    n_trials = n_frames // 6
    got: dict[str, list] = {name: [] for name in STREAM_NAMES}
    expect = {STREAM_NAMES[0]: n_frames, STREAM_NAMES[1]: n_trials, STREAM_NAMES[2]: n_frames}
    expect[STREAM_NAMES[3]] = 1 + sum(k % 7 == 5 for k in range(n_frames)) + n_trials + 1
    pullers = [
        threading.Thread(target=_pull, args=(inlets[n], expect[n], got[n], 60.0), daemon=True) for n in STREAM_NAMES
    ]
    for t in pullers:
        t.start()
    clock = ClockMap()
    rng = np.random.default_rng(0)
    frames, trials = [], []
    for k in range(n_frames):
        frames.append(send("frame", _frame(k, rng)))
        if k % 6 == 5:
            latent = [round(float(v), 5) for v in rng.normal(size=LATENT)]
            h = {"run_id": RUN_ID, "trial": len(trials), "onset": 2.0 * k, "duration": 1.0, "trial_type": "face"}
            h.update(stim_id=f"face_{k}.png", volume=k, t={"read": time.time()}, latent=latent)
            trials.append(send("trial", {**h, "feedback": {"projections": {}, "value": 0.5}}))
        time.sleep(1.0 / rate)
    send("end", {"run_id": RUN_ID, "reason": "max_volumes", "summary": {}})
    for t in pullers:
        t.join(70)
    thread.join(10)
    stop.set()
    pub.close(linger=0)
    ctx.term()
    result.update(nets=nets, infos=infos, frames=frames, trials=trials, offset=clock.offset_, got=got)
    result["bridge_offset"] = bridge.clock.offset_ if bridge.clock else None
    result["liblsl"] = pylsl.library_info()
    (out / "result.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 60, float(sys.argv[3]) if len(sys.argv) > 3 else 100)
