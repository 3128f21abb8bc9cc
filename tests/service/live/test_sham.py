"""Sham (yoked) neurofeedback: a sham run shows a recorded live run's feedback, latents and faces volume by
volume and trial by trial, records the participant's own values beside them, sends the same messages as a
live run, refuses sources it cannot replay, and honours a blinded allocation; the report shows both runs."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil

import numpy as np
import pytest

from fmriface import cli
from fmriface.benchmarks.synth import make_bundle, make_run
from service import protocol
from service.live.serve import ServeConfig, Service, StartupError
from service.live.sham import SOURCE_FILES, ShamError, SourceRun, read_allocation
from tests.service.harness import make_volume, serve, serve_config

TR = 2.0
N_VOL = 48
# (onset s, stimulus index): stimulus 1 is the target
TRIALS = [(6.0 + 10.0 * k, s) for k, s in enumerate([0, 1, 2, 1])]
OTHER_TRIALS = [(6.0 + 10.0 * k, s) for k, s in enumerate([2, 3, 1, 0])]


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return make_bundle(tmp_path_factory.mktemp("bundle") / "b", n_voxels=80, latent_size=8, image_size=8, tr=TR)


def _cfg(synth, folder, **kw) -> ServeConfig:
    folder.mkdir(parents=True, exist_ok=True)
    base = dict(max_volumes=N_VOL, target_stim=synth.stim_ids[1].split("/")[-1])
    return serve_config(synth.path, folder, **{**base, **kw})


def _onsets(synth, trials) -> list[bytes]:
    return [
        protocol.encode(
            "event",
            protocol.event_header(
                "onset", k, onset=o, duration=1.0, trial_type="face", stim_id=synth.stim_ids[s], trial=k
            ),
        )
        for k, (o, s) in enumerate(trials)
    ]


def _volumes(synth, data, n=None):
    return [make_volume(i, data[i], synth.affine, TR) for i in range(len(data) if n is None else n)]


def _lines(run_dir, name="feedback.jsonl"):
    return [json.loads(x) for x in (run_dir / name).read_text().splitlines()]


@pytest.fixture(scope="module")
def source(synth, tmp_path_factory):
    """A live run of one participant: the source a sham run replays."""
    data = make_run(synth, TRIALS, N_VOL, amplitude=3.0, noise=2.0, drift=25.0, seed=3)
    out = serve(_cfg(synth, tmp_path_factory.mktemp("src")), _volumes(synth, data), inbound=_onsets(synth, TRIALS))
    return out


@pytest.fixture(scope="module")
def other_data(synth):
    """Another participant's brain (other trials, other noise)."""
    return make_run(synth, OTHER_TRIALS, N_VOL, amplitude=3.0, noise=2.0, drift=25.0, seed=11)


@pytest.fixture(scope="module")
def sham_and_own(synth, source, other_data, tmp_path_factory):
    """The other participant served twice: live (their own feedback) and sham (the source's)."""
    own = serve(
        _cfg(synth, tmp_path_factory.mktemp("own")), _volumes(synth, other_data), inbound=_onsets(synth, OTHER_TRIALS)
    )
    cfg = _cfg(synth, tmp_path_factory.mktemp("sham"), sham_source=source.service.run_dir_)
    sham = serve(cfg, _volumes(synth, other_data), inbound=_onsets(synth, OTHER_TRIALS))
    return sham, own


def test_a_sham_run_replays_the_source_feedback_exactly_and_records_the_real_values(source, sham_and_own):
    sham, own = sham_and_own
    src_frames = {m.header["volume"]: m for m in source.topic("frame")}
    frames = sham.topic("frame")
    assert [m.header["volume"] for m in frames] == list(range(N_VOL))
    assert any("value" in m.header["feedback"] for m in frames)
    for m in frames:  # value, order, latent and face: the source's, volume by volume
        s = src_frames[m.header["volume"]]
        assert m.header["feedback"] == s.header["feedback"]
        assert m.header["latent"] == s.header["latent"]
        np.testing.assert_array_equal(
            protocol.decode_image(m.header, m.payload), protocol.decode_image(s.header, s.payload)
        )
    assert [t.header["feedback"] for t in sham.topic("trial")] == [t.header["feedback"] for t in source.topic("trial")]
    # the participant's own values are recorded beside what was shown: those of a live run on the same brain
    own_frames = {m.header["volume"]: m.header["feedback"] for m in own.topic("frame")}
    lines = _lines(sham.service.run_dir_)
    for line in (x for x in lines if x["topic"] == "frame"):
        assert line["shown"] == src_frames[line["volume"]].header["feedback"]
        assert line["real"] == own_frames[line["volume"]]
        assert line["source"] == {"source_volume": line["volume"], "held": False}
    own_trials = [t.header["feedback"] for t in own.topic("trial")]
    assert [x["real"] for x in lines if x["topic"] == "trial"] == own_trials
    assert own_trials != [t.header["feedback"] for t in source.topic("trial")]  # so the test can tell them apart
    # latents.npy keeps the participant's own latents (the ones a live run of this brain sent)
    own_latents = np.array([m.header["latent"] for m in own.topic("frame")])
    np.testing.assert_allclose(np.load(sham.service.run_dir_ / "latents.npy"), own_latents, atol=1e-4)
    vols = _lines(sham.service.run_dir_, "volumes.jsonl")
    assert [v["feedback"] for v in vols] == [src_frames[v["volume"]].header["feedback"]["value"] for v in vols]
    assert [v["feedback_real"] for v in vols] == [own_frames[v["volume"]]["value"] for v in vols]


def test_the_display_gets_the_same_messages_from_a_sham_run_as_from_a_live_one(sham_and_own):
    sham, own = sham_and_own
    for topic in ("frame", "trial", "status", "end"):
        a, b = sham.topic(topic), own.topic(topic)
        assert (len(a) > 0) and (topic == "status" or len(a) == len(b)), topic
        keys_a = {tuple(sorted(m.header)) for m in a}
        keys_b = {tuple(sorted(m.header)) for m in b}
        assert keys_a == keys_b, topic
    for a, b in zip(sham.topic("frame"), own.topic("frame")):
        assert sorted(a.header["feedback"]) == sorted(b.header["feedback"])
        assert len(a.payload) == len(b.payload)
        assert a.header["seq"] == b.header["seq"] and a.header["motion"] == b.header["motion"]
    # the operator's view (status) marks the open-label sham run; the live one says live
    assert {m.header["condition"] for m in sham.topic("status")} == {"sham"}
    assert {m.header["condition"] for m in own.topic("status")} == {"live"}


def test_the_sham_run_record_keeps_the_source_and_its_hash(source, sham_and_own):
    sham, _ = sham_and_own
    manifest = json.loads((sham.service.run_dir_ / "manifest.json").read_text())
    control = manifest["control"]
    src_dir = source.service.run_dir_
    h = hashlib.sha256()
    for name in SOURCE_FILES:
        h.update(name.encode() + b"\0" + (src_dir / name).read_bytes())
    assert control["condition"] == "sham" and control["assigned_by"] == "config"
    assert control["source"]["sha256"] == h.hexdigest() == SourceRun(src_dir).sha256
    assert control["source"]["run_id"] == src_dir.name
    assert control["held"] == {"held_frames": 0, "held_trials": 0}
    assert manifest["summary"]["condition"] == "sham"


def test_a_source_of_another_tr_or_too_short_for_a_known_length_is_refused(synth, source, tmp_path):
    src = source.service.run_dir_
    with pytest.raises(StartupError, match=r"ran at TR 2 s and this run at 1\.5 s"):
        Service(_cfg(synth, tmp_path / "a", sham_source=src, tr=1.5)).start()
    with pytest.raises(StartupError, match=rf"set to {N_VOL + 5} volumes .* has {N_VOL}"):
        Service(_cfg(synth, tmp_path / "b", sham_source=src, max_volumes=N_VOL + 5)).start()
    events = tmp_path / "events.tsv"
    rows = "".join(f"{6 + 10 * k}\t1\tface\t{synth.stim_ids[0]}\n" for k in range(6))
    events.write_text("onset\tduration\ttrial_type\tstim_file\n" + rows)
    with pytest.raises(StartupError, match="6 trials to decode but sham source .* published 4"):
        Service(_cfg(synth, tmp_path / "c", sham_source=src, events=events)).start()
    assert not (tmp_path / "a" / "runs").exists() or not any((tmp_path / "a" / "runs").iterdir())


def test_a_run_longer_than_its_source_holds_the_source_last_frame_and_says_so(synth, source, other_data, tmp_path):
    # the source is cut to its first 30 volumes (a copy of its folder with the later records dropped)
    src = tmp_path / "short-src"
    shutil.copytree(source.service.run_dir_, src)
    lines = [x for x in _lines(src) if x["topic"] == "frame" and x["volume"] < 30 or x["topic"] == "trial"]
    (src / "feedback.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    cfg = _cfg(synth, tmp_path / "s", sham_source=src, max_volumes=0, idle_timeout=0.5)
    out = serve(cfg, _volumes(synth, other_data, 36), inbound=_onsets(synth, OTHER_TRIALS[:2]))
    last = {m.header["volume"]: m for m in source.topic("frame")}[29].header["feedback"]
    frames = out.topic("frame")
    assert len(frames) == 36
    assert all(m.header["feedback"] == last for m in frames[30:])
    recorded = [x for x in _lines(out.service.run_dir_) if x["topic"] == "frame"]
    assert [x["source"] for x in recorded[30:]] == [{"source_volume": 29, "held": True}] * 6
    assert out.summary["sham"] == {"held_frames": 6, "held_trials": 0}


def test_sources_that_cannot_be_replayed_are_refused_with_the_reason(synth, source, sham_and_own, tmp_path):
    sham, _ = sham_and_own
    with pytest.raises(ShamError, match="was itself a sham run"):
        SourceRun(sham.service.run_dir_)
    old = tmp_path / "old"
    shutil.copytree(source.service.run_dir_, old)
    (old / "feedback.jsonl").unlink()
    with pytest.raises(ShamError, match="has no feedback.jsonl"):
        SourceRun(old)
    running = tmp_path / "running"
    shutil.copytree(source.service.run_dir_, running)
    m = json.loads((running / "manifest.json").read_text())
    (running / "manifest.json").write_text(json.dumps({**m, "state": "running"}))
    with pytest.raises(ShamError, match="is 'running', not a finished run"):
        SourceRun(running)
    with pytest.raises(ShamError, match="is not a run folder"):
        SourceRun(tmp_path)
    bad = tmp_path / "bad"
    shutil.copytree(source.service.run_dir_, bad)
    text = (bad / "feedback.jsonl").read_text().splitlines()
    text[3] = '{"topic": "frame", "volume": 3, "latent_row": 999, "shown": {}}'
    (bad / "feedback.jsonl").write_text("\n".join(text) + "\n")
    with pytest.raises(ShamError, match=r"feedback.jsonl line 4: latent_row 999 is not a row"):
        SourceRun(bad)


def test_a_blinded_allocation_is_honoured_recorded_and_not_shown(synth, source, other_data, tmp_path):
    alloc = tmp_path / "sealed" / "allocation.tsv"
    alloc.parent.mkdir()
    src_rel = os.path.relpath(source.service.run_dir_, alloc.parent)  # relative to the allocation file
    alloc.write_text(f"participant_id\tcondition\tsource_run\nsub-01\tlive\tn/a\nsub-02\tsham\t{src_rel}\n")
    digest = hashlib.sha256(alloc.read_bytes()).hexdigest()
    cfg = _cfg(synth, tmp_path / "s2", allocation=alloc, participant="sub-02")
    out = serve(cfg, _volumes(synth, other_data), inbound=_onsets(synth, OTHER_TRIALS))
    src_frames = {m.header["volume"]: m.header["feedback"] for m in source.topic("frame")}
    assert all(m.header["feedback"] == src_frames[m.header["volume"]] for m in out.topic("frame"))
    assert {m.header["condition"] for m in out.topic("status")} == {"blinded"}
    assert out.topic("end")[0].header["summary"]["condition"] == "blinded"
    assert "sham" not in out.topic("end")[0].header["summary"]
    control = json.loads((out.service.run_dir_ / "manifest.json").read_text())["control"]
    assert control["condition"] == "sham" and control["assigned_by"] == "allocation"
    assert control["allocation"] == {"file_sha256": digest, "participant": "sub-02", "condition": "sham"}
    assert control["source"]["sha256"] == SourceRun(source.service.run_dir_).sha256
    live = serve(
        _cfg(synth, tmp_path / "s1", allocation=alloc, participant="sub-01", max_volumes=12),
        _volumes(synth, other_data, 12),
    )
    assert {m.header["condition"] for m in live.topic("status")} == {"blinded"}
    assert json.loads((live.service.run_dir_ / "manifest.json").read_text())["control"]["condition"] == "live"
    assert "real" not in _lines(live.service.run_dir_)[0]


def test_bad_allocation_files_name_the_file_and_the_problem(tmp_path):
    path = tmp_path / "allocation.tsv"
    with pytest.raises(ShamError, match="allocation file .* cannot be read"):
        read_allocation(path, "sub-01")
    path.write_text("participant\tgroup\nsub-01\tsham\n")
    with pytest.raises(ShamError, match="needs the columns participant_id, condition"):
        read_allocation(path, "sub-01")
    path.write_text("participant_id\tcondition\tsource_run\nsub-01\tplacebo\tx\nsub-02\tsham\tn/a\nsub-03\tlive\t\n")
    with pytest.raises(ShamError, match="line 2: condition 'placebo' is not live or sham"):
        read_allocation(path, "sub-01")
    with pytest.raises(ShamError, match="line 3: a sham participant needs a source_run"):
        read_allocation(path, "sub-02")
    with pytest.raises(ShamError, match="'sub-09' is not in allocation file"):
        read_allocation(path, "sub-09")
    assert read_allocation(path, "sub-03").condition == "live"
    path.write_text("participant_id\tcondition\tsource_run\nsub-01\tlive\t\nsub-01\tsham\tr\n")
    with pytest.raises(ShamError, match="2 rows in allocation file .* lines 2, 3"):
        read_allocation(path, "sub-01")
    with pytest.raises(ValueError, match="allocation needs participant"):
        ServeConfig(allocation=path)


def test_the_report_shows_a_live_and_a_sham_run_side_by_side(source, sham_and_own, capsys):
    sham, _ = sham_and_own
    runs = [str(source.service.run_dir_), str(sham.service.run_dir_)]
    assert cli.main(["report", *runs, "--json"]) == 0
    live_r, sham_r = json.loads(capsys.readouterr().out)["runs"]
    assert live_r["control"]["condition"] == "live" and sham_r["control"]["condition"] == "sham"
    assert sham_r["control"]["source"]["run_id"] == source.service.run_dir_.name
    assert live_r["volumes"]["ok"] == sham_r["volumes"]["ok"] == N_VOL
    assert live_r["latency_ms"]["file_to_sent"]["p50"] > 0
    # the sham run showed the source's values: the same mean as the source's own
    assert sham_r["feedback_values"]["shown_mean"] == live_r["feedback_values"]["shown_mean"]
    assert "real_mean" in sham_r["feedback_values"] and "real_mean" not in live_r["feedback_values"]
    assert sham_r["software"]["fmriface"] and sham_r["bundle"]["manifest_sha256"]
    assert sham_r["motion"]["fd_max_mm"] is not None
    assert cli.main(["report", *runs]) == 0
    text = capsys.readouterr().out
    assert f"| | {source.service.run_dir_.name} | {sham.service.run_dir_.name} |" in text
    assert "| control condition | live | sham; source run" in text
    assert "Pearson correlation between the decoded latent and the target" in text
    assert (sham.service.run_dir_ / "report.md").read_text().startswith(f"# Run {sham.service.run_dir_.name}")


def test_report_names_a_folder_that_is_not_a_run_and_a_damaged_record(source, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FMRIFACE_RAISE", "0")  # as a user runs it: one line on stderr, exit status 1
    assert cli.main(["report", str(tmp_path)]) == 1
    assert f"{tmp_path} is not a run folder (no manifest.json)" in capsys.readouterr().err
    assert cli.main(["report", str(source.service.run_dir_), "--fd-threshold", "nan"]) == 1
    assert "--fd-threshold must be a positive number" in capsys.readouterr().err
    run = tmp_path / "copy"
    shutil.copytree(source.service.run_dir_, run)
    with open(run / "volumes.jsonl", "a", encoding="utf-8") as f:
        f.write('{"volume": 99, "sta')  # a crash's torn last line: the report still reads the run
    assert cli.main(["report", str(run), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["runs"][0]["volumes"]["ok"] == N_VOL
    lines = (run / "volumes.jsonl").read_text().splitlines()
    (run / "volumes.jsonl").write_text("\n".join([lines[0], "not json", *lines[1:]]) + "\n")
    assert cli.main(["report", str(run)]) == 1
    assert f"{run / 'volumes.jsonl'} line 2 is not JSON" in capsys.readouterr().err


def test_a_frame_only_source_withholds_the_trials_and_a_resumed_sham_run_keeps_its_counts(
    synth, source, other_data, tmp_path
):
    src = tmp_path / "frames-only"
    shutil.copytree(source.service.run_dir_, src)
    frames_only = [x for x in _lines(src) if x["topic"] == "frame" and x["volume"] < 40]
    (src / "feedback.jsonl").write_text("".join(json.dumps(x) + "\n" for x in frames_only))
    runs = tmp_path / "runs"
    # first part: 44 volumes then a stop (as a crash or SIGTERM), volumes 40-43 held at the source's 39
    cfg = _cfg(synth, tmp_path / "a", sham_source=src, max_volumes=0, runs=runs, run_id="sham-resume")
    first = serve(cfg, _volumes(synth, other_data, 44), inbound=_onsets(synth, OTHER_TRIALS), stop_after=True)
    assert first.topic("trial") == []  # the source's display got no trial message, nor does this one
    withheld = [x for x in _lines(first.service.run_dir_) if x["topic"] == "trial"]
    assert withheld and all(x["shown"] is None and x["source"]["withheld"] and x["real"] for x in withheld)
    with open(first.service.run_dir_ / "trials.tsv", encoding="utf-8") as f:
        seqs = [row["seq"] for row in csv.DictReader(f, delimiter="\t")]
    assert seqs == ["n/a"] * len(withheld)  # recorded, never sent
    # resumed with the same run id: the counts go on from the records
    vols = _volumes(synth, other_data, N_VOL)[44:]
    cfg2 = _cfg(
        synth, tmp_path / "a", sham_source=src, max_volumes=0, idle_timeout=0.5, runs=runs, run_id="sham-resume"
    )
    second = serve(cfg2, vols)
    assert [m.header["volume"] for m in second.topic("frame")] == list(range(44, N_VOL))
    assert second.summary["sham"]["held_frames"] == N_VOL - 40  # 4 before the restart, 4 after
    manifest = json.loads((second.service.run_dir_ / "manifest.json").read_text())
    assert manifest["control"]["held"]["held_frames"] == N_VOL - 40
