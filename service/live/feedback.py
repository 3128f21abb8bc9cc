"""Neurofeedback values: the signal chosen by name, and the attribute projections every message carries.

:class:`Feedback` is what the pipeline and the trials ask for a latent's feedback. The value it reports comes from
a *signal* chosen by name in the serve config (``feedback = "target-correlation"``, the default), one of the
entry point group ``fmriface.feedback`` (:mod:`service.live.feedback_plugins`). The two built-in signals are
here: :class:`TargetCorrelation` (closeness of the latent to a target face: the Pearson correlation with the
target latent, smoothed over the last volumes) and :class:`AttributeProjection` (the projection of the latent on
the unit attribute directions; with ``attribute`` set, that attribute's projection is the value). Every
message's ``feedback`` holds the projections on all attributes, whatever the signal.

A built-in signal runs inline on the worker thread, as it always has. A plugin signal runs on a thread of its own
within a time budget (:class:`~service.live.feedback_plugins.GuardedSignal`): one that raises, overruns or
returns a non-finite value is reported and disabled for the run, and the live path goes on without its value.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Feedback", "SignalContext", "TargetCorrelation", "AttributeProjection", "DEFAULT_SIGNAL"]

#: The signal a run uses when its config names none: closeness to the target face.
DEFAULT_SIGNAL = "target-correlation"


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    den = float(np.sqrt((a @ a) * (b @ b)))
    return float(a @ b) / den if den > 0 else 0.0


@dataclass(frozen=True)
class SignalContext:
    """What a feedback signal may know of the bundle and the run, handed to its factory at start.

    Attributes
    ----------
    latent_size : int
    attribute_names : tuple of str
    attribute_directions : array [A, L]
        Unit attribute directions in latent space.
    center : array [L]
        The stimuli's mean latent (the origin of the projections).
    smooth : int
        Volumes a frame value may be averaged over (``feedback_smooth``).
    stimulus_ids : tuple of str
        The bundle's stimulus file names, train then test.
    stimulus_latents : array [S, L]
        Their latents, row by row.
    """

    latent_size: int
    attribute_names: tuple[str, ...]
    attribute_directions: np.ndarray
    center: np.ndarray
    smooth: int = 3
    stimulus_ids: tuple[str, ...] = ()
    stimulus_latents: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))


class AttributeProjection:
    """Projections of ``latent - center`` on each unit attribute direction; with ``attribute``, its value.

    Parameters
    ----------
    context : SignalContext
    attribute : str
        An attribute name (``Smiling``): its projection becomes the feedback ``value``. Empty: projections only.
    """

    def __init__(self, context: SignalContext, attribute: str = "") -> None:
        self.names = tuple(context.attribute_names)
        if attribute and attribute not in self.names:
            raise ValueError(f"attribute {attribute!r} is not among the bundle's attributes {list(self.names)}")
        self.attribute = attribute
        self._dirs = np.asarray(context.attribute_directions, np.float32)
        self._center = np.asarray(context.center, np.float32)
        self._centered = np.zeros_like(self._center)
        self._proj = np.zeros(len(self.names), np.float32)

    def projections(self, latent: np.ndarray) -> dict[str, float]:
        """Projection of ``latent - center`` on each unit attribute direction (5 decimals)."""
        np.subtract(latent, self._center, out=self._centered)
        np.dot(self._dirs, self._centered, out=self._proj)
        return {n: round(float(v), 5) for n, v in zip(self.names, self._proj)}

    def frame(self, latent: np.ndarray) -> dict[str, Any]:
        """The chosen attribute's projection as ``value`` (nothing without one)."""
        if not self.attribute:
            return {}
        return {"value": self.projections(latent)[self.attribute], "attribute": self.attribute}

    trial = frame


class TargetCorrelation:
    """Closeness to the target face: the latent's Pearson correlation with the target latent.

    A frame's ``value`` is the correlation averaged over the last ``smooth`` volumes (``correlation`` is this
    volume's); a trial's is unsmoothed. Without a target it gives nothing.
    """

    def __init__(self, context: SignalContext) -> None:
        self.smooth = max(1, int(context.smooth))
        self.target_: np.ndarray | None = None
        self._name = ""
        self._recent: deque[float] = deque(maxlen=self.smooth)

    def set_target(self, latent: np.ndarray, source: Mapping[str, Any]) -> None:
        """Compare with ``latent`` from now on (the smoothing restarts)."""
        self.target_ = np.asarray(latent, np.float32)
        self._name = str(source.get("stim_id") or "image")
        self._recent.clear()

    def clear_target(self) -> None:
        """Forget the target and the recent correlations."""
        self.target_ = None
        self._recent.clear()

    def frame(self, latent: np.ndarray) -> dict[str, Any]:
        """The smoothed correlation with the target (``value``), this volume's (``correlation``)."""
        if self.target_ is None:
            return {}
        r = _pearson(latent, self.target_)
        self._recent.append(r)
        out = {"value": round(float(np.mean(self._recent)), 5), "correlation": round(r, 5)}
        out.update(smooth=len(self._recent), target=self._name)
        return out

    def trial(self, latent: np.ndarray) -> dict[str, Any]:
        """The (unsmoothed) correlation of a trial's latent with the target."""
        if self.target_ is None:
            return {}
        r = round(_pearson(latent, self.target_), 5)
        return {"value": r, "correlation": r, "target": self._name}


class Feedback:
    """A latent's feedback: projections on the attribute directions, and the chosen signal's value.

    Parameters
    ----------
    names : tuple of str
        Attribute names (Male, Smiling, ...).
    directions : array [A, L]
        Attribute directions in latent space (normalised here to unit length).
    center : array [L]
        Origin of the projections (the mean latent of the stimuli), so 0 means "average face".
    smooth : int
        Volumes the per-frame correlation is averaged over (1 = no smoothing).
    signal : str
        The feedback signal's name in the entry point group ``fmriface.feedback`` (or ``module:object``).
    options : mapping, optional
        Keyword arguments of the signal's factory (``[feedback_options]`` of the serve config).
    budget_s : float
        A plugin signal's time budget per call (built-in signals run inline).
    stimulus_ids, stimulus_latents : optional
        The bundle's stimuli, for signals that compare with them.

    Attributes
    ----------
    target_ : array [L] or None
        The current target latent.
    target_source_ : dict
        What the target came from (``stim_id`` or ``image``), recorded in the run's state.
    """

    def __init__(
        self,
        names: tuple[str, ...],
        directions: np.ndarray,
        center: np.ndarray,
        smooth: int = 3,
        *,
        signal: str = DEFAULT_SIGNAL,
        options: Mapping[str, Any] | None = None,
        budget_s: float = 0.02,
        stimulus_ids: tuple[str, ...] = (),
        stimulus_latents: np.ndarray | None = None,
    ) -> None:
        from service.live.feedback_plugins import make_signal

        norms = np.linalg.norm(directions, axis=1, keepdims=True)
        norms[norms == 0] = 1.0
        center = np.asarray(center, np.float32)
        self.context = SignalContext(
            latent_size=int(center.shape[0]),
            attribute_names=tuple(names),
            attribute_directions=(directions / norms).astype(np.float32),
            center=center,
            smooth=max(1, int(smooth)),
            stimulus_ids=tuple(stimulus_ids),
            stimulus_latents=(
                np.zeros((0, center.shape[0]), np.float32)
                if stimulus_latents is None
                else np.asarray(stimulus_latents, np.float32)
            ),
        )
        self.names, self.smooth = self.context.attribute_names, self.context.smooth
        self._projection = AttributeProjection(self.context)
        self.signal_name = signal
        self.signal = make_signal(signal, self.context, dict(options or {}), budget_s)
        self.target_: np.ndarray | None = None
        self.target_source_: dict[str, Any] = {}

    def set_target(self, latent: np.ndarray, source: dict[str, Any]) -> None:
        """Start comparing with ``latent`` (the smoothing restarts)."""
        self.target_ = np.asarray(latent, np.float32).copy()
        self.target_source_ = dict(source)
        if hasattr(self.signal, "set_target"):
            self.signal.set_target(self.target_, self.target_source_)

    def clear_target(self) -> None:
        """Forget the neurofeedback target and the recent correlations."""
        self.target_ = None
        self.target_source_ = {}
        if hasattr(self.signal, "clear_target"):
            self.signal.clear_target()

    def projections(self, latent: np.ndarray) -> dict[str, float]:
        """Projection of ``latent - center`` on each unit attribute direction."""
        return self._projection.projections(latent)

    def frame(self, latent: np.ndarray) -> dict[str, Any]:
        """Feedback of a per-volume latent: projections, and the signal's value (smoothed, for the target)."""
        return {"projections": self.projections(latent), **self.signal.frame(latent)}

    def trial(self, latent: np.ndarray) -> dict[str, Any]:
        """Feedback of a trial latent: projections, and the signal's (unsmoothed) value."""
        return {"projections": self.projections(latent), **self.signal.trial(latent)}

    def report(self) -> dict[str, Any] | None:
        """A plugin signal's state for the run's summary (its name, calls, slowest call, why it was disabled);
        None for a built-in signal."""
        report = getattr(self.signal, "report", None)
        return report() if callable(report) else None
