"""The experiment's bad inputs get a named error before the run starts: a corrupt stimulus image, a serial
trigger port that does not exist (both were tracebacks)."""

from __future__ import annotations

import pytest

from stimulus.triggers import SerialTrigger, TriggerError
from stimulus.window import Painter, StimulusError


def test_a_corrupt_stimulus_image_is_named(tmp_path):
    bad = tmp_path / "test_03.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)  # a PNG signature and nothing usable
    painter = object.__new__(Painter)  # the window is never reached: the file is read first
    with pytest.raises(StimulusError, match=r"test_03.png cannot be read"):
        painter.load("x", bad)


def test_a_missing_serial_port_is_named():
    with pytest.raises(TriggerError, match=r"'/dev/ttyNOPE9' cannot be opened"):
        SerialTrigger("/dev/ttyNOPE9")


def test_the_display_counts_frames_it_cannot_draw_and_goes_on():
    from stimulus.messages import DisplayState

    state = DisplayState("frame")
    nan_volume = [b"frame", b'{"schema": 1, "seq": 0, "volume": NaN, "shape": [2, 2, 3], "dtype": "uint8"}', bytes(12)]
    inf_volume = [
        b"frame",
        b'{"schema": 1, "seq": 1, "volume": Infinity, "shape": [2, 2, 3], "dtype": "uint8"}',
        bytes(12),
    ]
    too_wide = [b"frame", b'{"schema": 1, "seq": 2, "shape": [1, 1000000, 3], "dtype": "uint8"}', bytes(3_000_000)]
    good = [b"frame", b'{"schema": 1, "seq": 3, "volume": 4, "shape": [2, 2, 3], "dtype": "uint8"}', bytes(12)]
    assert [state.ingest(m, 0.0) for m in (nan_volume, inf_volume, too_wide, good)] == [False, False, False, True]
    assert state.counts["malformed"] == 3 and state.pending.header["volume"] == 4
