"""Trial patterns by name: what a split of the fitted runs holds, and every split of one estimate type.

:func:`offline.decoding.estimates.window_patterns` and :func:`~offline.decoding.estimates.glm_patterns` still
return arrays and ids; the fit wraps them here (a later change may have the estimators return
:class:`TrialPatterns` themselves). This module imports nothing of the project, so any room may use it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["TrialPatterns", "EstimatePatterns"]


@dataclass(frozen=True)
class TrialPatterns:
    """Trial estimates: one pattern per row, the stimulus it estimates and the run it came from.

    Parameters
    ----------
    x : [N, V]
        Patterns over voxels (every brain voxel, or the selected ones).
    ids : list of str
        The stimulus (``stim_file``) of each row.
    runs : int [N], optional
        The fitted run (its position among the fit's runs) of each row; for patterns averaged per stimulus, the
        run of the stimulus's first trial. Cross-validation groups its folds by it.
    """

    x: np.ndarray
    ids: list[str]
    runs: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def concat(cls, parts: Sequence[TrialPatterns]) -> TrialPatterns:
        """The rows of ``parts`` one after the other (e.g. every run of a split)."""
        runs = [p.runs for p in parts]
        return cls(
            np.concatenate([p.x for p in parts]),
            [s for p in parts for s in p.ids],
            None if any(r is None for r in runs) else np.concatenate([np.asarray(r) for r in runs]),
        )

    def select(self, index: np.ndarray) -> TrialPatterns:
        """The same rows over the voxels ``index`` (bool or integer index over the columns)."""
        return TrialPatterns(self.x[:, index], self.ids, self.runs)

    def in_order_of(self, other: TrialPatterns) -> TrialPatterns:
        """The rows of the stimuli of ``other`` in its order, with its runs (the same stimuli estimated another
        way); a stimulus ``other`` has and this has not is a ``KeyError``."""
        pos = {s: i for i, s in enumerate(self.ids)}
        return TrialPatterns(self.x[[pos[s] for s in other.ids]], other.ids, other.runs)


@dataclass(frozen=True)
class EstimatePatterns:
    """Every split of one estimate type (window estimates or GLM betas).

    ``train``, ``test`` and ``imagery`` are averaged per stimulus (in the order of the face spaces' latents);
    ``imagery_trials`` and ``test_trials`` keep the single trials (window) or single runs (GLM), for the
    trial-wise imagery score and the accuracy against the number of repeats averaged.
    """

    train: TrialPatterns
    test: TrialPatterns
    imagery: TrialPatterns | None = None
    imagery_trials: TrialPatterns | None = None
    test_trials: TrialPatterns | None = None

    def select(self, index: np.ndarray) -> EstimatePatterns:
        """Every split over the voxels ``index``."""

        def sub(p: TrialPatterns | None) -> TrialPatterns | None:
            return None if p is None else p.select(index)

        return EstimatePatterns(
            self.train.select(index),
            self.test.select(index),
            sub(self.imagery),
            sub(self.imagery_trials),
            sub(self.test_trials),
        )
