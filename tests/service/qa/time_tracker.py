"""How long the QA takes per volume (a timing script, not a test: ``python -m tests.service.qa.time_tracker``).

One :class:`service.qa.QualityTracker` fed 300 volumes (20 distinct noisy volumes in turn, float32) at 64x64x36
with a 54,000-voxel mask and at 104x104x72 with a 320,000-voxel mask; the first 30 are left out. It times the
verdict (``update``: what the live path waits for before decoding) and the bookkeeping the pipeline runs once the
frame is out (``flush``: the running sums, medians' ring, tSNR and the maps' Welford), separately and together.
"""

from __future__ import annotations

import time

import numpy as np

from service.qa import QAConfig, QualityTracker


def time_tracker(shape: tuple[int, int, int], n_voxels: int, n: int = 300) -> dict[str, float]:
    """Median and 95th percentile (ms) of ``update``, ``flush`` and both, per volume."""
    rng = np.random.default_rng(0)
    base = rng.uniform(200, 1000, size=shape).astype(np.float32)
    mask = np.zeros(shape, bool)
    mask.flat[rng.choice(mask.size, n_voxels, replace=False)] = True
    vols = [(base + rng.normal(0, 10, size=shape)).astype(np.float32) for _ in range(20)]
    xs = [v[mask] for v in vols]
    qa = QualityTracker(QAConfig(), reference_mean=float(base[mask].mean()))
    upd, fl = [], []
    for k in range(n):
        t0 = time.perf_counter()
        qa.update(vols[k % 20], xs[k % 20], 0.1)
        t1 = time.perf_counter()
        qa.flush()
        upd.append(t1 - t0)
        fl.append(time.perf_counter() - t1)
    u, f = np.array(upd[30:]) * 1e3, np.array(fl[30:]) * 1e3
    out = {}
    for name, t in (("update", u), ("flush", f), ("both", u + f)):
        out[f"{name}_p50"], out[f"{name}_p95"] = float(np.median(t)), float(np.percentile(t, 95))
    return out


def main() -> None:
    for shape, n_voxels in (((64, 64, 36), 54_000), ((104, 104, 72), 320_000)):
        t = time_tracker(shape, n_voxels)
        print(
            f"{'x'.join(map(str, shape))} ({n_voxels} voxels): update p50 {t['update_p50']:.3f} ms "
            f"(p95 {t['update_p95']:.3f}); flush p50 {t['flush_p50']:.3f} ms; both p50 {t['both_p50']:.3f} ms "
            f"(p95 {t['both_p95']:.3f})"
        )


if __name__ == "__main__":
    main()
