"""Decoding: masked voxels -> latent (the bundle's linear map) -> face image (``decoder.onnx`` on onnxruntime).

The onnxruntime session is built and warmed up once; every buffer used per volume is allocated up front, so
decoding a volume allocates only what onnxruntime itself returns. A ``decoder.onnx`` that is a valid graph but not
this bundle's decoder (its inputs, outputs, shapes or types) is refused at start with a message that names the
file and what is wrong, never with onnxruntime's traceback.
"""

from __future__ import annotations

import numpy as np

from service.bundle import Bundle, BundleError
from service.live.onnx_session import make_session, warm_up

__all__ = ["LatentDecoder", "check_decoder_graph"]


def _declared(arg: object) -> str:
    shape = getattr(arg, "shape", None)
    dims = "?" if shape is None else "[" + ", ".join(str(d) if isinstance(d, int) else "N" for d in shape) + "]"
    return f"{getattr(arg, 'type', '?')} {dims}"


def check_decoder_graph(session: object, path: object, latent_size: int, image_shape: tuple[int, int, int]) -> None:
    """Raise BundleError, naming ``path`` and what is wrong, unless the session's graph takes one float32 input of
    latents ``[N, latent_size]`` and gives a float32 image batch ``[N, C, H, W]`` first (``image_shape`` is
    ``(H, W, C)``); dimensions the graph leaves symbolic are not held against it."""
    h, w, c = image_shape
    inputs, outputs = session.get_inputs(), session.get_outputs()
    want_in, want_out = f"tensor(float) [N, {latent_size}]", f"tensor(float) [N, {c}, {h}, {w}]"
    problems = []
    if len(inputs) != 1:
        names = ", ".join(f"{i.name!r} {_declared(i)}" for i in inputs) or "none"
        problems.append(f"it takes {len(inputs)} inputs ({names}), the service feeds one: latents {want_in}")
    else:
        inp = inputs[0]
        shape = inp.shape or []
        if inp.type != "tensor(float)" or len(shape) != 2 or (isinstance(shape[1], int) and shape[1] != latent_size):
            problems.append(f"its input {inp.name!r} is {_declared(inp)}, the service feeds latents {want_in}")
    if not outputs:
        problems.append(f"it has no output, the service needs the image batch {want_out}")
    else:
        out = outputs[0]
        shape = out.shape
        wrong_dims = shape is not None and (
            len(shape) != 4 or any(isinstance(d, int) and d != e for d, e in zip(shape[1:], (c, h, w)))
        )
        if out.type != "tensor(float)" or wrong_dims:
            problems.append(
                f"its first output {out.name!r} is {_declared(out)}, the manifest's image_shape is "
                f"[{h}, {w}, {c}] (expected {want_out})"
            )
    if problems:
        raise BundleError(f"{path} is not this bundle's decoder: " + "; ".join(problems))


class LatentDecoder:
    """The bundle's mapping and decoder, ready to run per volume.

    Parameters
    ----------
    bundle : Bundle
        A loaded bundle.
    device : str
        ``cpu``, ``cuda`` or ``auto`` (onnxruntime provider choice).
    threads : int
        onnxruntime intra-op threads.

    Attributes
    ----------
    provider_ : str
        Where the decoder session really runs: ``cpu`` or ``cuda`` (``service.live.onnx_session.make_session``).
    """

    def __init__(self, bundle: Bundle, device: str = "cpu", threads: int = 1) -> None:
        self.bundle = bundle
        self.device = device
        self.threads = threads
        self._encoder = None

    def build(self) -> LatentDecoder:
        """Create the decoder session, check its shapes and warm it up."""
        b = self.bundle
        self.session_, self.provider_ = make_session(b.decoder_path, device=self.device, threads=self.threads)
        check_decoder_graph(self.session_, b.decoder_path, b.latent_size, tuple(b.image_shape))
        self._in_name = self.session_.get_inputs()[0].name
        h, w, c = b.image_shape
        self.latent_size = b.latent_size
        # voxels -> latent: latent = ((x - x_mean) / x_scale) @ W + b  ==  x @ (W / x_scale[:, None]) + b'
        self._w = np.ascontiguousarray(b.weights / b.x_scale[:, None], dtype=np.float32)
        self._b = (b.bias - (b.x_mean / b.x_scale) @ b.weights).astype(np.float32)
        self._lat = np.zeros((1, b.latent_size), np.float32)
        self._img_f = np.zeros((h, w, c), np.float32)
        self._img_u8 = np.zeros((h, w, c), np.uint8)
        try:
            warm_up(self.session_, n=3, batch=1)
            out = self.session_.run(None, {self._in_name: np.zeros((2, b.latent_size), np.float32)})[0]
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types; say which file and why
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise BundleError(
                f"{b.decoder_path} cannot decode latents float32 [N, {b.latent_size}]: onnxruntime says: {first}"
            ) from None
        out = np.asarray(out)
        if out.dtype != np.float32:
            raise BundleError(f"{b.decoder_path}: decodes to {out.dtype}, the service needs float32 images in [0, 1]")
        if out.shape != (2, c, h, w):
            raise BundleError(
                f"{b.decoder_path}: decodes a latent to shape {out.shape[1:]}, the manifest's image_shape is "
                f"[{h}, {w}, {c}] (expected output [N, {c}, {h}, {w}])"
            )
        for _ in range(3):
            self.decode(self._lat[0])
        return self

    def latent(self, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """The mapping's latent [L] of the mask voxels ``x`` [V] (written into ``out`` when given)."""
        out = self._lat[0] if out is None else out
        np.dot(x, self._w, out=out)
        out += self._b
        return out

    def latents(self, x: np.ndarray) -> np.ndarray:
        """Latents [N, L] of a batch of voxel vectors [N, V]."""
        return (np.asarray(x, np.float32) @ self._w + self._b).astype(np.float32)

    def decode(self, latent: np.ndarray) -> np.ndarray:
        """The face image ``uint8 [H, W, 3]`` of one latent (an internal buffer: copy to keep it)."""
        self._lat[0] = latent
        img = self.session_.run(None, {self._in_name: self._lat})[0]
        np.multiply(img[0].transpose(1, 2, 0), 255.0, out=self._img_f)
        self._img_f += 0.5
        np.clip(self._img_f, 0.0, 255.0, out=self._img_f)
        np.copyto(self._img_u8, self._img_f, casting="unsafe")
        return self._img_u8

    def decode_batch(self, latents: np.ndarray) -> np.ndarray:
        """Face images ``uint8 [N, H, W, 3]`` of latents [N, L] (one onnxruntime call)."""
        img = self.session_.run(None, {self._in_name: np.ascontiguousarray(latents, np.float32)})[0]
        return np.clip(img.transpose(0, 2, 3, 1) * 255.0 + 0.5, 0, 255).astype(np.uint8)

    def encode_image(self, image: np.ndarray) -> np.ndarray:
        """The latent [L] of a face image (``uint8 [H, W, 3]`` or float in [0, 1]) through ``encoder.onnx``."""
        if self._encoder is None:
            self._encoder, _ = make_session(self.bundle.encoder_path, device=self.device, threads=self.threads)
        img = np.asarray(image)
        h, w, c = self.bundle.image_shape
        if img.shape != (h, w, c):
            raise ValueError(f"a target image must be {h}x{w}x{c} like the bundle's faces, got {img.shape}")
        x = img.astype(np.float32) / 255.0 if img.dtype == np.uint8 else img.astype(np.float32)
        x = np.ascontiguousarray(x.transpose(2, 0, 1)[None])
        name = self._encoder.get_inputs()[0].name
        lat = self._encoder.run(None, {name: x})[0]
        return np.asarray(lat, np.float32).reshape(-1)[: self.bundle.latent_size]
