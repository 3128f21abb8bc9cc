"""Signed-distance shapes, anti-aliased compositing and a cropping canvas for the face renderer.

Coordinates are face units (the head is about 1 unit wide, y points down). Shapes work on arrays ``[B, h, w]``
with per-face parameters shaped ``[B, 1, 1]``. Distances are negative inside a shape; :func:`coverage` turns a
distance into an alpha with a ramp one pixel wide (plus an optional softness in face units), so edges are
anti-aliased at any image size. :class:`Canvas` hands out views cropped to the rows and columns a feature can
touch in any face of the batch, so small features cost little.
"""

from __future__ import annotations

import numpy as np

F32 = np.float32


def coverage(d: np.ndarray, px: np.ndarray, soft: float = 0.0) -> np.ndarray:
    """Alpha in [0, 1] of a shape with signed distance ``d``; ramp width ``px`` (a pixel) plus ``soft``."""
    a = 0.5 - d / (px + F32(soft))
    np.clip(a, 0.0, 1.0, out=a)
    return a


def ellipse(x: np.ndarray, y: np.ndarray, cx, cy, a, b) -> np.ndarray:
    """Approximate signed distance to an axis-aligned ellipse (first order, close near the edge)."""
    u = (x - cx) / a
    v = (y - cy) / b
    r = np.sqrt(u * u + v * v)
    g = np.sqrt((u / a) ** 2 + (v / b) ** 2) + F32(1e-6)
    return (r - 1.0) * r / g


def circle(x: np.ndarray, y: np.ndarray, cx, cy, r) -> np.ndarray:
    """Signed distance to a circle."""
    dx = x - cx
    dy = y - cy
    return np.sqrt(dx * dx + dy * dy) - r


def segment(x: np.ndarray, y: np.ndarray, x0, y0, x1, y1, r) -> np.ndarray:
    """Signed distance to a capsule: the segment (x0, y0)-(x1, y1) thickened by ``r``."""
    px, py = x - x0, y - y0
    bx, by = x1 - x0, y1 - y0
    h = (px * bx + py * by) / (bx * bx + by * by + F32(1e-9))
    np.clip(h, 0.0, 1.0, out=h)
    dx = px - bx * h
    dy = py - by * h
    return np.sqrt(dx * dx + dy * dy) - r


def box(x: np.ndarray, y: np.ndarray, cx, cy, hw, hh, r) -> np.ndarray:
    """Signed distance to a box of half-size (hw, hh) with corners rounded by ``r``."""
    qx = np.abs(x - cx) - (hw - r)
    qy = np.abs(y - cy) - (hh - r)
    ox = np.maximum(qx, 0.0)
    oy = np.maximum(qy, 0.0)
    return np.sqrt(ox * ox + oy * oy) + np.minimum(np.maximum(qx, qy), 0.0) - r


def blend(img: np.ndarray, alpha: np.ndarray, colour, factor: np.ndarray | None = None) -> None:
    """Paint ``colour`` ([B, 3] or [3]) times an optional per-pixel ``factor`` [B, h, w] over ``img``
    [3, B, h, w] with ``alpha`` [B, h, w], in place."""
    colour = np.asarray(colour, dtype=F32)
    for c in range(3):
        cc = colour[..., c, None, None] if colour.ndim == 2 else colour[c]
        target = cc * factor if factor is not None else cc
        diff = target - img[c]
        diff *= alpha
        img[c] += diff


def shade(img: np.ndarray, alpha: np.ndarray, factor: float) -> None:
    """Darken (factor < 1) or lighten (factor > 1) ``img`` [3, B, h, w] where ``alpha`` is set, in place."""
    f = alpha * F32(factor - 1.0)
    f += 1.0
    img *= f


def lerp_palette(t: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Colours [n, 3] at positions ``t`` in [0, 1] along a palette [K, 3] (piecewise linear)."""
    k = palette.shape[0] - 1
    s = np.clip(np.asarray(t, dtype=F32), 0.0, 1.0) * k
    i = np.minimum(s.astype(int), k - 1)
    f = (s - i)[:, None]
    return (palette[i] * (1 - f) + palette[i + 1] * f).astype(F32)


def hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """RGB [n, 3] of HSV triples (each [n], in [0, 1])."""
    h6 = (np.asarray(h, dtype=F32) % 1.0) * 6.0
    c = v * s
    xx = c * (1 - np.abs(h6 % 2 - 1))
    z = np.zeros_like(c)
    sector = np.minimum(h6.astype(int), 5)
    table = np.stack(
        [
            np.stack([c, xx, z], 1),
            np.stack([xx, c, z], 1),
            np.stack([z, c, xx], 1),
            np.stack([z, xx, c], 1),
            np.stack([xx, z, c], 1),
            np.stack([c, z, xx], 1),
        ],
        0,
    )
    rgb = table[sector, np.arange(len(sector))]
    return (rgb + (v - c)[:, None]).astype(F32)


class Canvas:
    """Image and per-pixel face coordinates of a batch, with views cropped to a feature's extent.

    Parameters
    ----------
    size : int
        Image side in pixels.
    tx, ty, zoom, angle : ndarray [B, 1, 1]
        Position of the face centre in the image ([-1, 1] units), magnification and roll (radians).
    """

    def __init__(self, size: int, tx, ty, zoom, angle) -> None:
        g = ((np.arange(size, dtype=F32) + 0.5) / size * 2.0 - 1.0).astype(F32)
        gu, gv = g[None, None, :], g[None, :, None]
        self.size = size
        self.tx, self.ty, self.zoom = tx, ty, zoom
        self.ca, self.sa = np.cos(angle).astype(F32), np.sin(angle).astype(F32)
        self.maps: dict[str, np.ndarray] = {
            "x": ((gu - tx) * self.ca + (gv - ty) * self.sa) / zoom,
            "y": (-(gu - tx) * self.sa + (gv - ty) * self.ca) / zoom,
        }
        self.px = (2.0 / (size * zoom)).astype(F32)
        self.img = np.empty((3, tx.shape[0], size, size), F32)
        self.gv = gv

    def view(self, ylo, yhi, xlo=-1.6, xhi=1.6) -> _View | None:
        """The pixels whose face coordinates may fall in [xlo, xhi] x [ylo, yhi] for some face; None if none."""
        margin = 2.0 * self.px
        xs = (np.asarray(xlo, F32) - margin, np.asarray(xhi, F32) + margin)
        ys = (np.asarray(ylo, F32) - margin, np.asarray(yhi, F32) + margin)
        us, vs = [], []
        for xc in xs:
            for yc in ys:
                us.append(self.tx + self.zoom * (xc * self.ca - yc * self.sa))
                vs.append(self.ty + self.zoom * (xc * self.sa + yc * self.ca))
        s = self.size
        c0 = int(np.floor((min(u.min() for u in us) + 1.0) / 2.0 * s - 0.5))
        c1 = int(np.ceil((max(u.max() for u in us) + 1.0) / 2.0 * s + 0.5)) + 1
        r0 = int(np.floor((min(v.min() for v in vs) + 1.0) / 2.0 * s - 0.5))
        r1 = int(np.ceil((max(v.max() for v in vs) + 1.0) / 2.0 * s + 0.5)) + 1
        c0, r0, c1, r1 = max(c0, 0), max(r0, 0), min(c1, s), min(r1, s)
        if c0 >= c1 or r0 >= r1:
            return None
        return _View(self, (slice(None), slice(r0, r1), slice(c0, c1)))


class _View:
    """A crop of a :class:`Canvas`: ``img`` [3, B, h, w] and every per-pixel map (``x``, ``y``, ...) as views."""

    def __init__(self, canvas: Canvas, sl: tuple[slice, slice, slice]) -> None:
        self.canvas = canvas
        self.sl = sl
        self.img = canvas.img[(slice(None), *sl)]
        self.px = canvas.px

    def __getattr__(self, name: str) -> np.ndarray:
        maps = self.__dict__["canvas"].maps
        if name not in maps:
            raise AttributeError(name)
        return maps[name][self.__dict__["sl"]]
