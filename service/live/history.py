"""The per-volume history of a run: what the pipeline keeps of every volume, by volume index.

Motion-corrected mask voxels (``raw``), the six motion parameters, the online-preprocessed voxels
(``preprocessed``), which volumes are in (``valid``) and which of them the QA censored (``censored``: kept, never
in a trial's estimate nor a frame's input). The pipeline writes it once per volume; the trials read
it (:class:`service.live.trials.TrialBook` re-estimates a trial's window under the current online fit), and the
frame input averages its last volumes. It grows by doubling, so a run of any length costs amortised O(1) per
volume.
"""

from __future__ import annotations

import numpy as np

__all__ = ["VolumeHistory"]


class VolumeHistory:
    """Arrays indexed by volume index; rows of volumes not (yet) in are zero and ``valid`` False.

    Parameters
    ----------
    n_voxels : int
        Voxels per volume (the bundle's mask).
    capacity : int
        Initial rows; grows as needed.
    """

    __slots__ = ("raw", "motion", "preprocessed", "valid", "censored", "last_index", "last_uncensored", "_mean")

    def __init__(self, n_voxels: int, capacity: int = 256) -> None:
        self.raw = np.zeros((capacity, n_voxels), np.float32)
        self.motion = np.zeros((capacity, 6))
        self.preprocessed = np.zeros((capacity, n_voxels), np.float32)
        self.valid = np.zeros(capacity, bool)
        self.censored = np.zeros(capacity, bool)
        #: the highest volume index stored so far (-1 before the first)
        self.last_index = -1
        #: the highest uncensored volume index stored so far (-1 before the first)
        self.last_uncensored = -1
        self._mean = np.zeros(n_voxels, np.float32)

    def store(
        self, index: int, raw: np.ndarray, params: np.ndarray, preprocessed: np.ndarray | None, censored: bool = False
    ) -> None:
        """Keep volume ``index``: its corrected voxels, motion parameters and preprocessed voxels (None for a
        ``censored`` volume, which the online fit left out: its row stays zero)."""
        if index >= self.valid.size:
            grow = max(index + 1, 2 * self.valid.size)
            for name in ("raw", "motion", "preprocessed", "valid", "censored"):
                old = getattr(self, name)
                new = np.zeros((grow, *old.shape[1:]), old.dtype)
                new[: old.shape[0]] = old
                setattr(self, name, new)
        self.raw[index] = raw
        self.motion[index] = params
        if preprocessed is None:
            self.preprocessed[index] = 0.0
        else:
            self.preprocessed[index] = preprocessed
        self.valid[index] = True
        self.censored[index] = censored
        self.last_index = max(self.last_index, index)
        if not censored:
            self.last_uncensored = max(self.last_uncensored, index)

    def valid_among(self, indices: np.ndarray) -> np.ndarray:
        """The volume indices of ``indices`` that are in (acquired, not failed, not censored), in the given order."""
        indices = np.asarray(indices)
        inside = indices < self.valid.size
        at = np.minimum(indices, self.valid.size - 1)
        return indices[inside & self.valid[at] & ~self.censored[at]]

    def average(self, index: int, n: int) -> np.ndarray:
        """The preprocessed voxels of volume ``index`` averaged with the valid (uncensored) ones of the ``n - 1``
        before it.

        With ``n == 1`` the row itself (no copy); otherwise a buffer reused by the next call.
        """
        if n == 1:
            return self.preprocessed[index]
        idx = [i for i in range(max(0, index - n + 1), index + 1) if self.valid[i] and not self.censored[i]]
        if not idx:
            self._mean[:] = 0.0
            return self._mean
        np.mean(self.preprocessed[idx], axis=0, out=self._mean)
        return self._mean
