"""Display latency: message received -> flip, and sent -> flip, of `fmriface display` under Xvfb.

Starts ``fmriface display --headless`` in a subprocess (on an Xvfb started here when $DISPLAY is unset),
publishes ``--frames`` decoded-face messages at ``--rate`` Hz on an absolute schedule once the display has
subscribed, and collects its ``flip`` acks. Reports the distribution of flip time minus receive time (the
display's own latency: decoding, texture upload, draw, flip; keys ``p50_ms``, ``p99_ms``) and of flip time minus
send time (adds the ZeroMQ hop), both on the same machine clock. Xvfb has no vsync, so a real screen adds up to
one refresh period to each.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from contextlib import nullcontext
from typing import Any

import numpy as np


def add_arguments(p: Any) -> None:
    """Add this benchmark's options to the parser of ``fmriface bench display``."""
    p.add_argument("--frames", type=int, default=300, help="frames to publish (default 300)")
    p.add_argument("--rate", type=float, default=20.0, help="frames per second (default 20)")
    p.add_argument("--image-size", type=int, default=64, help="side of the published face (default 64)")
    p.add_argument("--mode", default="face", choices=["face", "feedback", "operator"])
    p.add_argument("--save-frames", action="store_true", help="also save every frame as PNG (headless cost)")


def _stats(ms: np.ndarray, prefix: str = "") -> dict[str, float | None]:
    if ms.size == 0:
        return {f"{prefix}p50_ms": None, f"{prefix}p99_ms": None}
    return {
        f"{prefix}p50_ms": round(float(np.percentile(ms, 50)), 3),
        f"{prefix}p90_ms": round(float(np.percentile(ms, 90)), 3),
        f"{prefix}p99_ms": round(float(np.percentile(ms, 99)), 3),
        f"{prefix}max_ms": round(float(ms.max()), 3),
    }


def run(args: Any) -> dict[str, Any]:
    """Publish faces to a headless ``fmriface display`` and return its receive -> flip and send -> flip latency."""
    import tempfile

    import zmq

    from service import protocol
    from stimulus.xvfb import virtual_display

    with tempfile.TemporaryDirectory() as tmp, nullcontext() if os.environ.get("DISPLAY") else virtual_display():
        ctx = zmq.Context()
        pub = ctx.socket(zmq.XPUB)
        pub.setsockopt(zmq.LINGER, 0)
        pub.setsockopt(zmq.SNDHWM, protocol.DEFAULT_HWM)
        port = pub.bind_to_random_port("tcp://127.0.0.1")
        pull = ctx.socket(zmq.PULL)
        pull.setsockopt(zmq.LINGER, 0)
        ack_port = pull.bind_to_random_port("tcp://127.0.0.1")
        cmd = [
            sys.executable, "-m", "fmriface", "display", "--sub", f"tcp://127.0.0.1:{port}",
            "--ack", f"tcp://127.0.0.1:{ack_port}", "--headless", "--timeout", "30", "--mode", args.mode,
            "--size", "640x480", "--face-size", "256", "--json",
        ]  # fmt: skip
        if args.save_frames:
            cmd += ["--save-frames", os.path.join(tmp, "frames")]
        env = {**os.environ, "HOME": tmp, "FMRIFACE_QUIET": "1"}
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            _wait_subscribed(pub, proc)
            sent, acks = _publish(pub, pull, args, protocol)
            protocol.send(pub, "end", {"run_id": "bench", "seq": 0})
            out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
            ctx.destroy(linger=0)
    if proc.returncode != 0:
        raise RuntimeError(f"the display failed (status {proc.returncode}):\n{err[-2000:]}")
    summary = json.loads(out.strip().splitlines()[-1])
    acks = [a for a in acks if a["shown_seq"] in sent]  # late acks of probe frames are not measured
    recv_to_flip = np.array([(a["flip_time"] - a["received"]) * 1000 for a in acks])
    send_to_flip = np.array([(a["flip_time"] - sent[a["shown_seq"]]) * 1000 for a in acks])
    return {
        "count": int(recv_to_flip.size),
        **_stats(recv_to_flip),
        **_stats(send_to_flip, "send_to_flip_"),
        "frames_sent": len(sent),
        "frames_not_shown": len(sent) - int(recv_to_flip.size),
        "display_stale_total": summary["stale"],
        "rate_hz": args.rate,
        "image_size": args.image_size,
        "mode": args.mode,
        "save_frames": bool(args.save_frames),
        "display": "Xvfb (no vsync)" if not os.environ.get("DISPLAY") else os.environ["DISPLAY"],
    }


def _wait_subscribed(pub: Any, proc: Any, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the display exited early:\n{proc.stderr.read()[-2000:]}")
        if pub.poll(200) and pub.recv() == b"\x01frame":
            return
    raise RuntimeError("the display never subscribed")


def _publish(pub: Any, pull: Any, args: Any, protocol: Any) -> tuple[dict[int, float], list[dict]]:
    """Publish on an absolute schedule, collecting acks between sends; then wait for the last acks."""
    from fmriface.common import progress

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(8, args.image_size, args.image_size, 3), dtype=np.uint8)
    sent: dict[int, float] = {}
    acks: list[dict] = []

    def send(k: int) -> None:
        fields, payload = protocol.encode_image(images[k % len(images)])
        sent[k] = time.time()
        protocol.send(
            pub, "frame", {"run_id": "bench", "seq": k, "volume": k, "t": {"sent": sent[k]}, **fields}, payload
        )

    # The display subscribes before its window is up: probe until a frame is acked, so startup is not measured.
    k, deadline = 0, time.perf_counter() + 60
    while not acks and time.perf_counter() < deadline:
        send(k)
        k += 1
        _collect(pull, acks, 0.2, protocol)
    if not acks:
        raise RuntimeError("the display never acknowledged a frame")
    first = k
    _collect(pull, acks, 0.3, protocol)
    acks.clear()
    sent.clear()
    t0 = time.perf_counter() + 0.1
    with progress(total=args.frames, desc="display bench", unit="frame") as bar:
        for k in range(first, first + args.frames):
            while (left := t0 + (k - first) / args.rate - time.perf_counter()) > 0:
                _collect(pull, acks, min(left, 0.05), protocol)
            send(k)
            bar.update()
    deadline = time.perf_counter() + 5.0
    while len(acks) < len(sent) and time.perf_counter() < deadline:
        _collect(pull, acks, 0.1, protocol)
    return sent, acks


def _collect(pull: Any, acks: list[dict], timeout: float, protocol: Any) -> None:
    msg = protocol.recv(pull, int(timeout * 1000), ("flip",))
    if msg is not None:
        acks.append(msg.header)
