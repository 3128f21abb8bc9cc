"""`bench soak`'s report of the signal faults: what the run records say of each faulted acquisition, and, where the
records carry ``qa``, how many of each kind and of the clean volumes were censored."""

from __future__ import annotations

from fmriface.benchmarks.soak import signal_report


def _rec(acq: int, status: str = "ok", qa: dict | None = None, **kw) -> dict:
    rec = {"volume": acq - 1, "acquisition": acq, "file": f"001_000001_{acq:06d}.dcm", "status": status, **kw}
    if qa is not None:
        rec["qa"] = qa
    return rec


def test_signal_faults_are_reported_by_kind_and_outcome():
    records = [_rec(1), _rec(2), _rec(3, "skipped", error="empty: an all-zero volume"), _rec(4)]
    report = signal_report(records, {2: "spike", 3: "zero", 4: "spike"})
    assert report["signal_outcomes"] == {"spike": {"ok": 2}, "zero": {"empty": 1}}
    assert report["signal_censored"] is None  # no qa records yet: nothing to say about censoring


def test_censoring_is_counted_once_the_records_carry_qa():
    no, yes = {"censored": False, "reasons": []}, {"censored": True, "reasons": ["dvars"]}
    records = [_rec(1, qa=no), _rec(2, qa=yes), _rec(3, qa=yes), _rec(4, qa=no), {"file": "001_000001_000005.dcm",
               "status": "ok", "qa": yes}]  # fmt: skip
    report = signal_report(records, {2: "spike", 4: "slice-spike"})
    assert report["signal_censored"] == {"spike": 1, "clean": 2}  # acquisition 5 found by its file name
    assert report["signal_outcomes"] == {"spike": {"ok": 1}, "slice-spike": {"ok": 1}}
