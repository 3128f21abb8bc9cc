from __future__ import annotations

import pytest

from stimulus.triggers import (
    EmulatedResponses,
    EmulatedTrigger,
    KeyResponses,
    KeyTrigger,
    SerialTrigger,
    TriggerConfig,
    make_trigger,
)


class FakeClock:
    def __init__(self) -> None:
        self.t = 10.0

    def __call__(self) -> float:
        return self.t


def test_emulated_trigger_keeps_an_absolute_schedule():
    clock = FakeClock()
    trig = EmulatedTrigger(tr=2.0, delay=1.0, clock=clock)
    trig.start()
    assert trig.poll() == []
    clock.t = 11.0
    assert trig.poll() == [11.0]
    clock.t = 17.5  # a late poll gets every pulse it missed, at its scheduled time
    assert trig.poll() == [13.0, 15.0, 17.0]


def test_key_trigger_and_responses_filter_keys():
    keys = [("5", 1.0), ("1", 1.2), ("escape", 1.3), ("5", 3.0)]
    assert KeyTrigger("5").poll(keys) == [1.0, 3.0]
    assert KeyResponses(["1", "2"]).poll(keys) == [("1", 1.2)]


def test_serial_trigger_on_a_loopback_port():
    clock = FakeClock()
    trig = SerialTrigger("loop://", byte=b"5", clock=clock)
    trig.start()
    assert trig.poll() == []
    trig.port.write(b"5x5")
    assert trig.poll() == [10.0, 10.0]
    trig.close()


def test_emulated_participant_answers_repeats():
    clock = FakeClock()
    resp = EmulatedResponses("1", seed=0, hit_rate=1.0, rt=(0.4, 0.6), clock=clock, real_keys=["2"])
    resp.on_onset(0, 10.0)
    resp.on_onset(1, 13.0)
    clock.t = 13.3
    assert resp.poll([("2", 13.2)]) == [("2", 13.2)]
    clock.t = 14.0
    ((key, t),) = resp.poll()
    assert key == "1" and 13.4 <= t <= 13.6
    assert resp.poll() == []


def test_trigger_config():
    assert isinstance(make_trigger(TriggerConfig(source="emulated")), EmulatedTrigger)
    assert isinstance(make_trigger(TriggerConfig(source="key", key="t")), KeyTrigger)
    with pytest.raises(ValueError, match="serial_port"):
        TriggerConfig(source="serial")
    with pytest.raises(ValueError, match="key, serial or emulated"):
        TriggerConfig(source="ttl")
