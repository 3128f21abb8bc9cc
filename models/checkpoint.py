"""Checkpoints that rebuild the VAE-GAN from the configuration stored beside its weights.

A checkpoint is one ``torch.save`` file holding plain data only (read with ``weights_only=True``): the format
tag, the network configuration, the three state dicts, optionally the optimisers' states, the step and any
training extras (random states, training configuration). It is written to a temporary file and renamed, so an
interrupted save never leaves a half-written checkpoint under the final name.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import torch

from models.config import VAEGANConfig
from models.vaegan import VAEGAN

__all__ = [
    "CHECKPOINT_FORMAT",
    "CheckpointError",
    "save_checkpoint",
    "load_checkpoint",
    "read_checkpoint",
    "config_diff",
]

CHECKPOINT_FORMAT = "fmriface-vaegan/1"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: truncated, foreign, or from another network; the message names the file."""

    user_error = True


def config_diff(a: VAEGANConfig, b: VAEGANConfig) -> list[str]:
    """Human-readable differences ``"decoder.channels: (128, 64) != (512, 384)"`` between two configurations."""
    out: list[str] = []

    def walk(x: Any, y: Any, prefix: str) -> None:
        if dataclasses.is_dataclass(x) and dataclasses.is_dataclass(y):
            for f in dataclasses.fields(x):
                walk(getattr(x, f.name), getattr(y, f.name), f"{prefix}{f.name}.")
        elif x != y:
            out.append(f"{prefix[:-1]}: {x!r} != {y!r}")

    walk(a, b, "")
    return out


def save_checkpoint(
    path: str | Path,
    model: VAEGAN,
    *,
    step: int = 0,
    optimizers: dict[str, torch.optim.Optimizer] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` (and optimiser states, step, extras) to ``path`` atomically; returns the path."""
    path = Path(path)
    state = {
        "format": CHECKPOINT_FORMAT,
        "config": model.cfg.to_dict(),
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizers": {name: opt.state_dict() for name, opt in (optimizers or {}).items()},
        "step": int(step),
        "extra": extra or {},
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The raw checkpoint dict, checked for its format; :class:`CheckpointError` if it cannot be read."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - zip, pickle and EOF errors of many kinds
        size = path.stat().st_size
        raise CheckpointError(f"checkpoint {path} ({size} bytes) is truncated or not a torch file: {exc}") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(
            f"{path} is not an fmriface VAE-GAN checkpoint (format {found!r}, expected {CHECKPOINT_FORMAT!r})"
        )
    return state


def load_checkpoint(
    path: str | Path, expected: VAEGANConfig | None = None, map_location: str | torch.device = "cpu"
) -> tuple[VAEGAN, dict[str, Any]]:
    """Rebuild the VAE-GAN stored in ``path``.

    Parameters
    ----------
    path : path
        A file written by :func:`save_checkpoint`.
    expected : VAEGANConfig, optional
        When given (e.g. on ``--resume``), the stored configuration must equal it.
    map_location : device
        Where the weights go.

    Returns
    -------
    model : VAEGAN
        In eval mode, on ``map_location``.
    state : dict
        ``step``, ``optimizers`` (state dicts), ``extra`` and ``config`` as stored.

    Raises
    ------
    CheckpointError
        Truncated or foreign file, a configuration that differs from ``expected`` or weights that do not fit the
        stored configuration; the message names the file and what differs.
    """
    path = Path(path)
    state = read_checkpoint(path)
    try:
        cfg = VAEGANConfig.from_dict(state["config"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {path} holds an unusable network configuration: {exc}") from None
    if expected is not None and cfg != expected:
        diff = "; ".join(config_diff(cfg, expected))
        raise CheckpointError(
            f"checkpoint {path} holds network {cfg.name!r}, which differs from the configured {expected.name!r}: {diff}"
        )
    model = VAEGAN(cfg)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise CheckpointError(
            f"checkpoint {path}: weights do not fit its configuration: {' '.join(first[:3])}"
        ) from None
    model.to(map_location).eval()
    return model, state
