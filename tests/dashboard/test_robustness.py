"""What no real service sends does not break the page: frames with unknown fields or fields of the wrong type,
malformed messages of every kind (non-finite numbers among them: the protocol's JSON is strict), markup in
strings; a page that never reads delays neither the stream nor the other pages; a new run starts the page afresh."""

from __future__ import annotations

import json
import socket

import numpy as np
import pytest

from tests.dashboard.live import DashboardProcess, FakeService, page_state, wait

FD = [0.1, 0.9, 0.2, 1.5, 0.3, 0.05, 0.6, 0.1]  # volumes 2..9; three above the 0.5 mm threshold


@pytest.fixture
def fake():
    f = FakeService()
    yield f
    f.close()


def test_unknown_fields_and_malformed_messages_do_not_break_the_page(fake, browser, tmp_path):
    dash = DashboardProcess(fake.address, "--fd-threshold", "0.5", workdir=tmp_path).start()
    try:
        page = browser.page(dash.url)
        fake.until(page, "document.body.dataset.run === 'fake'")
        # well formed, with fields no receiver knows (the protocol says: tolerate them)
        fake.frame(0, whatever={"deep": [1, 2, {"x": "y"}]}, huge="x" * 50000, t_extra=3,
                   feedback={"value": 0.25, "novel": "z"}, t={"sent": None, "novel": 1})  # fmt: skip
        # known fields of the wrong type: left out, the frame still counted
        fake.frame("three", motion="abc", fd="0.3", feedback=[1], t=[1, 2])
        fake.frame(1, image=np.zeros((2, 2, 3), np.uint8), fd=0.05, motion=[1e308, 0, 0, 0, 0, -1e308])
        malformed = [
            # non-finite numbers: the protocol's JSON is strict, so these are malformed messages
            [b"frame", b'{"schema":1,"run_id":"fake","seq":2,"volume":1,"fd":NaN,"motion":[0,0,0,0,0,Infinity]}', b""],
            [b"status", b'{"schema":1,"run_id":"fake","seq":99,"uptime_s":Infinity,"failed":-Infinity}', b""],
            [b"frame", b"{not json", b""],
            [b"frame"],
            [b"frame", b"{}", b"", b"extra"],
            [b"status", b'{"schema": 99}', b""],
            [b"frameX", b'{"schema": 1}', b""],
            [b"frame", b"[1, 2]", b""],
            [b"frame", b"\xff\xfe\xfd", b""],
            [b"frame", json.dumps({"schema": 1, "shape": [8, 8, 3], "dtype": "uint8"}).encode(), b"short"],
            [b"frame", json.dumps({"schema": 1, "shape": [8, 8, 4]}).encode(), bytes(256)],
            [b"end", json.dumps({"schema": 1, "run_id": "fake", "summary": "not a dict"}).encode() + b"x", b""],
        ]
        for frames in malformed:
            fake.raw(frames)
        # markup in every string field: shown as text, never run
        evil = '<img src=x onerror="window.__pwned=1">'
        fake.send("trial", {"trial": evil, "stim_id": evil, "trial_type": "<b>bold</b>", "volume": 1,
                            "feedback": {"value": "high"}}, fake.image())  # fmt: skip
        fake.status(state="<script>window.__pwned=2</script>", volumes="many", novel=evil)
        fake.send("frame", {"volume": 1}, None)  # a frame without an image: listed as a problem
        for k, fd in enumerate(FD, start=2):
            fake.frame(k, fd=fd, motion=[0.01 * k, 0, 0, 0, 0, -0.02 * k])
        n_frames = 3 + 1 + len(FD)
        wait(page, f"() => document.getElementById('c-frames').dataset.value === '{n_frames}'")
        wait(page, f"() => document.getElementById('c-malformed').dataset.value === '{len(malformed)}'")
        assert page.evaluate("window.__pwned") is None
        assert page.locator("#trials b").count() == 0 and page.locator("#trials img[onerror]").count() == 0
        assert "<b>bold</b>" in page.text_content("#trials") and evil in page.text_content("#status-extra")
        # volumes 0, 1 and 2..9 are plotted once each; the volume named "three" nowhere
        assert page_state(page, "state.points.map(p => p.v)") == list(range(10))
        assert page.get_attribute("#plot-fd", "data-points") == "10"
        assert page.get_attribute("#plot-fd", "data-marks") == "3" == page.get_attribute("#c-fd_above", "data-value")
        assert page_state(page, "state.points[1].m") == [1e308, 0, 0, 0, 0, -1e308]  # finite: drawn off scale
        assert page.get_attribute("#face-volume", "data-volume") == "9"
        kinds = page.locator("#problems li .kind").all_text_contents()
        assert kinds.count("malformed") == len(malformed) and "image" in kinds, kinds
        assert not page.errors and page_state(page, "page.errors") == 0, page.errors
        # a new run on the same stream: the page starts again
        fake.run_id = "fake-2"
        fake.seq = fake.protocol.SeqCounter()
        fake.frame(0)
        wait(page, "document.body.dataset.run === 'fake-2'")
        wait(page, "() => document.getElementById('c-frames').dataset.value === '1'")
        assert page.get_attribute("#plot-fd", "data-points") == "1"
        assert page.get_attribute("#c-malformed", "data-value") == "0"
    finally:
        summary = dash.stop()
    assert summary["malformed"] == 0 and summary["run_id"] == "fake-2"


def test_a_page_that_never_reads_delays_neither_the_stream_nor_the_other_pages(fake, browser, tmp_path):
    cfg = tmp_path / "dashboard.toml"
    cfg.write_text("client_events = 64\nclient_bytes = 262144\n")
    dash = DashboardProcess(fake.address, "--config", str(cfg), workdir=tmp_path).start()
    stalled = socket.create_connection(("127.0.0.1", dash.port))
    try:
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.sendall(f"GET /events HTTP/1.1\r\nHost: 127.0.0.1:{dash.port}\r\n\r\n".encode())
        page = browser.page(dash.url)
        fake.until(page, "document.body.dataset.run === 'fake'")
        n = 1500
        big = fake.rng.integers(0, 256, (8, 64, 64, 3), dtype=np.uint8)
        for k in range(n):
            fake.frame(k, image=big[k % 8])
        wait(page, f"() => document.getElementById('c-frames').dataset.value === '{n}'", timeout=60)
        wait(page, f"() => document.getElementById('face-volume').dataset.volume === '{n - 1}'", timeout=30)
        assert page.get_attribute("#plot-fd", "data-points") == "1000"  # the history kept: bounded
        assert 1 <= len(page_state(page, "state.film")) <= 8  # a burst's superseded faces are not encoded
        assert not page.errors, page.errors
    finally:
        summary = dash.stop()
        stalled.close()
    assert summary["messages_received"] == fake.sent  # the feed read everything, the stalled page regardless
    assert summary["client_drops"] >= 1  # the stalled page lost its oldest events (it gets the state again)
    assert summary["handoff_dropped"] == 0
