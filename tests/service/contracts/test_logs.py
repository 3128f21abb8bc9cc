"""service.logs.RateLimitedLog: one line per kind per interval, and the count of those held back, never lost."""

from __future__ import annotations

import logging

import pytest

from service.logs import RateLimitedLog


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_one_line_per_kind_per_interval_with_the_count_held_back(caplog):
    caplog.set_level(logging.INFO, logger="test.logs")
    clock = Clock()
    lines = RateLimitedLog(logging.getLogger("test.logs"), interval_s=10.0, clock=clock)
    assert lines.log(logging.WARNING, "corrupt", "%s: corrupt", "a.dcm")
    assert not lines.log(logging.WARNING, "corrupt", "%s: corrupt", "b.dcm")
    assert not lines.log(logging.INFO, "corrupt", "%s: corrupt", "c.dcm")
    assert lines.log(logging.INFO, "gap", "acquisition 4 never arrived")  # each kind has its own interval
    assert lines.held("corrupt") == 2 and lines.flush() == 0  # nothing told before the interval ends
    clock.now += 10.0
    assert lines.log(logging.WARNING, "corrupt", "%s: corrupt", "d.dcm")
    assert lines.totals == {"corrupt": 4, "gap": 1}
    got = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert got == [
        (logging.WARNING, "a.dcm: corrupt"),
        (logging.INFO, "acquisition 4 never arrived"),
        (logging.WARNING, "d.dcm: corrupt (and 2 more corrupt lines in the last 10.0 s)"),
    ]


def test_flush_tells_what_was_held_back(caplog):
    caplog.set_level(logging.INFO, logger="test.logs")
    clock = Clock()
    lines = RateLimitedLog(logging.getLogger("test.logs"), interval_s=5.0, clock=clock)
    for name in ("a", "b", "c"):
        lines.log(logging.INFO, "ignored", "%s.dcm: not a DICOM file", name)
    clock.now += 6.0
    assert lines.flush() == 2 and lines.flush(force=True) == 0  # told once
    assert caplog.records[-1].getMessage() == (
        "ignored: 2 more lines like it held back in the last 6.0 s (the last: c.dcm: not a DICOM file)"
    )
    lines.log(logging.INFO, "ignored", "%s.dcm: not a DICOM file", "d")  # within the new interval: held
    assert lines.flush(force=True) == 1  # at the end, whatever the interval


def test_interval_zero_lets_every_line_through_and_a_negative_one_is_refused(caplog):
    caplog.set_level(logging.INFO, logger="test.logs")
    lines = RateLimitedLog(logging.getLogger("test.logs"), interval_s=0.0)
    assert all(lines.log(logging.INFO, "k", "line %d", i) for i in range(5))
    assert len(caplog.records) == 5
    with pytest.raises(ValueError, match="interval_s"):
        RateLimitedLog(logging.getLogger("test.logs"), interval_s=-1)
