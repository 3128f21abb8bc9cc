"""The QA panel: DVARS, global signal and outlier traces with the censored volumes marked, the latest QA maps image
(mean EPI with the mask outlined, tSNR) and the censored counts by reason, in a real Chromium; the state's checks
of QA fields without a browser; a run whose messages carry no QA still renders."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from fmriface.dashboard.state import RunState, StateConfig, prepare, qa_counts, qa_point, record_point
from service import protocol
from service.qa import render_maps
from tests.dashboard.live import DashboardProcess, FakeService, data_url_image, page_state, wait

N = 40
CENSORED = {7: ["spike"], 15: ["slice"], 22: ["outliers", "spike"], 31: ["slice"]}
#: Where the screenshot of the panel goes (the closing note of issue 27 shows it).
SHOT = Path(os.environ.get("FMRIFACE_QA_SHOT", "/work/notes/qa_panel.png"))


def qa_of(v: int, rng: np.random.Generator) -> dict:
    """A frame's ``qa`` as the service sends it (docs/protocol.md), a spike or a slice off at the censored ones."""
    c = v in CENSORED
    reasons = CENSORED.get(v, [])
    std = 1.0 + 0.15 * rng.standard_normal() + (6.0 if "spike" in reasons else 2.0 if "slice" in reasons else 0)
    gs = 1000.0 + 3 * np.sin(v / 6) + 2 * rng.standard_normal() + (45.0 if "spike" in reasons else 0)
    of = abs(0.004 + 0.002 * rng.standard_normal()) + (0.06 if "outliers" in reasons else 0)
    return {
        "censored": c,
        "reasons": reasons,
        "fd": round(0.05 + 0.02 * abs(rng.standard_normal()), 4),
        "dvars": None if v == 0 else round(12.0 * std, 3),
        "std_dvars": None if v == 0 else round(std, 4),
        "global_signal": round(gs, 2),
        "outlier_fraction": round(of, 5),
        "slice_z": round(abs(rng.standard_normal()) + (9.0 if "slice" in reasons else 0), 3),
    }


def brain_maps(volume: int, shape: tuple[int, int, int] = (64, 64, 36)) -> np.ndarray:
    """The QA maps of a synthetic head: an ellipsoid brain with grey and white matter, the mask a little inside
    it, a tSNR that grows with the volumes seen and a dropout in one slab."""
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    r = (x / 0.72) ** 2 + (y / 0.85) ** 2 + (z / 0.8) ** 2
    rng = np.random.default_rng(volume)
    mean = np.where(r <= 1, 600 + 250 * np.cos(6 * np.sqrt(r)) ** 2, 30.0) + 10 * rng.standard_normal(shape)
    mask = r <= 0.92
    tsnr = np.where(r <= 1, (30 + 1.5 * volume) * (1.2 - 0.5 * r), 3.0) + 4 * rng.standard_normal(shape)
    tsnr[:, :, 20:23] *= 0.35  # a slab that drops out
    return render_maps(mean.astype(np.float32), tsnr, mask)


@pytest.fixture
def fake():
    f = FakeService()
    yield f
    f.close()


def test_the_qa_panel_shows_traces_censored_volumes_maps_and_counts(fake, browser, tmp_path):
    rng = np.random.default_rng(5)
    dash = DashboardProcess(fake.address, workdir=tmp_path).start()
    try:
        page = browser.page(dash.url)
        fake.until(page, "document.body.dataset.run === 'fake'")
        assert "no QA counts" in page.text_content("#qa-note")  # nothing yet
        first = brain_maps(9)
        for v in range(N):
            fake.frame(v, qa=qa_of(v, rng), fd=0.05)
            if v == 9:
                fake.send("qa", {"volume": 9, "tsnr_mean": 43.1, "kind": "maps", "slices": [7, 13, 18, 23, 29]}, first)
        by_reason = {"spike": 2, "slice": 2, "outliers": 1}
        fake.status(volumes=N, last_volume=N - 1, qa={"censored": 4, "by_reason": by_reason, "tsnr_mean": 57.64,
                                                      "volumes": N})  # fmt: skip
        wait(page, f"() => document.getElementById('plot-dvars').dataset.points === '{N}'")
        wait(page, "() => document.getElementById('qa-maps').dataset.volume === '9'")
        for plot in ("plot-dvars", "plot-gs", "plot-outliers"):
            assert page.get_attribute(f"#{plot}", "data-points") == str(N)
            assert page.get_attribute(f"#{plot}", "data-vmarks") == str(len(CENSORED)), plot  # censored, marked
            assert page.get_attribute(f"#{plot}", "data-marks") == str(len(CENSORED)), plot
        assert page_state(page, "state.points.filter(p => p.qa && p.qa.c).map(p => p.v)") == sorted(CENSORED)
        assert page_state(page, "state.points[0].qa.sd") is None  # DVARS of the first volume: not defined
        assert np.array_equal(data_url_image(page.get_attribute("#qa-maps", "src")), first)
        caption = page.text_content("#qa-maps-caption")
        assert "volume 9" in caption and "z = 7, 13, 18, 23, 29" in caption and "43.1" in caption
        wait(page, "() => document.querySelector('#qa-counts [data-key=censored] dd').dataset.value === '4'")
        counts = {
            row.get_attribute("data-key"): row.locator("dd").get_attribute("data-value")
            for row in page.locator("#qa-counts .count").all()
        }
        assert counts == {"censored": "4", "reason:spike": "2", "reason:slice": "2", "reason:outliers": "1",
                          "reason:motion": "0", "volumes": str(N), "tsnr": "57.6"}  # fmt: skip
        assert "CENSORED" not in page.text_content("#qa-now")  # the last volume is clean
        assert f"{len(CENSORED)} of {N} shown censored" in page.text_content("#qa-censored-now")
        # the next maps replace the first
        second = brain_maps(19)
        fake.send("qa", {"volume": 19, "tsnr_mean": 57.6, "kind": "maps", "slices": [7, 13, 18, 23, 29]}, second)
        wait(page, "() => document.getElementById('qa-maps').dataset.volume === '19'")
        assert np.array_equal(data_url_image(page.get_attribute("#qa-maps", "src")), second)
        page.wait_for_function("() => document.getElementById('qa-maps').complete")
        SHOT.parent.mkdir(parents=True, exist_ok=True)
        page.locator("#qa-card").screenshot(path=str(SHOT))
        assert not page.errors and page_state(page, "page.errors") == 0, page.errors

        # a run from before QA: no qa anywhere; the panel says so and everything else renders
        fake.run_id = "old"
        fake.seq = fake.protocol.SeqCounter()
        for v in range(5):
            fake.frame(v)
        fake.status(volumes=5)
        wait(page, "() => document.body.dataset.run === 'old'")
        wait(page, "() => document.getElementById('plot-fd').dataset.points === '5'")
        wait(page, "() => document.getElementById('qa-note').textContent.includes('no QA counts')")
        assert page.get_attribute("#plot-dvars", "data-points") == "0"
        assert page.get_attribute("#qa-maps", "data-volume") == ""
        assert page.get_attribute("#qa-counts", "data-count") == "0"
        assert not page.errors and page_state(page, "page.errors") == 0, page.errors
    finally:
        summary = dash.stop()
    assert summary["malformed"] == 0


def test_qa_fields_are_checked_before_use():
    p = qa_point({"censored": True, "reasons": ["spike", 3, "x" * 99], "dvars": 12.5, "std_dvars": "big",
                  "global_signal": 1e3, "outlier_fraction": True, "slice_z": None, "novel": [1]})  # fmt: skip
    assert p == {"c": True, "r": ["spike", "x" * 40], "dv": 12.5, "sd": None, "gs": 1000.0, "of": None, "sz": None}
    assert qa_point("censored") is None and qa_point(None) is None
    assert qa_point({"censored": "yes", "reasons": "spike"})["c"] is False  # only a JSON true censors
    c = qa_counts({"censored": 3, "by_reason": {"spike": 2, "slice": "1", 7: 1}, "tsnr_mean": 61.0, "volumes": 40})
    assert c == {"censored": 3, "by_reason": {"spike": 2}, "tsnr_mean": 61.0, "volumes": 40}
    assert qa_counts([1]) is None


def test_the_state_follows_qa_frames_records_maps_and_status():
    st = RunState(StateConfig(history=20))
    h = {"run_id": "r", "seq": 0, "volume": 0, "fd": 0.1, "qa": {"censored": True, "reasons": ["spike"], "dvars": 9}}
    ev = st.apply({"kind": "frame", "header": h, "received": 1.0, "image": None})
    assert ev[-1][0] == "frame" and ev[-1][1]["p"]["qa"]["c"] is True and st.counts["censored_seen"] == 1
    # the records of the same run: a point with its qa (no frame for volume 1 came)
    st.apply({"kind": "records", "run_id": "r", "volumes": [{"status": "ok", "volume": 1, "qa": {"censored": False}}]})
    assert st.points.points[1]["qa"]["c"] is False and record_point({"volume": 2})["v"] == 2
    assert "qa" not in record_point({"volume": 2})  # an old record: no qa, nothing made up
    # the maps, through prepare as the feed does it
    img = render_maps(np.ones((8, 9, 6)), np.full((8, 9, 6), 20.0), None)
    fields, payload = protocol.encode_image(img)
    header = {"run_id": "r", "seq": 0, "volume": 9, "kind": "maps", "slices": [1, 2, 4], "tsnr_mean": 20.0, **fields}
    item = prepare(protocol.encode("qa", header, payload), 2.0)
    assert item["kind"] == "qa" and item["image"].startswith("data:image/png;base64,")
    ev = st.apply(item)
    assert ev[-1][0] == "qa" and st.qa_maps["v"] == 9 and st.qa_maps["slices"] == [1, 2, 4]
    assert np.array_equal(data_url_image(st.snapshot()["qa_maps"]["img"]), img)
    bad = prepare(protocol.encode("qa", {**header, "seq": 1}, b""), 3.0)
    assert bad["image_error"] and st.apply(bad)[-1][0] == "problem" and st.qa_maps["v"] == 9
    # the status's counts; a status without qa keeps the last (a heartbeat from an old service has none at all)
    ev = st.apply({"kind": "status", "header": {"run_id": "r", "qa": {"censored": 1, "by_reason": {"spike": 1}}}})
    assert ev[-1][1]["qa"]["censored"] == 1 and "qa" not in st.status_extra
    assert st.snapshot()["qa"]["by_reason"] == {"spike": 1}
