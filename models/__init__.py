"""Torch network definitions of the VAE-GAN face space (presets ``paper-128`` and ``small-64``), checkpoints
that rebuild the model from the config stored beside the weights, and ONNX export with a parity check.

Public names are imported on first use (``lazy_loader``): torch loads only when a network is asked for.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "config": ["VAEGANConfig", "EncoderConfig", "DecoderConfig", "DiscriminatorConfig", "PRESETS", "preset"],
        "encoder": ["Encoder"],
        "decoder": ["Decoder"],
        "discriminator": ["Discriminator"],
        "vaegan": ["VAEGAN"],
        "checkpoint": ["CheckpointError", "save_checkpoint", "load_checkpoint"],
        "export": ["ExportError", "export_onnx"],
    },
)
