"""Records of a training run: metrics CSV, sample grids, device and torch.distributed set-up."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

METRIC_FIELDS = (
    "step",
    "seconds",
    "images_per_s",
    "kl",
    "feature",
    "pixel",
    "gan_dec",
    "dis",
    "d_real",
    "d_fake",
    "train_dec",
    "train_dis",
)


class MetricsLog:
    """``metrics.csv``: one row per logged step. On resume, rows after the checkpoint's step are dropped first."""

    def __init__(self, path: Path, resume_step: int | None = None) -> None:
        self.path = Path(path)
        if resume_step is not None and self.path.is_file():
            with open(self.path, newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= resume_step]
            self._write_rows(rows)
        elif not self.path.is_file() or resume_step is None:
            self._write_rows([])

    def _write_rows(self, rows: list[dict]) -> None:
        with open(self.path, "w", newline="") as f:
            w = csv.DictWriter(f, METRIC_FIELDS, extrasaction="ignore")
            w.writeheader()
            w.writerows(rows)

    def append(self, row: dict) -> None:
        """Append one row (floats written with 6 significant digits; keys outside the columns ignored)."""
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, METRIC_FIELDS, extrasaction="ignore").writerow(
                {k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()}
            )


def read_metrics(path: str | Path) -> list[dict[str, float]]:
    """The rows of a ``metrics.csv`` as floats."""
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in r.items()} for r in csv.DictReader(f)]


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Float images in [0, 1] (any layout) to uint8, rounding."""
    return (np.clip(images, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def write_grid(path: Path, rows: list[np.ndarray], pad: int = 2) -> None:
    """A PNG of image rows: each an array ``[n, S, S, 3]`` (uint8 or float in [0, 1]), one grid row each."""
    from PIL import Image

    rows = [r if r.dtype == np.uint8 else to_uint8(r) for r in rows]
    n = max(len(r) for r in rows)
    s = rows[0].shape[1]
    grid = np.full((len(rows) * (s + pad) + pad, n * (s + pad) + pad, 3), 255, np.uint8)
    for i, row in enumerate(rows):
        for j, img in enumerate(row):
            y, x = pad + i * (s + pad), pad + j * (s + pad)
            grid[y : y + s, x : x + s] = img
    tmp = path.with_name(path.name + ".tmp.png")
    Image.fromarray(grid).save(tmp)
    os.replace(tmp, path)


def pixel_correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation between each pair of images ``a[i]``, ``b[i]`` over all pixels and channels."""
    a = a.reshape(len(a), -1).astype(np.float64)
    b = b.reshape(len(b), -1).astype(np.float64)
    a = a - a.mean(1, keepdims=True)
    b = b - b.mean(1, keepdims=True)
    den = np.sqrt((a * a).sum(1) * (b * b).sum(1))
    return (a * b).sum(1) / np.where(den > 0, den, 1.0)


def setup_device(requested: str):
    """Pick the device and, under ``torchrun``, join the process group (nccl on CUDA, gloo on CPU).

    Returns ``(device, rank, world_size, distributed)``.
    """
    import torch

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = requested == "cuda" or (requested == "auto" and torch.cuda.is_available())
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was requested but torch sees no CUDA device")
    device = torch.device(f"cuda:{local}" if use_cuda else "cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    distributed = world > 1
    if distributed and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if use_cuda else "gloo")
    return device, rank, world, distributed
