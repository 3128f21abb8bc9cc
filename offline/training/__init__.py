"""VAE-GAN training: image batches, losses, checkpoints and sample grids, ONNX export after training."""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "vaegan": ["TrainConfig", "train_vaegan", "CHECKPOINT_FILE"],
    },
)
