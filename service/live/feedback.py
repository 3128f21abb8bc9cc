"""Neurofeedback values: closeness of each decoded latent to a target face and to the attribute directions."""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np

__all__ = ["Feedback"]


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    den = float(np.sqrt((a @ a) * (b @ b)))
    return float(a @ b) / den if den > 0 else 0.0


class Feedback:
    """Correlation with a target latent (smoothed over volumes) and projections on attribute directions.

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

    Attributes
    ----------
    target_ : array [L] or None
        The current target latent.
    target_source_ : dict
        What the target came from (``stim_id`` or ``image``), recorded in the run's state.
    """

    def __init__(self, names: tuple[str, ...], directions: np.ndarray, center: np.ndarray, smooth: int = 3) -> None:
        self.names = tuple(names)
        norms = np.linalg.norm(directions, axis=1, keepdims=True)
        norms[norms == 0] = 1.0
        self._dirs = (directions / norms).astype(np.float32)
        self._center = np.asarray(center, np.float32)
        self._centered = np.zeros_like(self._center)
        self._proj = np.zeros(len(self.names), np.float32)
        self.smooth = max(1, int(smooth))
        self.target_: np.ndarray | None = None
        self.target_source_: dict[str, Any] = {}
        self._recent: deque[float] = deque(maxlen=self.smooth)

    def set_target(self, latent: np.ndarray, source: dict[str, Any]) -> None:
        """Start comparing with ``latent`` (the smoothing restarts)."""
        self.target_ = np.asarray(latent, np.float32).copy()
        self.target_source_ = dict(source)
        self._recent.clear()

    def clear_target(self) -> None:
        """Forget the neurofeedback target and the recent correlations."""
        self.target_ = None
        self.target_source_ = {}
        self._recent.clear()

    def projections(self, latent: np.ndarray) -> dict[str, float]:
        """Projection of ``latent - center`` on each unit attribute direction."""
        np.subtract(latent, self._center, out=self._centered)
        np.dot(self._dirs, self._centered, out=self._proj)
        return {n: round(float(v), 5) for n, v in zip(self.names, self._proj)}

    def frame(self, latent: np.ndarray) -> dict[str, Any]:
        """Feedback of a per-volume latent: projections, and with a target the smoothed correlation."""
        out: dict[str, Any] = {"projections": self.projections(latent)}
        if self.target_ is not None:
            r = _pearson(latent, self.target_)
            self._recent.append(r)
            out.update(value=round(float(np.mean(self._recent)), 5), correlation=round(r, 5))
            out.update(smooth=len(self._recent), target=self._target_name())
        return out

    def trial(self, latent: np.ndarray) -> dict[str, Any]:
        """Feedback of a trial latent: projections, and with a target the (unsmoothed) correlation."""
        out: dict[str, Any] = {"projections": self.projections(latent)}
        if self.target_ is not None:
            r = round(_pearson(latent, self.target_), 5)
            out.update(value=r, correlation=r, target=self._target_name())
        return out

    def _target_name(self) -> str:
        return str(self.target_source_.get("stim_id") or "image")
