"""How a face image is framed before it is resized to the face space's side: one function for the images a
face space is trained on, the stimuli ``fmriface fit`` encodes, and a target face given to ``serve``.

``central-80`` is the paper's preprocessing of photographs (central square, keep its central 80%; docs/paper.md),
``square`` the central square only, ``resize`` nothing (images already framed as faces, e.g. the twin's). A face
space records its framing in ``facespace.json``; a bundle in its manifest's ``image_framing``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["FRAMINGS", "check_framing", "frame_image"]

#: The framings, as ``facespace.json`` and the bundle manifest name them.
FRAMINGS = ("central-80", "square", "resize")


def check_framing(framing: str) -> str:
    """``framing`` itself, or ValueError naming the known ones (callers check before opening any image, so that
    a bad framing is not reported as a bad image)."""
    if framing not in FRAMINGS:
        raise ValueError(f"unknown framing {framing!r}; expected one of {', '.join(FRAMINGS)}")
    return framing


def frame_image(image, size: int, framing: str) -> np.ndarray:
    """A PIL image framed as ``framing`` (one of :data:`FRAMINGS`) and resized: ``uint8 [size, size, 3]``."""
    from PIL import Image

    check_framing(framing)
    img = image.convert("RGB")
    if framing != "resize":
        w, h = img.size
        side = max(1, round(min(w, h) * (0.8 if framing == "central-80" else 1.0)))
        left, top = (w - side) // 2, (h - side) // 2
        img = img.crop((left, top, left + side, top + side))
    if img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=None)
    return np.asarray(img, dtype=np.uint8)
