"""Torch network definitions of the VAE-GAN face space, checkpoints and ONNX export."""
