"""Loading and using face spaces: the VAE-GAN's latent space and the PCA baseline behind one interface.

A face space maps faces to latent vectors and back. The offline pipeline encodes stimuli, fits brain -> latent
mappings and evaluates in latent, pixel and perceptual space through this interface alone, so the VAE-GAN and
the PCA ("eigenface") baseline are interchangeable; both export the same ONNX contract for the service.

Examples
--------
>>> space = load_facespace("runs/vaegan-demo")  # doctest: +SKIP
>>> z = space.encode(images)                    # uint8 [N, H, W, 3] -> float32 [N, L]
>>> faces = space.decode(z)                     # float32 [N, H, W, 3] in [0, 1]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from offline.facespace.base import FACESPACE_FILE, FaceSpace, FaceSpaceError, read_meta
from offline.facespace.pca import PCAFaceSpace
from offline.facespace.vaegan import VAEGANFaceSpace

__all__ = ["load_facespace", "perceptual_features", "attribute_directions", "encode_folder"]


def load_facespace(path: str | Path, device: str = "cpu") -> FaceSpace:
    """The face space saved in folder ``path``: a ``train-vaegan`` output or a saved PCA space."""
    folder = Path(path)
    kind = read_meta(folder).get("kind")
    if kind == "vaegan":
        return VAEGANFaceSpace.load(folder, device=device)
    if kind == "pca":
        return PCAFaceSpace.load(folder)
    raise FaceSpaceError(f"{folder / FACESPACE_FILE}: unknown face space kind {kind!r} (expected vaegan or pca)")


def perceptual_features(vaegan_path_or_space: str | Path | FaceSpace, images: np.ndarray) -> np.ndarray:
    """Perceptual features ``float32 [N, F]`` of faces: the VAE-GAN discriminator's hidden layer, flattened."""
    space = vaegan_path_or_space
    if not isinstance(space, FaceSpace):
        space = load_facespace(space)
    if not isinstance(space, VAEGANFaceSpace):
        raise FaceSpaceError(f"perceptual features need a VAE-GAN face space (its discriminator), got {space.name!r}")
    return space.features(images)


def attribute_directions(
    space: FaceSpace, images: np.ndarray, attributes: np.ndarray, names: tuple[str, ...] | list[str]
) -> tuple[tuple[str, ...], np.ndarray]:
    """Latent arithmetic: for each attribute, mean latent of faces with it (1) minus mean of faces without (-1).

    Attributes that no face has, or that every face has, are dropped (0 entries count as unknown).

    Returns
    -------
    names : tuple of str
        The attributes kept, in the input order.
    directions : float32 [A, L]
    """
    attrs = np.asarray(attributes)
    if attrs.ndim != 2 or attrs.shape != (len(images), len(names)):
        raise FaceSpaceError(f"attributes must be [{len(images)}, {len(names)}] (faces x names), got {attrs.shape}")
    return directions_from_latents(space.encode(images), attrs, names, space.latent_size)


def directions_from_latents(
    latents: np.ndarray, attributes: np.ndarray, names: tuple[str, ...] | list[str], latent_size: int
) -> tuple[tuple[str, ...], np.ndarray]:
    """:func:`attribute_directions` from latents already encoded (``[N, L]``, with ``attributes`` ``[N, A]``)."""
    attrs = np.asarray(attributes)
    kept, dirs = [], []
    for j, name in enumerate(names):
        pos, neg = attrs[:, j] > 0, attrs[:, j] < 0
        if pos.any() and neg.any():
            kept.append(str(name))
            dirs.append(latents[pos].mean(0) - latents[neg].mean(0))
    directions = np.stack(dirs).astype(np.float32) if dirs else np.zeros((0, latent_size), np.float32)
    return tuple(kept), directions


def attribute_readout(
    latents: np.ndarray,
    attributes: np.ndarray,
    names: tuple[str, ...] | list[str],
    n_splits: int = 5,
    alpha: float = 1.0,
    seed: int = 0,
) -> dict[str, float]:
    """How well each attribute is read linearly from the latents: cross-validated balanced accuracy (0.5 =
    chance) of a ridge classifier on the standardised latents, per attribute with both signs among the faces.

    One linear system per fold serves every attribute (the dual form, ``K = X X^T``, since faces are usually
    fewer than latent dimensions); ``alpha`` is relative to the mean diagonal of ``K``.
    """
    x = np.asarray(latents, dtype=np.float64)
    attrs = np.asarray(attributes)
    if x.ndim != 2 or attrs.shape != (len(x), len(names)):
        raise FaceSpaceError(
            f"latents [N, L] and attributes [N, {len(names)}] must match, got {x.shape}, {attrs.shape}"
        )
    folds = np.random.default_rng(seed).permutation(len(x)) % n_splits
    cols = [j for j in range(len(names)) if (attrs[:, j] > 0).sum() >= n_splits and (attrs[:, j] < 0).sum() >= n_splits]
    if not cols or len(x) < 2 * n_splits:
        return {}
    y = np.where(attrs[:, cols] > 0, 1.0, -1.0)
    pred = np.zeros_like(y)
    for f in range(n_splits):
        tr, te = folds != f, folds == f
        mu, sd = x[tr].mean(0), x[tr].std(0) + 1e-8
        xtr, xte = (x[tr] - mu) / sd, (x[te] - mu) / sd
        k = xtr @ xtr.T
        ym = y[tr].mean(0)
        a = np.linalg.solve(k + alpha * np.trace(k) / len(k) * np.eye(len(k)), y[tr] - ym)
        pred[te] = (xte @ xtr.T) @ a + ym
    out = {}
    for i, j in enumerate(cols):
        pos, neg = y[:, i] > 0, y[:, i] < 0
        out[str(names[j])] = round(float(((pred[pos, i] > 0).mean() + (pred[neg, i] <= 0).mean()) / 2), 4)
    return out


def encode_folder(
    space: FaceSpace | str | Path, images_dir: str | Path, names: list[str] | None = None, crop: bool = False
) -> tuple[list[str], np.ndarray]:
    """Latents of the images in ``images_dir``: those listed in ``names`` (in that order) or all, sorted.

    Returns the names (relative to ``images_dir``) and ``float32 [N, L]``. A listed file that is missing or
    unreadable raises :class:`FaceSpaceError` naming it (every stimulus must have its latent).
    """
    from offline.datasets.images import list_images, load_images

    if not isinstance(space, FaceSpace):
        space = load_facespace(space)
    root = Path(images_dir)
    if names is None:
        files = list_images(root, recursive=True)
        names = [f.relative_to(root).as_posix() for f in files]
    else:
        files = [root / n for n in names]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise FaceSpaceError(f"{len(missing)} listed image(s) missing, first: {missing[0]}")
    loaded = load_images(files, space.image_size, crop=crop)
    bad = [(f, err) for f, (img, err) in zip(files, loaded) if img is None]
    if bad:
        raise FaceSpaceError(f"{len(bad)} image(s) cannot be read, first: {bad[0][0]} ({bad[0][1]})")
    images = np.stack([img for img, _ in loaded])
    return list(names), space.encode(images)
