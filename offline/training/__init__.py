"""VAE-GAN training: image batches, losses, checkpoints and sample grids, ONNX export after training."""

from offline.training.vaegan import CHECKPOINT_FILE, TrainConfig, train_vaegan

__all__ = ["TrainConfig", "train_vaegan", "CHECKPOINT_FILE"]
