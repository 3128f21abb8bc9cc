"""Rate-limited logging: one line per kind per interval, and a count of the lines held back.

A peer or a folder can produce the same problem thousands of times a second (10,000 malformed messages, a folder of
files that are not DICOM); logging each would bury the log and cost the live path time. :class:`RateLimitedLog`
lets the first line of each *kind* through, holds back the others of that kind for ``interval_s`` seconds, and says
how many it held back: on the next line of that kind that goes out, or from :meth:`RateLimitedLog.flush`, which
the owner calls from its loop (a held-back count is never lost, only delayed). Kinds are the caller's words
(``"corrupt"``, ``"malformed event"``); each has its own interval. Thread-safe; imports nothing of the project,
so every room may use it.

Examples
--------
>>> import logging
>>> lines = RateLimitedLog(logging.getLogger("service.intake"), interval_s=10.0)
>>> lines.log(logging.WARNING, "corrupt", "%s: corrupt: %s", "f1.dcm", "truncated")  # goes out
True
>>> lines.log(logging.WARNING, "corrupt", "%s: corrupt: %s", "f2.dcm", "truncated")  # held back, counted
False
>>> lines.held("corrupt")
1
>>> lines.flush(force=True)  # "corrupt: 1 more line like it held back in the last 0.0 s (the last: f2.dcm: ...)"
1
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["RateLimitedLog"]


@dataclass
class _Kind:
    """One kind's window: when its last line went out, and what was held back since."""

    t_out: float
    held: int = 0
    level: int = logging.INFO
    last: str = ""  # the last held-back line, formatted (named in the summary)


class RateLimitedLog:
    """A logger's lines, at most one per kind per ``interval_s``, with counts of the lines held back.

    Parameters
    ----------
    logger : logging.Logger
        Where the lines go (the caller's own logger, so the line keeps its name).
    interval_s : float
        After a line of a kind goes out, further lines of that kind are held back (counted) for this long.
        0 lets every line through.
    clock : callable
        Seconds, monotonic (``time.monotonic``; tests pass their own).

    Attributes
    ----------
    totals : dict of str to int
        Every line asked for, by kind, whether it went out or not (for a run's summary).
    """

    def __init__(
        self, logger: logging.Logger, interval_s: float = 10.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if interval_s < 0:
            raise ValueError(f"interval_s must be >= 0, not {interval_s!r}")
        self.logger = logger
        self.interval_s = float(interval_s)
        self.clock = clock
        self.totals: dict[str, int] = {}
        self._kinds: dict[str, _Kind] = {}
        self._lock = threading.Lock()

    def log(self, level: int, kind: str, msg: str, *args: object) -> bool:
        """Log ``msg % args`` at ``level`` unless a line of ``kind`` went out less than ``interval_s`` ago.

        Returns True when the line went out (followed, when lines of its kind were held back, by how many), False
        when it was held back and counted. ``msg`` and ``args`` are as for :meth:`logging.Logger.log`; a held-back
        line is formatted only to be named in the summary, and only when the logger would emit it.
        """
        now = self.clock()
        with self._lock:
            self.totals[kind] = self.totals.get(kind, 0) + 1
            state = self._kinds.get(kind)
            if state is not None and now - state.t_out < self.interval_s:
                state.held += 1
                state.level = max(state.level, level)
                if self.logger.isEnabledFor(level):
                    state.last = msg % args if args else msg
                return False
            held, since = (state.held, now - state.t_out) if state is not None else (0, 0.0)
            self._kinds[kind] = _Kind(t_out=now, level=level)
        if held:
            more = (held, kind, "s" if held > 1 else "", since)
            self.logger.log(level, msg + " (and %d more %s line%s in the last %.1f s)", *args, *more)
        else:
            self.logger.log(level, msg, *args)
        return True

    def held(self, kind: str) -> int:
        """How many lines of ``kind`` are held back now (not yet told)."""
        with self._lock:
            state = self._kinds.get(kind)
            return 0 if state is None else state.held

    def flush(self, force: bool = False) -> int:
        """Tell the counts held back: one line per kind whose interval has passed (every kind when ``force``, as
        at the end of a run). Returns the number of lines held back that were told. Call it from the owner's loop
        (cheap when there is nothing to tell) and once when it stops."""
        now = self.clock()
        told: list[tuple[str, _Kind, float]] = []
        with self._lock:
            for kind, state in self._kinds.items():
                if state.held and (force or now - state.t_out >= self.interval_s):
                    copy = _Kind(t_out=state.t_out, held=state.held, level=state.level, last=state.last)
                    told.append((kind, copy, now - state.t_out))
                    state.held, state.last, state.t_out = 0, "", now
        for kind, state, since in told:
            plural = "s" if state.held > 1 else ""
            last = f" (the last: {state.last})" if state.last else ""
            self.logger.log(
                state.level,
                "%s: %d more line%s like it held back in the last %.1f s%s",
                kind,
                state.held,
                plural,
                since,
                last,
            )
        return sum(state.held for _, state, _ in told)
