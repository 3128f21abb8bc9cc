"""Feedback signals for the plugin tests: one that works, and one each that raises, overruns and returns NaN.

Each is a factory of the ``fmriface.feedback`` interface, named to the service as ``module:factory``.
"""

from __future__ import annotations

import time

import numpy as np


class Mean:
    """A working signal: the latent's mean (and the number of calls)."""

    def __init__(self, context, scale: float = 1.0) -> None:
        self.scale, self.calls = float(scale), 0

    def frame(self, latent):
        self.calls += 1
        return {"value": self.scale * float(np.mean(latent)), "calls": self.calls}

    def trial(self, latent):
        return self.scale * float(np.mean(latent))


class Raises:
    """Works for ``after`` frames, then raises."""

    def __init__(self, context, after: int = 3) -> None:
        self.after, self.n = after, 0

    def frame(self, latent):
        self.n += 1
        if self.n > self.after:
            raise RuntimeError("the plugin broke")
        return {"value": 0.5}

    def trial(self, latent):
        return {"value": 0.5}


class Sleeps:
    """Works for ``after`` frames, then sleeps ``seconds`` (far beyond any budget)."""

    def __init__(self, context, after: int = 3, seconds: float = 5.0) -> None:
        self.after, self.seconds, self.n = after, seconds, 0

    def frame(self, latent):
        self.n += 1
        if self.n > self.after:
            time.sleep(self.seconds)
        return {"value": 0.25}

    def trial(self, latent):
        return {"value": 0.25}


class ReturnsNaN:
    """Works for ``after`` frames, then returns NaN."""

    def __init__(self, context, after: int = 3) -> None:
        self.after, self.n = after, 0

    def frame(self, latent):
        self.n += 1
        return {"value": float("nan") if self.n > self.after else 0.75}

    def trial(self, latent):
        return float("nan")
