"""The dashboard's bounded state, without a browser: what each message and record does to the counts, the rings'
sizes, the run folder's reading, the per-page queue that drops its oldest events, the hand-off from the feed."""

from __future__ import annotations

import asyncio
import json
import math

import numpy as np
import pytest

from fmriface.dashboard.feed import Handoff
from fmriface.dashboard.runs import Tail, list_runs, run_detail, valid_run_id
from fmriface.dashboard.state import RunState, StateConfig, prepare, scalars
from service import protocol


def frame_item(v: int, seq: int | None = None, run: str = "r1", fd: float = 0.1, **extra) -> dict:
    t = {"file_ready": 100.0, "read": 100.002, "dequeued": 100.003, "motion": 100.006, "decoded": 100.008}
    t["sent"] = 100.009
    h = {"run_id": run, "seq": v if seq is None else seq, "volume": v, "t": t, "motion": [0.1] * 6, "fd": fd}
    h.update(feedback={"value": 0.5}, **extra)
    return {"kind": "frame", "header": h, "received": 100.010, "image": "data:image/png;base64,AA=="}


def events_of(state: RunState, *items) -> list[tuple[str, dict]]:
    out = []
    for item in items:
        out += state.apply(item)
    return out


def test_points_are_bounded_and_counts_follow_frames():
    st = RunState(StateConfig(history=10, fd_threshold=0.5, film=3))
    ev = events_of(st, *(frame_item(v, fd=0.9 if v % 7 == 0 else 0.1) for v in range(50)))
    assert ev[0][0] == "snapshot" and ev[1][0] == "frame"  # a new run: the pages start from its empty state
    assert len(st.points) == 10 and [p["v"] for p in st.points.list()] == list(range(40, 50))
    assert len(st.film) == 3 and st.latest["v"] == 49
    c = st.counts
    assert c["frames"] == 50 and c["volumes_known"] == 50 and c["missing"] == 0 and c["lost"] == 0
    assert c["fd_above"] == 8  # volumes 0, 7, ..., 49: over the whole run, not only the plotted window
    p = st.points.list()[-1]
    assert p["s"] == {"read": 2.0, "queue": 1.0, "motion": 3.0, "decode": 2.0, "send": 1.0, "total": 9.0}
    assert p["wire"] == pytest.approx(1.0) and p["fb"] == 0.5
    json.dumps(st.snapshot(), allow_nan=False)


def test_gaps_lost_frames_restarts_and_a_new_run():
    st = RunState()
    events_of(st, frame_item(0), frame_item(1), frame_item(4, seq=2), frame_item(5, seq=6))
    assert st.counts["missing"] == 2 and st.counts["lost"] == 3
    assert [p["kind"] for p in st.problems] == ["lost"]
    status = {"kind": "status", "received": 1.0}
    events_of(st, {**status, "header": {"run_id": "r1", "uptime_s": 50.0, "volumes": 4, "failed": 2}})
    events_of(st, {**status, "header": {"run_id": "r1", "uptime_s": 0.4, "volumes": 4, "failed": 2, "discarded": 3}})
    assert st.counts["restarts"] == 1 and st.counts["ok"] == 4 and st.counts["discarded"] == 3
    assert st.counts["seen"] == 4 + 2 + 3  # ok + failed + discarded
    ev = events_of(st, frame_item(0, run="r2"))
    assert ev[0][0] == "snapshot" and st.run_id == "r2" and st.counts["frames"] == 1 and len(st.points) == 1


def test_bad_values_are_left_out_and_never_raise():
    st = RunState()
    nasty = [
        {"kind": "frame", "header": {"run_id": "r", "volume": "x", "motion": [1, 2], "fd": math.nan, "t": [1]}},
        {"kind": "frame", "header": {"run_id": "r", "volume": 3, "motion": [math.inf] * 6, "fd": True, "seq": 2.5}},
        {"kind": "trial", "header": {"run_id": "r", "trial": {"a": 1}, "window": "w", "feedback": "hi"}},
        {"kind": "status", "header": {"run_id": "r", "target": {"stim_id": 5}, "volumes": -math.inf}},
        {"kind": "end", "header": {"run_id": "r", "summary": [1, 2], "reason": 3}},
        {"kind": "malformed", "error": "bad JSON"},
        {"kind": "frame", "header": "not a dict"},
        {"kind": "nonsense"},
    ]
    events_of(st, *nasty)
    assert st.counts["frames"] == 2 and st.counts["malformed"] == 1 and st.counts["trials"] == 1
    assert [p["v"] for p in st.points.list()] == [3] and st.points.list()[0]["m"] is None
    json.dumps(st.snapshot(), allow_nan=False)  # nothing non-finite reaches a page
    assert scalars({"a": "x" * 999, "b": {"c": [1, 2]}, "d": [math.nan], 5: 1}, limit=10) == {
        "a": "x" * 200,
        "b.c": [1, 2],
    }


def test_records_fill_in_the_volumes_not_seen_and_count_the_intakes_problems():
    st = RunState()
    events_of(st, frame_item(5), frame_item(6))
    recs = [
        {"status": "discarded", "volume": 0, "motion": [0.0] * 6, "fd": 0.0, "t": {"file_ready": 1, "motion": 1.01}},
        *({"status": "ok", "volume": v, "frame_seq": v, "motion": [0.2] * 6, "fd": 0.1} for v in (1, 2, 4)),
        {"status": "skipped", "volume": None, "acquisition": 4, "error": "corrupt: not a header", "file": "a.dcm"},
        {"status": "skipped", "volume": None, "acquisition": 4, "error": "gap: acquisition 4 never arrived"},
        {"status": "error", "volume": 3, "error": "VolumeError: bad"},
        {"status": "ok", "volume": 7, "frame_seq": 7, "motion": [0.2] * 6, "fd": 0.1},
    ]
    flips = [{"volume": 5, "e2e_s": 0.02, "flip_time": 10.02, "sent": 10.0}, {"volume": 6}]
    assert events_of(st, {"kind": "records", "run_id": "other", "volumes": recs}) == []
    ev = events_of(st, {"kind": "records", "run_id": "r1", "volumes": recs, "flips": flips})
    assert [e[0] for e in ev] == ["snapshot"]  # earlier volumes went in before the page's last: all again
    assert [p["v"] for p in st.points.list()] == [0, 1, 2, 4, 5, 6, 7]
    c = st.counts
    assert c["missing"] == 1 and c["skipped"] == 2 and c["errors"] == 1 and c["flips"] == 2
    assert c["intake"]["corrupt"] == 1 and c["intake"]["gap"] == 1
    assert list(st.flips) == [{"v": 5, "e2e": 20.0, "sf": pytest.approx(20.0)}]
    ev = events_of(st, {"kind": "records", "run_id": "r1", "volumes": [{"status": "ok", "volume": 8, "fd": 0.1}]})
    assert [e[0] for e in ev] == ["points"]  # after the last: appended


def test_prepare_decodes_and_encodes_or_says_why_not():
    img = np.arange(4 * 4 * 3, dtype=np.uint8).reshape(4, 4, 3)
    fields, payload = protocol.encode_image(img)
    ok = prepare(protocol.encode("frame", {"seq": 0, **fields}, payload), 1.0)
    assert ok["kind"] == "frame" and ok["image"].startswith("data:image/png;base64,")
    from tests.dashboard.live import data_url_image

    assert (data_url_image(ok["image"]) == img).all()
    assert prepare(protocol.encode("frame", {"seq": 0, **fields}, payload), 1.0, with_image=False)["image"] is None
    assert prepare(protocol.encode("frame", {"seq": 0}), 1.0)["image_error"] == "no image payload"
    assert prepare(protocol.encode("frame", {"seq": 0}, b"xyz"), 1.0)["image_error"]
    assert prepare([b"frame", b"{", b""], 1.0)["kind"] == "malformed"
    assert prepare([b"nope", b"{}", b""], 1.0)["kind"] == "malformed"
    assert prepare(protocol.encode("status", {"x": 1}), 1.0)["image"] is None


def test_a_pages_queue_drops_its_oldest_and_asks_for_the_whole_state():
    from fmriface.dashboard.server import Client, sse

    async def go():
        c = Client(max_events=4, max_bytes=1 << 20)
        for k in range(10):
            c.put(sse("frame", {"k": k}))
        assert c.resync and c.dropped == 6 and len(c.q) == 4
        assert c.take().count(b"event: frame") == 4 and not c.q
        big = Client(max_events=100, max_bytes=1000)
        for _ in range(5):
            big.put(b"x" * 400)
        assert big.bytes <= 1000 and big.resync

    asyncio.run(go())


def test_the_handoff_is_bounded_and_wakes_the_loop_once_per_batch():
    got: list[tuple[int, int]] = []

    async def go():
        loop = asyncio.get_running_loop()
        h = Handoff(loop, lambda items, dropped: got.append((len(items), dropped)), maxlen=5)
        h.put(list(range(3)))
        h.put(list(range(4)))
        await asyncio.sleep(0)
        await asyncio.sleep(0)

    asyncio.run(go())
    assert got == [(5, 2)]


def test_the_run_folder_is_read_incrementally_and_only_by_name(tmp_path):
    f = tmp_path / "v.jsonl"
    f.write_text('{"a": 1}\n{"b": ')
    t = Tail(f)
    assert t.read() == [{"a": 1}] and t.read() == []
    with open(f, "a") as fh:
        fh.write('2}\nnot json\n{"c": 3}\n')
    assert t.read() == [{"b": 2}, {"c": 3}] and t.bad == 1
    f.write_text('{"new": 1}\n')  # a new file of that name: read from its start
    assert t.read() == [{"new": 1}]
    assert Tail(tmp_path / "missing.jsonl").read() == []

    runs = tmp_path / "runs"
    for name, state in (("run-a", "ended"), ("run-b", "running")):
        (runs / name).mkdir(parents=True)
        m = {"state": state, "summary": {"volumes_ok": 2, "latency_ms": {"p50": 3.0}}, "config": {"watch": "/secret"}}
        (runs / name / "manifest.json").write_text(json.dumps(m))
    lines = [{"status": "ok", "volume": 0, "fd": 0.1}, {"status": "skipped", "error": "late: x"}, {"status": "ok"}]
    (runs / "run-a" / "volumes.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    (runs / "run-a" / "trials.tsv").write_text("trial\tstim_id\tfeedback\n0\ta.png\t0.5\n")
    (runs / "not-a-run").mkdir()
    listed = list_runs(runs)
    assert sorted(r["run_id"] for r in listed) == ["run-a", "run-b"] and "config" not in json.dumps(listed)
    d = run_detail(runs, "run-a")
    assert d["counts"]["ok"] == 1 and d["counts"]["intake"]["late"] == 1 and d["trials"][0]["stim_id"] == "a.png"
    assert "/secret" not in json.dumps(d)
    for bad in ("..", "../runs", "a/b", "", ".hidden", "x" * 300):
        assert not valid_run_id(bad) and run_detail(runs, bad) is None
    assert run_detail(runs, "nope") is None and list_runs(tmp_path / "none") == []


def test_a_bursts_faces_wait_and_only_the_newest_is_sent():
    st = RunState(StateConfig(film=4))
    raw = np.zeros((2, 2, 3), np.uint8)
    events_of(st, frame_item(0))
    for v in (1, 2, 3):
        item = {**frame_item(v), "image": None, "image_raw": raw + v}
        (name, data), *_ = [e for e in st.apply(item) if e[0] == "frame"]
        assert data["img"] is None
    assert st.latest["v"] == 0 and st.pending_face["v"] == 3
    ev = st.flush_face(lambda pixels: f"data:image/png;base64,{int(pixels[0, 0, 0])}")
    assert ev == [("face", {"face": {"v": 3, "q": 3, "img": "data:image/png;base64,3", "fb": 0.5, "sent": 100.009}})]
    assert st.latest["v"] == 3 and [f["v"] for f in st.film] == [0, 3] and st.flush_face(str) == []
    events_of(st, {**frame_item(4), "image": None, "image_raw": raw}, frame_item(5))
    assert st.pending_face is None  # a newer face went out with its frame: nothing held back


def test_the_control_condition_of_a_status_reaches_the_page_and_stays_bounded():
    st = RunState()
    status = {"kind": "status", "received": 1.0}
    ev = events_of(st, {**status, "header": {"run_id": "r1", "volumes": 1, "condition": "sham"}})
    assert st.status["condition"] == "sham" and "condition" not in st.status_extra
    assert ev[-1][1]["status"]["condition"] == "sham"
    events_of(st, {**status, "header": {"run_id": "r1", "volumes": 2, "condition": "x" * 500}})
    assert len(st.status["condition"]) <= 20  # a bad peer's long text is cut, not passed on whole
    events_of(st, {**status, "header": {"run_id": "r1", "volumes": 3}})
    assert st.status["condition"] is None  # an older service sends none: the page hides the pill
