"""`fmriface serve` on a folder holding an earlier run (issue 28): the earlier run's files, two hours old, are set
aside and recorded once in intake.jsonl; the run written after serve started is the one decoded."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import numpy as np
import zmq

from fmriface import cli
from fmriface.benchmarks.synth import make_bundle, make_run
from service import protocol
from service.live.runlog import read_records, read_volumes
from service.scanner.replay import ScannerEmulator
from service.scanner.writers import write_volume
from tests.conftest import free_port

TR = 2.0


def test_serve_decodes_the_run_after_its_start_not_the_earlier_one_in_the_folder(tmp_path, capsys):
    synth = make_bundle(tmp_path / "bundle", n_voxels=80, latent_size=8, image_size=8, tr=TR)
    watch, runs = tmp_path / "export", tmp_path / "runs"
    watch.mkdir()
    earlier = make_run(synth, [], 6, seed=1)
    t_old = time.time() - 7200
    for k in range(6):  # an earlier run on the same grid, series 7, written two hours ago
        path = watch / f"old_{k:03d}.dcm"
        write_volume(earlier[k], synth.affine, path, "mosaic", acquisition=k + 1, tr=TR, series_number=7)
        os.utime(path, (t_old, t_old))
    pub, pull = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    argv = ["serve", "--config", "serve-tiny", "--bundle", str(synth.path), "--watch", str(watch), "--runs", str(runs)]
    argv += ["--pub", pub, "--pull", pull, "--idle-timeout", "1.5"]
    ctx = zmq.Context()
    sub = protocol.subscriber(ctx, pub, hwm=10000)
    result: dict = {}
    thread = threading.Thread(target=lambda: result.update(rc=cli.main(argv)), daemon=True)
    thread.start()
    n = 5
    try:
        while True:  # serve is up once its first heartbeat comes
            msg = protocol.recv(sub, 20000, protocol.SERVICE_TOPICS)
            assert msg is not None, "no status heartbeat"
            if msg.topic == "status":
                break
        live = make_run(synth, [], n, seed=2)
        emulator = ScannerEmulator(np.moveaxis(live, 0, -1), synth.affine, TR, watch, fmt="mosaic", speed=40.0)
        emulator.start()
        messages = []
        while not messages or messages[-1].topic != "end":
            msg = protocol.recv(sub, 10000, protocol.SERVICE_TOPICS)
            assert msg is not None, "the service went silent"
            messages.append(msg)
        emulator.wait(10)
    finally:
        thread.join(20)
        sub.close(linger=0)
        ctx.term()
    assert result["rc"] == 0
    frames = [m for m in messages if m.topic == "frame"]
    assert [m.header["volume"] for m in frames] == list(range(n))
    run_dir = Path(json.loads(capsys.readouterr().out.strip().splitlines()[-1])["run_dir"])
    assert not any(r["file"].startswith("old_") for r in read_volumes(run_dir))
    intake = read_records(run_dir / "intake.jsonl")
    stale = [r for r in intake if "before serve started" in r["reason"]]
    assert len(stale) == 1 and "series 7" in stale[0]["reason"] and "6 files" in stale[0]["reason"], intake
    followed = [r["reason"] for r in intake if r["kind"] == "series"]
    assert len(followed) == 1 and "series 7" not in followed[0], followed
