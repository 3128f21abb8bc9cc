"""The page recovers by itself: when the service is killed and restarted (it resumes the run) and when the
dashboard is stopped and started again (the page reconnects, and the run's records fill in what it missed)."""

from __future__ import annotations

from service.live.runlog import read_volumes
from tests.dashboard.live import DashboardProcess, Session, Watcher, wait


def _points(page, n: int, timeout: float = 30.0) -> None:
    wait(page, f"() => document.getElementById('plot-fd').dataset.points === '{n}'", timeout=timeout)


def test_the_page_recovers_when_the_service_and_then_the_dashboard_restart(tmp_path, face_bundle, browser):
    s = Session(tmp_path, face_bundle, 18, [(2.0, 6)])
    s.start_serve()
    watcher = Watcher(s.pub, s.pull, ack=False)
    watcher.start()
    dash = DashboardProcess(s.pub, "--runs", str(s.runs), workdir=tmp_path).start()
    try:
        assert watcher.ready.wait(30), s.serve.log()[-2000:]
        page = browser.page(dash.url)
        wait(page, "document.body.dataset.service === 'live'")
        s.replay(stop=6, speed=10).wait(30)
        _points(page, 6)

        # the service dies mid-run: the page says so, and takes the resumed run's frames when it is back
        s.serve.kill()
        wait(page, "document.body.dataset.service === 'silent'")
        assert page.get_attribute("#c-restarts", "data-value") == "0"
        s.start_serve()
        wait(page, "document.body.dataset.service === 'live'")
        s.replay(start=6, stop=12, speed=10).wait(30)
        _points(page, 12)
        wait(page, "() => document.getElementById('c-restarts').dataset.value === '1'")
        assert page.get_attribute("#c-frames", "data-value") == "12"
        assert page.get_attribute("body", "data-run") == "session-01"

        # the dashboard stops: the page says so and waits; volumes go on arriving meanwhile
        port = dash.port
        dash.stop()
        wait(page, "document.body.dataset.connection !== 'live'")
        s.replay(start=12, stop=16, speed=10).wait(30)
        wait(page, "document.body.dataset.connection !== 'live'")  # still down: nobody has restarted it
        dash = DashboardProcess(s.pub, "--runs", str(s.runs), port=port, workdir=tmp_path).start()
        wait(page, "document.body.dataset.connection === 'live'", timeout=30)
        # what it missed comes back from the run's records; what follows from the stream
        _points(page, 16)
        s.replay(start=16, speed=10).wait(30)
        _points(page, 18)
        ok = [r["volume"] for r in read_volumes(s.runs / "session-01") if r["status"] == "ok"]
        assert ok == list(range(18))
        assert page.evaluate("window.fmrifaceDashboard.state.points.map(p => p.v)") == ok
        assert page.get_attribute("#c-missing", "data-value") == "0"
        # the face is drawn after its frame's point (the image decodes first): wait for it, on a loaded machine too
        wait(page, "document.getElementById('face-volume').dataset.volume === '17'")
        assert page.evaluate("window.fmrifaceDashboard.page.connects") == 2
        assert not page.errors, page.errors
    finally:
        dash.kill()
        watcher.close()
        s.close()
