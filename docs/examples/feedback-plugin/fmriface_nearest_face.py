"""An example fmriface feedback signal: how close the decoded face is to the nearest of a set of faces.

The value is the largest Pearson correlation between the decoded latent and the latents of a set of the
bundle's stimuli (``stimuli``: their file names; all of them by default), and ``nearest`` names that stimulus.
A frame's value is averaged over the last ``smooth`` volumes (the serve config's ``feedback_smooth``), a trial's
is not. The neurofeedback target, if one is set, is ignored: this signal rewards any face of the set.

Install it beside fmriface (``pip install -e docs/examples/feedback-plugin``) and choose it in the serve config::

    feedback = "nearest-face"
    [feedback_options]
    stimuli = ["face_003.png", "face_017.png"]
"""

from __future__ import annotations

from collections import deque
from pathlib import Path

import numpy as np


class NearestFace:
    """Closeness to the nearest of a set of faces (fmriface's ``fmriface.feedback`` entry point ``nearest-face``).

    Parameters
    ----------
    context : service.live.feedback.SignalContext
        The bundle's stimuli (``stimulus_ids``, ``stimulus_latents``) and the smoothing (``smooth``).
    stimuli : list of str, optional
        File names of the stimuli in the set (with or without folders); all the bundle's stimuli by default.
    """

    def __init__(self, context, stimuli: list[str] | None = None) -> None:
        names = [Path(s).name for s in context.stimulus_ids]
        wanted = names if not stimuli else [Path(s).name for s in stimuli]
        missing = sorted(set(wanted) - set(names))
        if missing or not wanted:
            raise ValueError(f"stimuli not in the bundle: {missing or 'none given'}")
        rows = [names.index(n) for n in wanted]
        faces = np.asarray(context.stimulus_latents, np.float64)[rows]
        faces -= faces.mean(axis=1, keepdims=True)
        self._faces = faces / np.maximum(np.linalg.norm(faces, axis=1, keepdims=True), 1e-12)
        self._names = wanted
        self._recent: deque[float] = deque(maxlen=max(1, int(context.smooth)))

    def _nearest(self, latent: np.ndarray) -> tuple[float, str]:
        x = np.asarray(latent, np.float64) - float(np.mean(latent))
        x /= max(float(np.linalg.norm(x)), 1e-12)
        r = self._faces @ x
        k = int(np.argmax(r))
        return float(r[k]), self._names[k]

    def frame(self, latent: np.ndarray) -> dict:
        """The nearest face's correlation, averaged over the last volumes (``value``), and its name."""
        r, name = self._nearest(latent)
        self._recent.append(r)
        return {"value": float(np.mean(self._recent)), "correlation": round(r, 5), "nearest": name}

    def trial(self, latent: np.ndarray) -> dict:
        """A trial's nearest face and its (unsmoothed) correlation."""
        r, name = self._nearest(latent)
        return {"value": r, "correlation": round(r, 5), "nearest": name}
