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
