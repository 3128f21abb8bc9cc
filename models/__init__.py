"""Torch network definitions of the VAE-GAN face space (presets ``paper-128`` and ``small-64``), checkpoints
that rebuild the model from the config stored beside the weights, and ONNX export with a parity check.

Public names are imported on first use (torch loads only when a network is asked for).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "VAEGANConfig": "models.config",
    "EncoderConfig": "models.config",
    "DecoderConfig": "models.config",
    "DiscriminatorConfig": "models.config",
    "PRESETS": "models.config",
    "preset": "models.config",
    "Encoder": "models.encoder",
    "Decoder": "models.decoder",
    "Discriminator": "models.discriminator",
    "VAEGAN": "models.vaegan",
    "CheckpointError": "models.checkpoint",
    "save_checkpoint": "models.checkpoint",
    "load_checkpoint": "models.checkpoint",
    "ExportError": "models.export",
    "export_onnx": "models.export",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


def __dir__() -> list[str]:
    return __all__
