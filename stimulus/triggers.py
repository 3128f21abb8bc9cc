"""Scanner triggers and button responses: from the keyboard, a serial port, or emulated for practice and tests.

Every source is polled once per frame with the keys pressed since the last poll (``[(name, time)]`` in the
clock of the run) and returns what happened since: trigger times, or ``(key, time)`` responses. The emulated
sources play the scanner and a participant, as PsychoPy's ``launchScan`` sync generator and response emulator
do, so a whole run can be practised, tested and benchmarked with no hardware.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "TriggerConfig",
    "EmulatedTrigger",
    "KeyTrigger",
    "SerialTrigger",
    "TriggerError",
    "make_trigger",
    "KeyResponses",
    "EmulatedResponses",
]

Keys = Sequence[tuple[str, float]]


@dataclass(frozen=True)
class TriggerConfig:
    """Where the scanner trigger comes from.

    ``source``: ``key`` (a key such as ``5`` or ``t``, as most trigger boxes send), ``serial`` (a byte on a
    serial port, pyserial) or ``emulated`` (pulses every ``tr`` seconds, the first ``delay`` seconds after the
    run starts waiting).
    """

    source: str = "key"
    key: str = "5"
    serial_port: str = ""
    serial_baudrate: int = 115200
    serial_byte: str = "5"
    tr: float = 2.0
    delay: float = 1.0

    def __post_init__(self) -> None:
        if self.source not in ("key", "serial", "emulated"):
            raise ValueError(f"trigger.source must be key, serial or emulated, got {self.source!r}")
        if self.source == "serial" and not self.serial_port:
            raise ValueError("trigger.source = 'serial' needs trigger.serial_port (e.g. /dev/ttyUSB0 or COM3)")
        if self.tr <= 0 or self.delay < 0:
            raise ValueError(f"trigger.tr must be > 0 and trigger.delay >= 0, got {self.tr} and {self.delay}")
        if len(self.serial_byte.encode("latin-1")) != 1:
            raise ValueError(f"trigger.serial_byte must be one character, got {self.serial_byte!r}")


class EmulatedTrigger:
    """Scanner pulses at ``t0 + delay + k * tr`` on an absolute schedule (``t0`` = :meth:`start`)."""

    def __init__(self, tr: float, delay: float = 1.0, clock: Callable[[], float] = time.perf_counter) -> None:
        self.tr, self.delay, self.clock = tr, delay, clock
        self._first: float | None = None
        self._k = 0

    def start(self) -> None:
        """Set the schedule's origin now: the first pulse comes ``delay`` seconds later."""
        self._first = self.clock() + self.delay
        self._k = 0

    def poll(self, keys: Keys = ()) -> list[float]:
        """The pulse times due since the last poll (starting the schedule on the first call if needed)."""
        if self._first is None:
            self.start()
        now, out = self.clock(), []
        while self._first + self._k * self.tr <= now:  # type: ignore[operator]
            out.append(self._first + self._k * self.tr)  # type: ignore[operator]
            self._k += 1
        return out

    def close(self) -> None:
        """Nothing to release."""
        pass


class KeyTrigger:
    """The trigger arrives as a key press (times as the window's key events report them)."""

    def __init__(self, key: str) -> None:
        self.key = key

    def start(self) -> None:
        """Nothing to prepare: trigger keys arrive with the window's key events."""
        pass

    def poll(self, keys: Keys = ()) -> list[float]:
        """The times of the trigger key among ``keys``."""
        return [t for k, t in keys if k == self.key]

    def close(self) -> None:
        """Nothing to release."""
        pass


class TriggerError(RuntimeError):
    """A trigger source that cannot be used (a serial port that is missing, busy or not allowed)."""

    user_error = True


class SerialTrigger:
    """The trigger arrives as a byte on a serial port, timed when read (poll once per frame).

    ``port`` may be any pyserial URL (``/dev/ttyUSB0``, ``COM3``, ``loop://`` for tests).
    """

    def __init__(
        self, port: str, baudrate: int = 115200, byte: bytes = b"5", clock: Callable[[], float] = time.perf_counter
    ) -> None:
        try:
            import serial
        except ImportError:  # pragma: no cover - pyserial ships with the stimulus install
            raise ImportError("the serial trigger needs pyserial: pip install pyserial") from None
        self.byte, self.clock = byte, clock
        try:
            self.port = serial.serial_for_url(port, baudrate=baudrate, timeout=0)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise TriggerError(f"trigger serial port {port!r} cannot be opened: {exc}") from None

    def start(self) -> None:
        """Discard bytes that arrived before the run started waiting."""
        self.port.reset_input_buffer()

    def poll(self, keys: Keys = ()) -> list[float]:
        """One time (now) per trigger byte read since the last poll."""
        waiting = self.port.in_waiting
        if not waiting:
            return []
        now = self.clock()
        data = self.port.read(waiting)
        return [now] * data.count(self.byte)

    def close(self) -> None:
        """Close the serial port."""
        self.port.close()


def make_trigger(cfg: TriggerConfig, clock: Callable[[], float] = time.perf_counter) -> Any:
    """The trigger source a config asks for."""
    if cfg.source == "emulated":
        return EmulatedTrigger(cfg.tr, cfg.delay, clock)
    if cfg.source == "serial":
        return SerialTrigger(cfg.serial_port, cfg.serial_baudrate, cfg.serial_byte.encode("latin-1"), clock)
    return KeyTrigger(cfg.key)


class KeyResponses:
    """Button-box responses that arrive as key presses (most button boxes emulate a keyboard)."""

    def __init__(self, keys: Sequence[str]) -> None:
        self.keys = tuple(keys)

    def on_onset(self, oneback: int, onset: float) -> None:
        """Nothing to do: a real participant responds on their own."""
        pass

    def poll(self, keys: Keys = ()) -> list[tuple[str, float]]:
        """The ``(key, time)`` presses of response keys among ``keys``."""
        return [(k, t) for k, t in keys if k in self.keys]


class EmulatedResponses:
    """A seeded participant who presses ``key`` on one-back repeats with probability ``hit_rate``,
    ``rt`` seconds (uniform in a range) after the onset; real key presses are passed through as well."""

    def __init__(
        self,
        key: str,
        seed: int = 0,
        hit_rate: float = 0.9,
        rt: tuple[float, float] = (0.4, 0.8),
        clock: Callable[[], float] = time.perf_counter,
        real_keys: Sequence[str] = (),
    ) -> None:
        self.key, self.hit_rate, self.rt, self.clock = key, hit_rate, rt, clock
        self.rng = np.random.default_rng(seed)
        self.real = KeyResponses(real_keys)
        self._due: list[float] = []

    def on_onset(self, oneback: int, onset: float) -> None:
        """Schedule a press after a one-back repeat's onset, with probability ``hit_rate``."""
        if oneback and self.rng.random() < self.hit_rate:
            self._due.append(onset + float(self.rng.uniform(*self.rt)))

    def poll(self, keys: Keys = ()) -> list[tuple[str, float]]:
        """The emulated presses now due, followed by the real response keys among ``keys``."""
        now = self.clock()
        out = [(self.key, t) for t in self._due if t <= now]
        self._due = [t for t in self._due if t > now]
        return out + self.real.poll(keys)
