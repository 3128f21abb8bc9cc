"""Where the service's messages go: the :class:`Output` interface and :class:`Outputs`, the fan-out over several.

The service sends five things: a ``frame`` per volume, a ``trial`` per decoded trial, a ``status`` heartbeat, the
``qa`` maps every few volumes (the mean EPI with the mask outlined and the tSNR, :mod:`service.qa.maps`) and the
``end`` of the run. An output is any object with one method for each (and ``close``); ``qa`` is optional: an
output without it (one written before it existed) gets everything else. The ZeroMQ
:class:`service.live.publisher.Publisher` is the first, and the one the wire protocol describes. Another output
(a Lab Streaming Layer outlet, a recorder) is one more object in the list that :class:`Outputs` fans out to.

The first output of an :class:`Outputs` is the primary: it assigns the ``seq`` of frames and trials (and stamps
``t.sent``) in the header before any other output sees it, so every output receives the very header the
subscribers receive (less the ``schema`` field the wire encoding adds). Headers are shared, not copied: an
output reads them and never changes them.

The error policy: an exception from the primary propagates (the pipeline records the volume or trial as
failed, as it always has); an exception from any other output is logged, counted in :attr:`Outputs.failures`
and the live path goes on, so a broken extra output never costs a frame on the wire (``FMRIFACE_RAISE=1`` re-raises
it, as the tests set). Every output is called on the worker thread, in order, so an output must not block: one
that may (a disk, a network peer) should hand the message to a thread of its own.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol, runtime_checkable

import numpy as np

from service.live.policy import raise_errors
from service.protocol import SeqCounter

__all__ = ["Output", "QAOutput", "PrimaryOutput", "Outputs"]

log = logging.getLogger("service.live.outputs")


@runtime_checkable
class Output(Protocol):
    """Something the service's messages go to: one method per message the service sends.

    ``header`` is the message's JSON header (see docs/protocol.md), ``image`` a face as ``uint8 [H, W, 3]``.
    ``frame`` and ``trial`` return the message's ``seq`` when this output assigns it (the primary), else None.
    """

    def frame(self, header: dict[str, Any], image: np.ndarray) -> int | None:
        """One volume's decoded face."""
        ...

    def trial(self, header: dict[str, Any], image: np.ndarray) -> int | None:
        """One trial's decoded face."""
        ...

    def status(self, header: dict[str, Any]) -> None:
        """The heartbeat: the run's state."""
        ...

    def end(self, header: dict[str, Any]) -> None:
        """The run ended: its reason and summary. Nothing is sent after it."""
        ...

    def close(self) -> None:
        """Let go of what the output holds (sockets, files); called once, after ``end``."""
        ...


class QAOutput(Output, Protocol):
    """An output that also takes the QA maps (optional: :class:`Outputs` calls ``qa`` where an output has it)."""

    def qa(self, header: dict[str, Any], image: np.ndarray) -> None:
        """The QA maps (``uint8 [H, W, 3]``, :func:`service.qa.maps.render_maps`) with their header."""
        ...


class PrimaryOutput(QAOutput, Protocol):
    """The output that numbers the messages: its ``seq`` counters are saved with the run's state and restored on
    resume, and ``counts()`` gives the summary's ``sent`` and ``dropped`` per topic."""

    seq: SeqCounter

    def frame(self, header: dict[str, Any], image: np.ndarray) -> int:
        """One volume's decoded face; its ``seq`` set in ``header`` and returned."""
        ...

    def trial(self, header: dict[str, Any], image: np.ndarray) -> int:
        """One trial's decoded face; its ``seq`` set in ``header`` and returned."""
        ...

    def counts(self) -> dict[str, dict[str, int]]:
        """``{"sent": {topic: n}, "dropped": {topic: n}}``."""
        ...


class Outputs:
    """Fan-out over a primary output and any number of others, in order (see the module's notes).

    Parameters
    ----------
    primary : PrimaryOutput
        Assigns the sequence numbers (the ZeroMQ publisher).
    *others : Output
        Each receives every message after the primary, with the same header.

    Attributes
    ----------
    failures : dict
        Exceptions per output other than the primary, by its position in :attr:`outputs` (0 is the primary).
    """

    def __init__(self, primary: PrimaryOutput, *others: Output) -> None:
        self.primary = primary
        self.outputs: list[Output] = [primary]
        self.failures: dict[int, int] = {}
        for out in others:
            self.add(out)

    def add(self, output: Output) -> None:
        """Send every later message to ``output`` too (after the outputs already there)."""
        if not isinstance(output, Output):
            raise TypeError(f"{type(output).__name__} is not an Output (frame, trial, status, end, close)")
        self.outputs.append(output)

    @property
    def seq(self) -> SeqCounter:
        """The primary's sequence counters (saved in the run's state, advanced on resume)."""
        return self.primary.seq

    def counts(self) -> dict[str, dict[str, int]]:
        """The primary's ``sent`` and ``dropped`` messages per topic."""
        return self.primary.counts()

    def frame(self, header: dict[str, Any], image: np.ndarray) -> int:
        """Send a frame; returns its ``seq`` (the primary's)."""
        seq = self.primary.frame(header, image)
        for k in range(1, len(self.outputs)):
            self._call(k, "frame", header, image)
        return seq

    def trial(self, header: dict[str, Any], image: np.ndarray) -> int:
        """Send a trial; returns its ``seq`` (the primary's)."""
        seq = self.primary.trial(header, image)
        for k in range(1, len(self.outputs)):
            self._call(k, "trial", header, image)
        return seq

    def status(self, header: dict[str, Any]) -> None:
        """Send the heartbeat."""
        self.primary.status(header)
        for k in range(1, len(self.outputs)):
            self._call(k, "status", header)

    def qa(self, header: dict[str, Any], image: np.ndarray) -> None:
        """Send the QA maps (to the primary, then to every other output that has a ``qa`` method)."""
        self.primary.qa(header, image)
        for k in range(1, len(self.outputs)):
            if callable(getattr(self.outputs[k], "qa", None)):
                self._call(k, "qa", header, image)

    def end(self, header: dict[str, Any]) -> None:
        """Send the end of the run."""
        self.primary.end(header)
        for k in range(1, len(self.outputs)):
            self._call(k, "end", header)

    def close(self) -> None:
        """Close the primary (its linger lets the ``end`` message out), then the others."""
        self.primary.close()
        for k in range(1, len(self.outputs)):
            self._call(k, "close")
        if self.failures:
            log.warning("outputs that failed (position: exceptions): %s", self.failures)

    def _call(self, k: int, method: str, *args: Any) -> None:
        try:
            getattr(self.outputs[k], method)(*args)
        except Exception as exc:  # noqa: BLE001 - an extra output never stops the live path
            if raise_errors():
                raise
            n = self.failures[k] = self.failures.get(k, 0) + 1
            if n == 1:  # the first failure with its traceback; the count says how many followed
                log.exception("output %d (%s) failed on %s: %s", k, type(self.outputs[k]).__name__, method, exc)
