"""The trial window estimate, shared by the offline fit and the live service.

A trial's pattern is the mean of the volumes acquired 4 to 8 s after its onset minus the mean of a pre-onset
baseline (docs/paper.md: the cheap single-trial estimate that suits real time). The offline pipeline computes it
with :func:`window_estimate` on whole preprocessed runs; the service computes the same numbers volume by volume,
asking :class:`TrialWindows` which trials became complete with each new volume and then calling
:func:`window_estimate` (or :func:`estimate_from_indices`) on its buffer.

Timing convention (BIDS): volume ``k`` is stamped ``k * tr`` seconds, the start of its acquisition, on the same
clock as the events' ``onset`` (0 = start of the run's first volume). For a trial with onset ``o``:

- window volumes: ``o + start <= k * tr < o + stop`` (half open; default 4-8 s),
- baseline volumes: ``o + baseline_start <= k * tr <= o + baseline_stop`` (closed; default the volumes acquired
  in the 2 s up to and including the onset, i.e. before any BOLD response to the trial).

numpy only: the service imports this module.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "WindowSpec",
    "IncompleteWindowError",
    "CensoredWindowError",
    "usable",
    "window_indices",
    "last_volume_needed",
    "estimate_from_indices",
    "window_estimate",
    "TrialWindows",
    "ReadyTrial",
]

_EPS = 1e-6  # seconds: tolerance on volume times against window edges (onsets are floats from TSV files)


class IncompleteWindowError(ValueError):
    """A trial whose window or baseline reaches past the volumes available."""

    user_error = True


@dataclass(frozen=True)
class WindowSpec:
    """Where a trial's window and baseline lie, in seconds relative to its onset.

    Parameters
    ----------
    start, stop : float
        The response window, ``start <= t - onset < stop`` (default 4 to 8 s).
    baseline_start, baseline_stop : float
        The baseline, ``baseline_start <= t - onset <= baseline_stop`` (default -2 to 0 s).
    """

    start: float = 4.0
    stop: float = 8.0
    baseline_start: float = -2.0
    baseline_stop: float = 0.0

    def __post_init__(self) -> None:
        if not self.stop > self.start:
            raise ValueError(f"window stop ({self.stop}) must be after its start ({self.start})")
        if not self.baseline_stop >= self.baseline_start:
            raise ValueError(f"baseline stop ({self.baseline_stop}) must not precede its start ({self.baseline_start})")
        if self.baseline_stop > self.start:
            raise ValueError("the baseline must end before the response window starts")

    def check_tr(self, tr: float) -> None:
        """Raise ValueError if some onset could leave the window or the baseline without a volume."""
        if tr <= 0:
            raise ValueError(f"TR must be positive, got {tr}")
        if self.stop - self.start < tr - _EPS:
            raise ValueError(f"window {self.start}-{self.stop} s is shorter than the TR ({tr} s)")
        if self.baseline_stop - self.baseline_start < tr - _EPS:
            raise ValueError(f"baseline {self.baseline_start}-{self.baseline_stop} s is shorter than the TR ({tr} s)")

    def as_dict(self) -> dict[str, float]:
        """The four bounds in seconds, by name (the form the bundle's manifest and the records use)."""
        return {
            "start": self.start,
            "stop": self.stop,
            "baseline_start": self.baseline_start,
            "baseline_stop": self.baseline_stop,
        }


def window_indices(onset: float, tr: float, spec: WindowSpec = WindowSpec()) -> tuple[np.ndarray, np.ndarray]:
    """Volume indices of a trial's window and baseline.

    Returns
    -------
    window, baseline : int64 arrays
        Sorted volume indices. The baseline is clipped at volume 0; if a trial starts so early that no volume
        precedes it within the baseline, volume 0 is used.
    """
    spec.check_tr(tr)
    w0 = math.ceil((onset + spec.start) / tr - _EPS)
    w1 = math.ceil((onset + spec.stop) / tr - _EPS)  # exclusive
    b0 = max(math.ceil((onset + spec.baseline_start) / tr - _EPS), 0)
    b1 = math.floor((onset + spec.baseline_stop) / tr + _EPS)  # inclusive
    window = np.arange(max(w0, 0), max(w1, 0), dtype=np.int64)
    baseline = np.arange(b0, b1 + 1, dtype=np.int64) if b1 >= b0 else np.zeros(1, dtype=np.int64)
    if window.size == 0:
        raise IncompleteWindowError(f"trial at onset {onset} s has no volume in its window (TR {tr} s)")
    return window, baseline


def last_volume_needed(onset: float, tr: float, spec: WindowSpec = WindowSpec()) -> int:
    """Index of the last volume a trial's estimate needs: it is complete once this volume has arrived."""
    window, _ = window_indices(onset, tr, spec)
    return int(window[-1])


class CensoredWindowError(ValueError):
    """A trial whose window (or baseline) holds no uncensored volume: it is recorded as such and not decoded."""

    user_error = True


def usable(window: np.ndarray, baseline: np.ndarray, valid: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """The window and baseline indices whose volumes are ``valid`` (bool [T]; None: all); raises
    :class:`CensoredWindowError` when the window or the baseline keeps none."""
    if valid is None:
        return window, baseline
    valid = np.asarray(valid, bool)
    win = window[(window < valid.size) & valid[np.minimum(window, valid.size - 1)]]
    base = baseline[(baseline < valid.size) & valid[np.minimum(baseline, valid.size - 1)]]
    if win.size == 0 or base.size == 0:
        what = "window" if win.size == 0 else "baseline"
        raise CensoredWindowError(
            f"every volume of the trial's {what} ({window.tolist() if win.size == 0 else baseline.tolist()}) is censored"
        )
    return win, base


def estimate_from_indices(
    data: np.ndarray, window: np.ndarray, baseline: np.ndarray, valid: np.ndarray | None = None
) -> np.ndarray:
    """``mean(data[window]) - mean(data[baseline])`` along axis 0, in float32 (data: [T, ...]).

    ``valid`` (bool [T], optional) leaves out the volumes it marks False (censored by the QA): a trial whose
    window or baseline keeps none raises :class:`CensoredWindowError`.
    """
    data = np.asarray(data)
    n = data.shape[0]
    if window.max() >= n or baseline.max() >= n:
        raise IncompleteWindowError(
            f"the window needs volume {int(max(window.max(), baseline.max()))}, only {n} volumes are available"
        )
    window, baseline = usable(window, baseline, valid)
    win = data[window].mean(axis=0, dtype=np.float64)
    base = data[baseline].mean(axis=0, dtype=np.float64)
    return (win - base).astype(np.float32)


def window_estimate(
    data: np.ndarray,
    onsets: float | np.ndarray,
    tr: float,
    spec: WindowSpec = WindowSpec(),
    valid: np.ndarray | None = None,
) -> np.ndarray:
    """The window estimate of one trial or several.

    Parameters
    ----------
    data : array [T, ...]
        The run's volumes (or voxels), time first, already preprocessed (detrended, standardised).
    onsets : float or array [N]
        Trial onsets in seconds (0 = start of volume 0).
    tr : float
        Repetition time in seconds.
    spec : WindowSpec
        Window and baseline.
    valid : bool array [T], optional
        The volumes a window may use (False: censored by the QA); None: all.

    Returns
    -------
    float32 array [...] for one onset, [N, ...] for an array of onsets.

    Raises
    ------
    IncompleteWindowError
        A window reaches past the last volume of ``data``.
    CensoredWindowError
        A window or baseline has no valid volume.
    """
    scalar = np.ndim(onsets) == 0
    onset_arr = np.atleast_1d(np.asarray(onsets, dtype=np.float64))
    out = np.empty((onset_arr.size, *np.shape(data)[1:]), dtype=np.float32)
    for i, onset in enumerate(onset_arr):
        out[i] = estimate_from_indices(data, *window_indices(float(onset), tr, spec), valid=valid)
    return out[0] if scalar else out


@dataclass(frozen=True)
class ReadyTrial:
    """A trial whose window has been acquired: its key, onset and the volume indices of window and baseline."""

    key: object
    onset: float
    window: np.ndarray
    baseline: np.ndarray


@dataclass
class TrialWindows:
    """Incremental bookkeeping for the live service: which trials' windows are complete.

    Add trials as their onsets become known (:meth:`add`), tell it each volume index as it arrives
    (:meth:`advance`); it returns the trials whose last needed volume has now arrived, in onset order, each once.
    A trial added after its window was already acquired is returned by the next :meth:`advance`.

    Examples
    --------
    >>> tw = TrialWindows(tr=2.0)
    >>> tw.add("t1", onset=3.0)
    >>> [t.key for t in tw.advance(4)], [t.key for t in tw.advance(5)]
    ([], ['t1'])
    """

    tr: float
    spec: WindowSpec = field(default_factory=WindowSpec)
    _pending: list[tuple[int, float, object]] = field(default_factory=list, init=False, repr=False)
    _last_volume: int = field(default=-1, init=False, repr=False)

    def __post_init__(self) -> None:
        self.spec.check_tr(self.tr)

    def add(self, key: object, onset: float) -> None:
        """Register a trial (``key``: any id, e.g. the trial number or stimulus)."""
        self._pending.append((last_volume_needed(onset, self.tr, self.spec), float(onset), key))
        self._pending.sort(key=lambda item: (item[0], item[1]))

    @property
    def pending(self) -> int:
        """Number of trials still waiting for volumes."""
        return len(self._pending)

    @property
    def last_volume(self) -> int:
        """The highest volume index seen so far (-1 before any)."""
        return self._last_volume

    def advance(self, volume_index: int) -> list[ReadyTrial]:
        """Record that volumes up to ``volume_index`` have arrived; return the trials now complete."""
        self._last_volume = max(self._last_volume, int(volume_index))
        ready = []
        while self._pending and self._pending[0][0] <= self._last_volume:
            _, onset, key = self._pending.pop(0)
            window, baseline = window_indices(onset, self.tr, self.spec)
            ready.append(ReadyTrial(key=key, onset=onset, window=window, baseline=baseline))
        return sorted(ready, key=lambda t: t.onset)
