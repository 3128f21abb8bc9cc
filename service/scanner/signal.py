"""Signal faults of the scanner emulator: a well-formed file whose data are wrong, with their ground truth.

The file faults of :mod:`service.scanner.replay` (truncated, corrupt, dropped, ... files) test the intake; these
test what the intake cannot see: the signal inside a well-formed file. Each is applied to the volume's data
before it is encoded, so every format (mosaic, enhanced, slices, NIfTI) carries it, and each is recorded with
what was actually written.

=================  ==================================================================================  ==========
kind               what the scanner produced                                                           default
=================  ==================================================================================  ==========
``spike``          the whole volume multiplied by a factor (an RF spike or a reconstruction error       x100
                   that rescales the volume)
``slice-spike``    one slice multiplied by a factor (a spike during one slice's readout)               x10
``slice-dropout``  one slice set to zero (a slice lost in reconstruction or transfer)                  x0
``zero``           the whole volume zero (a reconstruction hiccup that sends an empty image)           x0
``step``           every volume from this one on multiplied by a factor: a sustained change of the     x1.05
                   global intensity (a coil element or shim jump)
=================  ==================================================================================  ==========

The defaults are the sizes the adversarial tests of issue 27 used (x100 volume, x10 slice, zero) and a 5% step:
about three times the twin's per-voxel noise (temporal SNR 60, 1.7%) in every voxel at once, so a jump an
operator must see, while a smaller one is in the range of a legitimate slow drift over a run.

A slice fault hits a slice that cuts through the head: one whose mean in the clean volume is at least half the
brightest slice's (a x10 of an empty slice at the edge of the field of view would be a fault nobody can see).

**What is written.** No value is clipped. Scanner-like integer data stay integers (the faulted values are rounded,
as a reconstruction writes them); DICOM then stores them exactly where they fit 16 bits and otherwise with a
rescale slope (the writers' :func:`service.dicom.build.to_stored`), so a x100 volume keeps its factor to within
half that slope; NIfTI stores float32. Each record gives the volume's ``quantum``: the value of one stored unit
(the DICOM rescale slope, or 0 for float32 NIfTI), so a reader knows how exactly the factor survives. Clean
volumes are never touched: they are written bit for bit as without signal faults (after a ``step``, "clean"
means "only the step's gain").

Faults drawn by rate (seeded, a stream of its own so the file faults' plan is unchanged) never land on a volume
with a file fault, nor on the first ``skip_first`` volumes (the QA's running estimates need a few volumes; give
explicit ``volumes`` to test the first ones).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["SIGNAL_FAULT_KINDS", "SignalFault", "SignalFaults", "apply", "gains"]

SIGNAL_FAULT_KINDS = ("spike", "slice-spike", "slice-dropout", "zero", "step")

_SLICE_KINDS = ("slice-spike", "slice-dropout")
_SEED_STREAM = 0x51  # the signal faults' own random stream: np.random.default_rng([seed, _SEED_STREAM])


@dataclass(frozen=True)
class SignalFault:
    """One planned signal fault: the volume (0-based), the kind, the slice (slice faults) and the factor."""

    volume: int
    kind: str
    magnitude: float
    slice: int | None = None


@dataclass(frozen=True)
class SignalFaults:
    """Which signal faults to inject, where, and how large.

    Parameters
    ----------
    kinds : sequence of str
        Kinds from :data:`SIGNAL_FAULT_KINDS`.
    rate : float
        Probability that a volume gets one (ignored when ``volumes`` is given).
    volumes : sequence of int, optional
        Explicit 0-based volume indices; the i-th listed volume gets the i-th kind (cycling through ``kinds``).
    spike_factor, slice_factor, step_factor : float
        The factors of ``spike`` (whole volume), ``slice-spike`` (one slice) and ``step`` (every volume from
        the step on).
    skip_first : int
        Volumes at the start of the run that rate-drawn faults leave alone.
    """

    kinds: Sequence[str] = ()
    rate: float = 0.0
    volumes: Sequence[int] | None = None
    spike_factor: float = 100.0
    slice_factor: float = 10.0
    step_factor: float = 1.05
    skip_first: int = 5

    def __post_init__(self) -> None:
        object.__setattr__(self, "kinds", tuple(self.kinds))
        unknown = sorted(set(self.kinds) - set(SIGNAL_FAULT_KINDS))
        if unknown:
            raise ValueError(f"unknown signal fault kind(s) {unknown}; known: {', '.join(SIGNAL_FAULT_KINDS)}")
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"the signal fault rate must be in [0, 1], got {self.rate}")
        for name in ("spike_factor", "slice_factor", "step_factor"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number, got {value}")
        if self.volumes is not None:
            object.__setattr__(self, "volumes", tuple(int(v) for v in self.volumes))
            if any(v < 0 for v in self.volumes) or len(set(self.volumes)) != len(self.volumes):
                raise ValueError(f"signal fault volumes must be distinct indices >= 0, got {list(self.volumes)}")
            if self.volumes and not self.kinds:
                raise ValueError("signal fault volumes given without a signal fault kind")

    @property
    def active(self) -> bool:
        """Whether any fault can be injected."""
        return bool(self.kinds) and (bool(self.volumes) if self.volumes is not None else self.rate > 0)

    def magnitude(self, kind: str) -> float:
        """The factor a fault of ``kind`` applies (0 for dropout and zero)."""
        return {"spike": self.spike_factor, "slice-spike": self.slice_factor, "step": self.step_factor}.get(kind, 0.0)

    def plan(self, data: np.ndarray, seed: int, first: int = 0, busy: Iterable[int] = ()) -> dict[int, SignalFault]:
        """The faults of a run ``data`` [X, Y, Z, T], by volume, deterministic from ``seed``.

        ``first`` is the first volume written; ``busy`` the volumes with a file fault (rate-drawn faults avoid them).
        """
        n = int(data.shape[3])
        rng = np.random.default_rng([seed, _SEED_STREAM])
        if self.volumes is not None:
            bad = [v for v in self.volumes if not first <= v < n]
            if bad:
                raise ValueError(f"signal fault volumes {bad} are outside the run's volumes {first}..{n - 1}")
            chosen = [(v, self.kinds[i % len(self.kinds)]) for i, v in enumerate(self.volumes)]
        else:
            busy = set(busy)
            chosen = []
            for k in range(first, n):
                u, pick = rng.random(), int(rng.integers(len(self.kinds))) if self.kinds else 0
                if self.kinds and u < self.rate and k >= first + self.skip_first and k not in busy:
                    chosen.append((k, self.kinds[pick]))
        out: dict[int, SignalFault] = {}
        for k, kind in sorted(chosen):
            where = _bright_slice(np.asarray(data[..., k], np.float64), rng) if kind in _SLICE_KINDS else None
            out[k] = SignalFault(k, kind, self.magnitude(kind), where)
        return out


def _bright_slice(vol: np.ndarray, rng: np.random.Generator) -> int:
    """A slice through the head: one of those whose mean is at least half the brightest slice's."""
    means = np.abs(vol).mean(axis=(0, 1))
    candidates = np.flatnonzero(means >= 0.5 * means.max()) if means.max() > 0 else np.arange(vol.shape[2])
    return int(candidates[int(rng.integers(len(candidates)))])


def gains(plan: dict[int, SignalFault], n: int) -> np.ndarray:
    """The global gain of every volume of an ``n``-volume run: the product of the steps at or before it."""
    g = np.ones(n, np.float64)
    for k, f in plan.items():
        if f.kind == "step":
            g[k:] *= f.magnitude
    return g


def apply(vol: np.ndarray, fault: SignalFault | None, gain: float, integral: bool) -> np.ndarray:
    """The volume as the faulty scanner writes it: ``vol`` (clean, float32) times the run's ``gain`` at it, with
    ``fault`` applied; rounded to integers when ``integral`` (scanner-like integer data). Returns ``vol`` itself
    (the same object, untouched) when there is nothing to apply."""
    if fault is None and gain == 1.0:
        return vol
    out = np.asarray(vol, np.float64) * gain
    if fault is not None:
        if fault.kind in ("spike", "zero"):
            out = out * fault.magnitude
        elif fault.kind in _SLICE_KINDS:
            out[:, :, fault.slice] *= fault.magnitude
    if integral:
        out = np.rint(out)
    return out.astype(np.float32)
