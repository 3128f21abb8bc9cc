"""Who gets the page: on loopback anyone on this machine (and only under a loopback name, against DNS
rebinding); bound beyond it, or with --require-token, only whoever has the token printed at start. A wrong
token gets 401 and nothing else: no page, no script, no stream, no runs, no stimulus. The page also works under
its own Content Security Policy, and file names from the stream never reach outside the stimulus folder."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from fmriface.dashboard.server import Dashboard, DashboardConfig
from tests.dashboard.live import DashboardProcess, FakeService, http, page_state, wait

PATHS = ("/", "/events", "/api/state", "/api/runs", "/api/runs/x", "/static/app.js", "/stimulus/a.png", "/nothing")


@pytest.fixture
def fake():
    f = FakeService()
    yield f
    f.close()


def test_bound_beyond_loopback_a_token_is_made_required_and_said():
    d = Dashboard(DashboardConfig(host="0.0.0.0", port=8050))
    assert len(d.token) >= 24
    text = "\n".join(d.announcement(8050))
    assert "token is required" in text and "bound beyond this host (0.0.0.0)" in text
    assert Dashboard(DashboardConfig()).token == ""  # loopback: none
    assert Dashboard(DashboardConfig(token="given")).token == "given"


def test_a_wrong_token_gets_nothing(fake, browser, tmp_path):
    stimuli = tmp_path / "stimuli"
    stimuli.mkdir()
    (stimuli / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    runs = tmp_path / "runs"
    (runs / "x").mkdir(parents=True)
    (runs / "x" / "manifest.json").write_text('{"state": "ended"}')
    dash = DashboardProcess(fake.address, "--require-token", "--stimuli", str(stimuli), "--runs", str(runs),
                            workdir=tmp_path).start()  # fmt: skip
    try:
        token, base = dash.token, dash.base
        assert token and "a token is required" in "\n".join(dash.announced)
        for path in PATHS:
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Cookie": f"fmriface_dashboard_{dash.port}=wrong"}):
                status, h, body = http(base + path, headers=headers)
                assert status == 401, (path, headers, status)
                assert b"snapshot" not in body and b"fake" not in body and b"<script" not in body
            status, _, body = http(f"{base}{path}?token=wrong{token}")
            assert status == 401 and b"event:" not in body
        # the right token: given once in the address, then kept in a cookie
        status, h, _ = http(f"{base}/?token={token}")
        assert status == 303 and h["Location"] == "/"
        assert "HttpOnly" in h["Set-Cookie"] and "SameSite=Strict" in h["Set-Cookie"]
        cookie = h["Set-Cookie"].split(";", 1)[0]
        assert http(base + "/api/runs", headers={"Cookie": cookie})[0] == 200
        assert http(base + "/stimulus/a.png", headers={"Authorization": f"Bearer {token}"})[0] == 200
        status, h, body = http(base + "/events", headers={"Cookie": cookie})
        assert status == 200 and h["Content-Type"].startswith("text/event-stream")
        assert body.startswith(b"retry: 1000") and b"event: snapshot" in body

        # in a browser: a wrong token shows the refusal and runs nothing
        page = browser.page(f"{base}/?token=nope", wait_live=False)
        assert "401" in page.text_content("body")
        assert page.evaluate("typeof window.fmrifaceDashboard") == "undefined"
        # the right one: the page, live
        page = browser.page(dash.url)
        assert page.url == base + "/"  # the token left the address bar
        fake.until(page, "document.body.dataset.run === 'fake'")
        fake.frame(0)
        page.wait_for_selector("#c-frames[data-value='1']", state="attached")
        assert not page.errors, page.errors
    finally:
        dash.stop()


def test_on_loopback_only_loopback_names_are_answered_and_paths_stay_inside(fake, browser, tmp_path):
    stimuli = tmp_path / "stimuli"
    (stimuli / "test").mkdir(parents=True)
    (stimuli / "test" / "face.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (stimuli / "notes.txt").write_text("not an image")
    (tmp_path / "secret.png").write_bytes(b"\x89PNG secret")
    dash = DashboardProcess(fake.address, "--stimuli", str(stimuli), "--runs", str(tmp_path), workdir=tmp_path).start()
    try:
        base = dash.base
        assert not dash.token and "no token needed" in "\n".join(dash.announced)
        status, h, _ = http(base + "/")
        assert status == 200 and "script-src 'self'" in h["Content-Security-Policy"]
        assert h["X-Content-Type-Options"] == "nosniff"
        for host in ("evil.example", f"evil.example:{dash.port}", "10.0.0.1", "127.0.0.1.evil.example"):
            assert http(base + "/api/state", headers={"Host": host})[0] == 403, host
        assert http(base + "/api/state", headers={"Host": f"localhost:{dash.port}"})[0] == 200
        assert http(base + "/stimulus/test/face.png")[0] == 200
        for path in ("/stimulus/..%2Fsecret.png", "/stimulus/test/..%2F..%2Fsecret.png", "/stimulus/notes.txt",
                     "/stimulus/%2Fetc%2Fpasswd", "/api/runs/..", "/api/runs/..%2F", "/static/..%2Fserver.py",
                     "/static/index.html"):  # fmt: skip
            assert http(base + path)[0] == 404, path

        # the page under its own Content Security Policy (no bypass): it runs and breaks no rule
        page = browser.page(dash.url, csp=True)
        fake.status()
        page.wait_for_selector("body[data-run='fake']", state="attached", timeout=20000)
        fake.frame(0)
        page.wait_for_selector("#plot-fd[data-points='1']", state="attached")
        page.wait_for_selector("#face-volume[data-volume='0']", state="attached")
        assert not page.errors and not [c for c in page.console if "Content Security Policy" in c], page.console
    finally:
        dash.stop()


def _raw_get(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """GET over a plain socket (http.client refuses nothing, but this says exactly what is sent)."""
    import socket

    lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


@pytest.mark.parametrize("token", [False, True])
def test_an_over_long_address_gets_414_and_one_log_line_not_a_traceback(fake, tmp_path, token):
    stimuli = tmp_path / "stimuli"
    stimuli.mkdir()
    (stimuli / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    args = ["--stimuli", str(stimuli), *(["--require-token"] if token else [])]
    dash = DashboardProcess(fake.address, *args, workdir=tmp_path).start()
    try:
        for n in (9000, 20000, 200000):
            status, body = _raw_get(dash.port, "/" + "x" * n)
            assert status == 414 and body.startswith(b"414: the address is longer than"), (n, status, body[:80])
            assert b"xxxx" not in body  # the address is not echoed back
        status, _ = _raw_get(dash.port, "/api/state?token=" + "t" * 9000)
        assert status == 414
        assert _raw_get(dash.port, "/api/state", {"X-Long": "h" * 20000})[0] == 431
        # a stimulus name the file system refuses is no file: 404, never 500 (with the token when one is asked)
        auth = {"Authorization": f"Bearer {dash.token}"} if token else {}
        for name in ("a" * 300 + ".png", "é" * 200 + ".png", "d/" * 3000 + "a.png", "a" * 5000 + ".png"):
            status, body = _raw_get(dash.port, "/stimulus/" + quote(name), auth)
            assert status == 404, (name[:20], status, body[:200])
        assert _raw_get(dash.port, "/stimulus/a.png", auth)[0] == 200
        assert _raw_get(dash.port, "/api/state", auth)[0] == 200  # and the server is as it was
    finally:
        summary = dash.stop()
    log = dash.log()
    assert "Traceback" not in log and "Error handling request" not in log, log
    assert log.count("refused") <= 2, log  # one line per kind (414, 431) at most per minute
    assert summary["bad_requests"] == {"414": 4, "431": 1}


def test_long_stimulus_names_in_the_stream_render_cut(fake, browser, tmp_path):
    stimuli = tmp_path / "stimuli"
    stimuli.mkdir()
    dash = DashboardProcess(fake.address, "--stimuli", str(stimuli), workdir=tmp_path).start()
    try:
        page = browser.page(dash.url)
        fake.until(page, "document.body.dataset.run === 'fake'")
        long_names = ["s" * 900_000, "é" * 300, "d/" * 2000 + "x.png"]
        for k, name in enumerate(long_names):
            fake.send("trial", {"trial": k, "stim_id": name, "trial_type": "face", "volume": k}, fake.image())
            fake.frame(k, feedback={"value": 0.1, "target": name})
        fake.status(target={"stim_id": long_names[0]})
        wait(page, "() => document.getElementById('trials').dataset.count === '3'")
        wait(page, "() => document.getElementById('face-volume').dataset.volume === '2'")
        assert len(page_state(page, "state.trials[0].stim_id")) == 200
        assert len(page.text_content("#face-target-caption")) < 260
        assert not page.errors, page.errors
        status, _, body = http(dash.base + "/api/state")
        assert status == 200 and len(body) < 200_000
    finally:
        dash.stop()
    assert "Traceback" not in dash.log(), dash.log()
