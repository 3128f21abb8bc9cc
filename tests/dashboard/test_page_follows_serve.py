"""The page in a real headless Chromium while `fmriface serve` runs a short replayed scan: the counts, the plots'
point counts and the face images follow the stream; the run's records add the intake's problems, the flip acks
and the earlier runs, one click away; a screenshot of the page is kept (for the README with
FMRIFACE_README_SHOTS=1)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from service.live.runlog import read_volumes
from tests.dashboard.live import DashboardProcess, Session, Watcher, data_url_image, page_state, wait

N_VOLUMES = 20
TRIALS = [(2.0, 6), (10.0, 7), (18.0, 8), (26.0, 0)]
FD_THRESHOLD = 0.5
ROOT = Path(__file__).resolve().parents[2]


def _corrupt_seed(session: Session) -> int:
    """A seed whose plan corrupts exactly one volume, in the middle of the run."""
    from service.scanner.replay import ScannerEmulator

    for seed in range(200):
        emu = ScannerEmulator(session.data, session.fb.sb.affine, 2.0, session.watch, faults=("corrupt",),
                              fault_rate=0.1, seed=seed)  # fmt: skip
        bad = [j.volume for j in emu.plan() if j.fault]
        if len(bad) == 1 and 6 <= bad[0] <= 14:
            return seed
    raise AssertionError("no seed corrupts one middle volume")


class Replay:
    """The scan, the dashboard and one page, shared by this module's tests (run once, by the first)."""

    def __init__(self, work: Path, fb, browser) -> None:
        self.session = Session(work, fb, N_VOLUMES, TRIALS, idle_timeout=2.0, target_stim=fb.sb.stim_ids[6])
        self.browser = browser
        self.done = False
        self.page = self.dash = self.watcher = None

    def run(self) -> Replay:
        if self.done:
            return self
        s = self.session
        s.start_serve()
        self.watcher = Watcher(s.pub, s.pull)
        self.watcher.start()
        assert self.watcher.ready.wait(30), f"no heartbeat from serve: {s.serve.log()[-2000:]}"
        args = ["--runs", str(s.runs), "--stimuli", str(s.fb.stimuli), "--fd-threshold", str(FD_THRESHOLD)]
        self.dash = DashboardProcess(s.pub, *args, workdir=s.work).start()
        page = self.page = self.browser.page(self.dash.url)
        wait(page, "document.body.dataset.run === 'session-01' && document.body.dataset.service === 'live'")
        emu = s.replay(faults=("corrupt",), fault_rate=0.1, seed=_corrupt_seed(s))
        frames = self.watcher.topic
        for k in (3, 8, 14):  # the page follows the stream as it comes, frame by frame
            self.watcher.wait_for(lambda k=k: len(frames("frame")) >= k, 30, f"{k} frames")
            volume = frames("frame")[k - 1].header["volume"]
            wait(
                page,
                f"""() => Number(document.getElementById('plot-fd').dataset.points) >= {k}
                 && Number(document.getElementById('face-volume').dataset.volume) >= {volume}
                 && Number(document.getElementById('c-frames').dataset.value) >= {k}""",
            )
        assert emu.wait(60)
        self.watcher.wait_for(lambda: frames("end"), 30, "the end message")
        wait(page, "document.getElementById('summary').dataset.ended === '1'")
        self.done = True
        return self


@pytest.fixture(scope="module")
def replay(tmp_path_factory, face_bundle, browser):
    r = Replay(tmp_path_factory.mktemp("replay"), face_bundle, browser)
    yield r
    if r.dash is not None:
        r.dash.stop()
    if r.watcher is not None:
        r.watcher.close()
    r.session.close()


def _value(page, count: str) -> str:
    return page.get_attribute(f"#c-{count}", "data-value")


def test_counts_plots_and_faces_follow_the_stream(replay):
    r = replay.run()
    page, w = r.page, r.watcher
    frames, trials, end = w.topic("frame"), w.topic("trial"), w.topic("end")[-1].header
    summary = end["summary"]
    n = len(frames)
    assert end["reason"] == "idle_timeout" and summary["volumes_ok"] == n == N_VOLUMES - 1
    assert _value(page, "frames") == str(n)
    assert _value(page, "ok") == str(summary["volumes_ok"]) and _value(page, "failed") == str(summary["volumes_failed"])
    seen = summary["volumes_ok"] + summary["volumes_failed"] + summary.get("volumes_discarded", 0)
    assert _value(page, "seen") == str(seen)
    volumes = {f.header["volume"] for f in frames}
    assert _value(page, "missing") == str(max(volumes) + 1 - len(volumes)) == "1"
    for plot in ("plot-translation", "plot-rotation", "plot-fd", "plot-latency", "plot-feedback"):
        assert page.get_attribute(f"#{plot}", "data-points") == str(n), plot
    above = sum(f.header["fd"] > FD_THRESHOLD for f in frames)
    assert page.get_attribute("#plot-fd", "data-marks") == str(above) == _value(page, "fd_above")
    # the newest face is the last frame's image, pixel for pixel
    last = frames[-1]
    assert page.get_attribute("#face-volume", "data-volume") == str(last.header["volume"])
    assert page.get_attribute("#face-volume", "data-seq") == str(last.header["seq"])
    assert (data_url_image(page.get_attribute("#face-volume", "src")) == last.image()).all()
    assert page.get_attribute("#film", "data-count") == str(min(8, n))
    # every trial, its decoded face and its stimulus beside it
    assert _value(page, "trials") == str(len(trials)) == str(len(TRIALS))
    assert page.get_attribute("#trials", "data-count") == str(len(trials))
    newest = page.locator("#trials figure.trial").first.locator("img")
    assert (data_url_image(newest.nth(0).get_attribute("src")) == trials[-1].image()).all()
    stim_id = trials[-1].header["stim_id"]
    assert newest.nth(1).get_attribute("src") == f"/stimulus/{stim_id}"
    wait(page, "() => document.getElementById('face-stimulus').naturalWidth === 48")
    wait(page, "() => document.getElementById('face-target').naturalWidth === 48")
    assert r.session.fb.sb.stim_ids[6] in page.text_content("#face-target-caption")
    # the neurofeedback value of every frame
    fbs = page_state(page, "state.points.map(p => p.fb)")
    assert fbs == [f.header["feedback"]["value"] for f in frames]
    assert not page.errors, page.errors


def test_intake_problems_and_flip_acks_come_from_the_run_records(replay):
    r = replay.run()
    page = r.page
    records = read_volumes(r.session.runs / "session-01")
    skipped = [x for x in records if x["status"] == "skipped"]
    assert skipped and any(x["error"].startswith("corrupt") for x in skipped), skipped
    wait(page, f"() => document.getElementById('c-skipped').dataset.value === '{len(skipped)}'")
    kinds = page.locator("#problems li .kind").all_text_contents()
    assert "corrupt" in kinds, kinds
    assert _value(page, "intake-corrupt") == str(sum(x["error"].startswith("corrupt") for x in skipped))
    flips = (r.session.runs / "session-01" / "flips.jsonl").read_text().splitlines()
    assert len(flips) == len(r.watcher.topic("frame"))
    wait(page, f"() => document.getElementById('c-flips').dataset.value === '{len(flips)}'")
    row = page.locator("#latency-table tr", has_text="on screen")
    assert row.locator("td").nth(3).text_content() == str(len(flips))
    assert not page.errors, page.errors


def test_a_screenshot_of_the_page_is_kept(replay, tmp_path):
    r = replay.run()
    page = r.page
    # the run's manifest says "ended" once the service has closed its records
    wait(page, "() => [...document.querySelectorAll('#runs-table td')].some(td => td.textContent === 'ended')")
    out = ROOT / ".readme" / "dashboard.png" if os.environ.get("FMRIFACE_README_SHOTS") == "1" else tmp_path / "d.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(out), full_page=True)
    from PIL import Image

    with Image.open(out) as img:
        assert img.width == 1400 and img.height > 1000
        assert len(np.unique(np.asarray(img.convert("L").resize((64, 64))))) > 20  # not blank


def test_earlier_runs_are_one_click_away(replay):
    r = replay.run()
    page = r.page
    wait(page, "() => document.getElementById('runs-table').dataset.count === '1'")
    link = page.locator("#runs-table a", has_text="session-01")
    link.click()
    wait(page, "() => document.getElementById('run-view').dataset.run === 'session-01'")
    n_ok = sum(x["status"] == "ok" for x in read_volumes(r.session.runs / "session-01"))
    assert page.get_attribute("#run-view", "data-points") == str(n_ok)
    assert page.get_attribute("#rv-fd", "data-points") == str(n_ok)
    assert "corrupt" in page.text_content("#rv-problems")
    assert page.locator("#rv-trials tr").count() == len(TRIALS) + 1
    page.locator("#run-view a", has_text="live").click()
    wait(page, "document.body.dataset.view === 'live'")
    assert not page.errors, page.errors
    detail = json.loads(page.evaluate("fetch('/api/runs/session-01').then(r => r.text())"))
    assert detail["summary"]["volumes_ok"] == n_ok and "config" not in detail
