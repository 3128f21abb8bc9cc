"""CurveZMQ end to end through the real service: keys from `fmriface keys`, an allowed display gets every
frame and its flip acks are recorded, a plain or unlisted peer gets nothing."""

from __future__ import annotations

import json
import threading
import time

import pytest
import zmq

from fmriface.benchmarks.synth import make_bundle, make_run
from fmriface.commands import keys as keys_cmd
from service import protocol
from service.live.security import client_keys, create_keypair
from service.live.serve import ServeConfig, Service
from stimulus.display import DisplayConfig
from tests.conftest import free_port
from tests.service.harness import QueueSource, make_volume

N_VOL = 12


@pytest.fixture
def keyring(tmp_path):
    assert keys_cmd.main(["--out", str(tmp_path / "keys"), "--names", "server,display"]) == 0
    create_keypair(tmp_path / "stranger", "intruder")
    return tmp_path / "keys"


def test_service_with_curve_serves_allowed_peers_only(tmp_path, keyring):
    synth = make_bundle(tmp_path / "b", n_voxels=40, latent_size=8, image_size=8, tr=2.0)
    run = make_run(synth, [(6.0, 0)], N_VOL, amplitude=3.0, noise=2.0, drift=5.0, seed=1)
    cfg = ServeConfig(
        bundle=synth.path, watch=tmp_path, runs=tmp_path / "runs", pub=f"tcp://127.0.0.1:{free_port()}",
        pull=f"tcp://127.0.0.1:{free_port()}", heartbeat=0.1, max_volumes=N_VOL, hwm=1000,
        curve_secret=keyring / "server.key_secret", curve_allowed=keyring / "allowed",
    )  # fmt: skip
    source = QueueSource()
    svc = Service(cfg, source=source).start()
    thread = threading.Thread(target=svc.run, daemon=True)
    thread.start()
    ctx = zmq.Context()
    display = client_keys(keyring / "display.key_secret", keyring / "server.key")
    intruder = client_keys(tmp_path / "stranger" / "intruder.key_secret", keyring / "server.key")
    sub = protocol.subscriber(ctx, cfg.pub, hwm=100000, curve=display)
    ack = protocol.pusher(ctx, cfg.pull, curve=display)
    others = [protocol.subscriber(ctx, cfg.pub, curve=intruder), protocol.subscriber(ctx, cfg.pub)]
    frames = []
    try:
        deadline = time.monotonic() + 15
        while (m := protocol.recv(sub, 200, protocol.SERVICE_TOPICS)) is None or m.topic != "status":
            assert time.monotonic() < deadline, "no heartbeat reached the allowed display"
        for i in range(N_VOL):
            source.q.put(make_volume(i, run[i], synth.affine, 2.0))
        while (m := protocol.recv(sub, 15000, protocol.SERVICE_TOPICS)) is not None and m.topic != "end":
            if m.topic == "frame":
                frames.append(m.header["volume"])
                protocol.send(ack, "flip", protocol.flip_header(len(frames) - 1, "frame", m.header["seq"], time.time()))
        assert frames == list(range(N_VOL))
        for s in others:
            assert protocol.recv(s, 200, protocol.SERVICE_TOPICS) is None
    finally:
        svc.stop("test")
        thread.join(10)
        for s in (sub, ack, *others):
            s.close(linger=0)
        ctx.term()
    assert svc.pub_.auth is not None and svc.pub_.auth.refused >= 1
    flips = [json.loads(line) for line in (svc.run_dir_ / "flips.jsonl").read_text().splitlines()]
    # the acks that arrived before max_volumes ended the run went through CURVE and closed the latency loop
    assert flips and all(f["e2e_s"] > 0 and 0 <= f["volume"] < N_VOL for f in flips)


def test_curve_options_go_together(tmp_path):
    with pytest.raises(ValueError, match="go together"):
        ServeConfig(curve_secret=tmp_path / "server.key_secret")
    with pytest.raises(ValueError, match="go together"):
        DisplayConfig(curve_secret=tmp_path / "display.key_secret")
