"""Parsing in the helper process while volumes wait for the worker: the same images and errors as parsing in the
intake thread, nothing lost when the helper dies, and the watcher using it only under a backlog."""

from __future__ import annotations

import pickle
import threading
import time

import numpy as np
import pytest

from service.intake.assembly import read_image, sniff
from service.intake.parse_offload import ParseOffload
from service.intake.watcher import VolumeWatcher
from service.volume import CorruptFileError, IncompleteFileError, ShapeMismatchError
from tests.service.intake.test_watcher import check_in_order, collect, fast, mosaic


def _ready(offload: ParseOffload, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not offload._up():
        assert offload.failure is None, offload.failure
        assert time.monotonic() < deadline, "the parse process did not start"
        time.sleep(0.02)


def _args(path):
    raw = path.read_bytes()
    return path, raw, "0" * 64, sniff(path, raw[:132])


def test_intake_errors_survive_the_process_boundary(tmp_path):
    for exc in (
        IncompleteFileError(tmp_path / "a.dcm", "pixel data is 10 bytes"),
        CorruptFileError(None, "header unreadable"),
        ShapeMismatchError(tmp_path / "b.dcm", (64, 64, 30), (64, 64, 36)),
    ):
        back = pickle.loads(pickle.dumps(exc))
        assert type(back) is type(exc) and str(back) == str(exc) and back.path == exc.path
        assert back.reason == exc.reason and back.kind == exc.kind
    assert pickle.loads(pickle.dumps(exc)).shape == (64, 64, 30)


def test_the_helper_parses_as_the_thread_does_and_errors_come_back(tmp_path):
    path = mosaic(tmp_path, 3)
    offload = ParseOffload()
    try:
        here = offload.read(*_args(path), backlog=False)
        assert offload._proc is None and offload.n_offloaded == 0  # no backlog: no helper at all
        _ready(offload)
        there = offload.read(*_args(path), backlog=True)
        assert offload.n_offloaded == 1
        assert type(there) is type(here) and there.acquisition == here.acquisition == 3
        np.testing.assert_array_equal(there.frames, here.frames)
        np.testing.assert_array_equal(there.positions, here.positions)
        cut = tmp_path / "cut.dcm"
        cut.write_bytes(path.read_bytes()[:-5000])
        with pytest.raises(IncompleteFileError, match="cut.dcm") as raised:
            offload.read(*_args(cut), backlog=True)
        with pytest.raises(IncompleteFileError) as direct:
            read_image(*_args(cut)[:2])
        assert raised.value.reason == direct.value.reason and offload.n_offloaded == 2
    finally:
        offload.close()
    assert offload._proc is None


def test_a_dead_helper_is_given_up_and_the_file_parsed_here(tmp_path):
    path = mosaic(tmp_path, 5)
    notices = []
    offload = ParseOffload(on_give_up=lambda reason, at: notices.append((reason, at)))
    try:
        _ready(offload)
        offload._proc.kill()
        offload._proc.wait(5)
        image = offload.read(*_args(path), backlog=True)  # the helper's pipe is closed: parsed in this thread
        assert image.acquisition == 5 and offload.n_offloaded == 0
        assert len(notices) == 1 and "parse process stopped" in notices[0][0] and notices[0][1] == path
        assert offload.read(*_args(path), backlog=True).acquisition == 5 and offload._proc is None  # for good
        assert len(notices) == 1  # told once
    finally:
        offload.close()


def test_watcher_parses_in_the_helper_while_volumes_wait_and_survives_its_death(tmp_path):
    for acq in range(1, 4):  # three volumes waiting at start: a backlog, which starts the helper
        mosaic(tmp_path, acq)

    changed = threading.Condition()  # notified at each volume or event the watcher hands on

    def wait_for(condition, what):
        with changed:
            assert changed.wait_for(condition, 30), f"{what} within 30 s (parse process: {watcher._parser.failure})"

    watcher = VolumeWatcher(fast(tmp_path, polling="off", gap_timeout_s=5.0))
    emit = watcher._emit

    def emit_and_notify(item):
        emit(item)
        with changed:
            changed.notify_all()

    watcher._emit = emit_and_notify
    with watcher:
        acq = 3
        while watcher._parser.n_offloaded < 3:  # nobody takes the volumes: the backlog grows
            assert watcher._parser.failure is None, watcher._parser.failure
            acq += 1
            mosaic(tmp_path, acq)
            wait_for(lambda n=acq: watcher.counts["volumes"] >= n, f"volume {acq} handed on")
        watcher._parser._proc.kill()
        watcher._parser._proc.wait(5)
        for _ in range(4):
            acq += 1
            mosaic(tmp_path, acq)
        # The flake's cause: taking volumes before intake had read the new files emptied the backlog, so they
        # were parsed in the intake thread and the dead helper was never asked (no event). Nobody takes a
        # volume until intake has found the helper dead.
        wait_for(lambda: watcher._parser.failure is not None, "the dead parse process noticed")
        volumes, events = collect(watcher, acq, timeout=20)
    check_in_order(volumes, list(range(1, acq + 1)))
    stopped = [e for e in events if e.kind == "parse-process"]
    assert len(stopped) == 1 and "parsing in the intake thread" in stopped[0].reason
    assert [e.kind for e in events if e.kind not in ("series", "parse-process")] == []


def test_parse_process_off_and_bad_values(tmp_path):
    for acq in range(1, 6):
        mosaic(tmp_path, acq)
    with VolumeWatcher(fast(tmp_path, polling="off", parse_process="off")) as watcher:
        time.sleep(0.5)
        volumes, _ = collect(watcher, 5)
        assert watcher._parser._proc is None
    check_in_order(volumes, [1, 2, 3, 4, 5])
    with pytest.raises(ValueError, match="parse_process must be auto or off"):
        fast(tmp_path, parse_process="always")


def test_a_service_folder_in_the_working_directory_is_not_what_the_helper_runs(tmp_path, monkeypatch):
    (tmp_path / "service").mkdir()
    (tmp_path / "service" / "__init__.py").write_text("raise ImportError('the wrong service package')\n")
    monkeypatch.chdir(tmp_path)
    path = mosaic(tmp_path, 2)
    offload = ParseOffload()
    try:
        _ready(offload)
        assert offload.read(*_args(path), backlog=True).acquisition == 2 and offload.n_offloaded == 1
    finally:
        offload.close()


def test_kill_from_another_thread_ends_a_wait_on_a_frozen_helper(tmp_path):
    import signal
    import threading

    path = mosaic(tmp_path, 4)
    notices = []
    offload = ParseOffload(on_give_up=lambda reason, at: notices.append(reason))
    result = {}
    try:
        _ready(offload)
        offload._proc.send_signal(signal.SIGSTOP)  # frozen: it reads nothing and answers nothing
        reader = threading.Thread(target=lambda: result.update(image=offload.read(*_args(path), backlog=True)))
        reader.start()
        time.sleep(0.3)
        assert reader.is_alive()
        offload.kill()  # what VolumeWatcher.stop does when its intake thread is still waiting
        reader.join(5)
        assert not reader.is_alive() and result["image"].acquisition == 4  # parsed in the thread instead
        assert len(notices) == 1 and "parse process stopped" in notices[0]
    finally:
        offload.close()
    assert offload._proc is None


def test_a_helper_that_cannot_start_is_quoted_and_intake_goes_on(tmp_path, monkeypatch, capfd):
    import service.intake.parse_offload as O

    monkeypatch.setattr(O, "_BOOT", "raise SystemExit('no readers here {root}')")
    path = mosaic(tmp_path, 6)
    offload = ParseOffload()
    try:
        deadline = time.monotonic() + 30
        while offload.failure is None:
            assert not offload._up() and time.monotonic() < deadline
            time.sleep(0.02)
        assert "failed to start" in offload.failure and "no readers here" in offload.failure
        assert offload.read(*_args(path), backlog=True).acquisition == 6  # parsed in this thread
    finally:
        offload.close()
    assert "no readers here" not in capfd.readouterr().err  # the helper's stderr never reaches the service's
