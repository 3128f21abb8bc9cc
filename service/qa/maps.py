"""The QA maps the operator sees: a few axial slices of the mean EPI in grey with the bundle's mask outlined, beside
the same slices of the running voxelwise tSNR in colour with its scale, as one RGB image (numpy only).

The image is what the service publishes on topic ``qa`` (docs/protocol.md) and the dashboard shows: coverage
(does the mask sit on the brain, is a slab missing) and dropout (a slice dark in the mean, low in tSNR) at a
glance. Layout, for ``n`` slices of an ``X x Y x Z`` volume (voxel order, as nibabel gives it)::

    +--------+--------+-- ... --+
    | mean z0| mean z1|         |         each tile: one axial slice, voxel x to the right, voxel y upwards,
    +--------+--------+-- ... --+  hi     every voxel a block of `scale` x `scale` pixels
    | tSNR z0| tSNR z1|         |  |#|   the colour bar (0 at the bottom, `hi` at the top, both written)
    +--------+--------+-- ... --+   0

Everything is deterministic: the same arrays give the same pixels. A mask of None draws no outline; a tSNR not
defined yet (all NaN early in a run) is drawn black with a scale of 0 to 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["render_maps", "choose_slices", "tsnr_scale", "maps_layout", "MapsLayout", "VIRIDIS", "OUTLINE"]

#: The tSNR colour map: viridis at nine stops (0, 1/8, ..., 1), interpolated linearly to 256 entries.
_STOPS = np.array(
    [
        (68, 1, 84),
        (71, 44, 122),
        (59, 82, 139),
        (44, 113, 142),
        (33, 145, 140),
        (39, 173, 129),
        (92, 200, 99),
        (170, 220, 50),
        (253, 231, 37),
    ],
    dtype=np.float64,
)
VIRIDIS = (
    np.stack(
        [np.interp(np.linspace(0, 1, 256), np.linspace(0, 1, len(_STOPS)), _STOPS[:, c]) for c in range(3)], axis=1
    )
    .round()
    .astype(np.uint8)
)
#: The colour of the mask's outline on the mean EPI (never a grey: red differs from green).
OUTLINE = np.array((255, 64, 32), np.uint8)
_BACKGROUND = np.array((15, 23, 42), np.uint8)  # the dashboard's plot background
_TEXT = np.array((226, 232, 240), np.uint8)
_GAP = 2  # pixels between tiles
_BAR_W = 12  # the colour bar's width
_LABEL_W = 44  # room for the scale's labels at the right of the bar
_TILE_PX = 128  # a tile is about this many pixels on its longer side

#: A 3 x 5 pixel font for the scale's numbers.
_GLYPHS = {
    "0": ("111", "101", "101", "101", "111"),
    "1": ("010", "110", "010", "010", "111"),
    "2": ("111", "001", "111", "100", "111"),
    "3": ("111", "001", "111", "001", "111"),
    "4": ("101", "101", "111", "001", "001"),
    "5": ("111", "100", "111", "001", "111"),
    "6": ("111", "100", "111", "101", "111"),
    "7": ("111", "001", "010", "010", "010"),
    "8": ("111", "101", "111", "101", "111"),
    "9": ("111", "101", "111", "001", "111"),
    ".": ("000", "000", "000", "000", "010"),
    "-": ("000", "000", "111", "000", "000"),
}


@dataclass(frozen=True)
class MapsLayout:
    """Where everything lies in the image: tile ``k`` of the mean row starts at ``(mean_row, cols[k])``, of the
    tSNR row at ``(tsnr_row, cols[k])``; each tile is ``tile`` = ``(rows, cols)`` pixels, ``scale`` per voxel;
    the colour bar spans rows ``bar_rows`` at columns ``bar_cols`` (top = ``hi``, bottom = 0)."""

    shape: tuple[int, int, int]
    scale: int
    tile: tuple[int, int]
    cols: tuple[int, ...]
    mean_row: int
    tsnr_row: int
    bar_rows: tuple[int, int]
    bar_cols: tuple[int, int]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(H, W, 3)`` of the rendered image."""
        h = self.tsnr_row + self.tile[0] + _GAP + 12  # room under the bar for its lower label
        w = self.bar_cols[1] + 4 + _LABEL_W
        return h, w, 3

    def pixel(self, row: str, k: int, x: int, y: int) -> tuple[int, int]:
        """The top-left pixel ``(r, c)`` of voxel ``(x, y)`` in tile ``k`` of ``row`` (``"mean"`` or ``"tsnr"``)."""
        r0 = self.mean_row if row == "mean" else self.tsnr_row
        ny = self.shape[1]
        return r0 + (ny - 1 - y) * self.scale, self.cols[k] + x * self.scale


def maps_layout(shape: tuple[int, ...], n_slices: int) -> MapsLayout:
    """The layout of the image for a volume of ``shape`` ``(X, Y, Z)`` and ``n_slices`` slices."""
    nx, ny = int(shape[0]), int(shape[1])
    scale = max(1, int(round(_TILE_PX / max(nx, ny))))
    th, tw = ny * scale, nx * scale
    cols = tuple(_GAP + k * (tw + _GAP) for k in range(n_slices))
    mean_row = _GAP + 10  # room above the bar for its upper label
    tsnr_row = mean_row + th + _GAP
    bar_c = _GAP + n_slices * (tw + _GAP) + 4
    return MapsLayout(
        (nx, ny, int(shape[2])),
        scale,
        (th, tw),
        cols,
        mean_row,
        tsnr_row,
        (tsnr_row, tsnr_row + th),
        (bar_c, bar_c + _BAR_W),
    )


def choose_slices(mask: np.ndarray | None, shape: tuple[int, ...], n: int = 5) -> list[int]:
    """``n`` axial slices (fewer when there are fewer) spread evenly over the mask's extent in z (the whole
    volume's when the mask is None or empty), the extremes left out: the slices that show coverage best."""
    nz = int(shape[2])
    z0, z1 = 0, nz - 1
    if mask is not None:
        zs = np.flatnonzero(np.asarray(mask).reshape(-1, nz).any(axis=0) if np.ndim(mask) == 3 else [])
        if zs.size:
            z0, z1 = int(zs[0]), int(zs[-1])
    count = min(int(n), z1 - z0 + 1)
    if count <= 0:
        return []
    picks = np.linspace(z0, z1, count + 2)[1:-1] if z1 - z0 + 1 > count else np.arange(z0, z1 + 1)
    return sorted({int(round(z)) for z in picks})


def _nice_ceil(v: float) -> float:
    """The smallest round number (1, 1.5, 2, 2.5, 3, 4, 5, 6 or 8 times a power of ten) >= ``v`` (``v`` > 0)."""
    e = 10.0 ** np.floor(np.log10(v))
    for m in (1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0):
        if m * e >= v * (1 - 1e-12):
            return float(m * e)
    return float(10 * e)  # pragma: no cover - the loop always returns


def tsnr_scale(tsnr: np.ndarray, mask: np.ndarray | None = None) -> tuple[float, float]:
    """The colour scale ``(0, hi)`` of the tSNR map: ``hi`` is the 98th percentile of the finite tSNR in the mask
    (everywhere without one) rounded up to a round number (1, 1.5, 2, 2.5, 3, 4, 5, 6, 8 times a power of ten); ``(0, 1)`` when none is positive."""
    t = np.asarray(tsnr, dtype=np.float64)
    sel = t[np.asarray(mask, bool)] if mask is not None else t.ravel()
    sel = sel[np.isfinite(sel)]
    p = float(np.percentile(sel, 98)) if sel.size else 0.0
    return (0.0, _nice_ceil(p) if p > 0 else 1.0)


def _grey(mean: np.ndarray) -> np.ndarray:
    """The mean EPI as grey levels 0-255: 0 to its 99.5th percentile of finite positive values."""
    m = np.nan_to_num(np.asarray(mean, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    pos = m[m > 0]
    hi = float(np.percentile(pos, 99.5)) if pos.size else 1.0
    return np.clip(np.rint(m * (255.0 / (hi if hi > 0 else 1.0))), 0, 255).astype(np.uint8)


def _colour(tsnr: np.ndarray, hi: float) -> np.ndarray:
    """The colours of the tSNR through :data:`VIRIDIS`, 0 to ``hi``; a voxel without a finite tSNR is black."""
    t = np.asarray(tsnr, dtype=np.float64)
    finite = np.isfinite(t)
    idx = np.clip(np.rint(np.where(finite, t, 0.0) * (255.0 / hi)), 0, 255).astype(np.intp)
    rgb = VIRIDIS[idx]
    rgb[~finite] = 0
    return rgb


def _boundary(m2: np.ndarray) -> np.ndarray:
    """Voxels of a 2-D mask with a 4-neighbour outside it (the slice's edge counts as outside)."""
    p = np.pad(m2, 1, constant_values=False)
    inner = p[1:-1, 1:-1] & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    return m2 & ~inner


def _tile(slice2: np.ndarray, scale: int) -> np.ndarray:
    """An ``(X, Y[, 3])`` slice as image rows (y upwards) and columns (x), each voxel ``scale`` pixels wide."""
    img = np.flip(np.swapaxes(slice2, 0, 1), axis=0)
    return np.repeat(np.repeat(img, scale, axis=0), scale, axis=1)


def _text(img: np.ndarray, r: int, c: int, s: str, size: int = 2) -> None:
    """Write ``s`` (digits, ``.``, ``-``) with its top-left corner at ``(r, c)``, clipped to the image."""
    for ch in s:
        glyph = _GLYPHS.get(ch)
        if glyph is not None:
            on = np.array([[b == "1" for b in row] for row in glyph])
            block = np.repeat(np.repeat(on, size, axis=0), size, axis=1)
            sub = img[r : r + block.shape[0], c : c + block.shape[1]]
            sub[block[: sub.shape[0], : sub.shape[1]]] = _TEXT
        c += 4 * size


def _label(v: float) -> str:
    return np.format_float_positional(v, precision=4, trim="-")


def render_maps(
    mean: np.ndarray, tsnr: np.ndarray, mask: np.ndarray | None, slices: list[int] | None = None
) -> np.ndarray:
    """The QA maps as an RGB image ``uint8 [H, W, 3]`` (see the module's notes for the layout).

    Parameters
    ----------
    mean : ndarray, shape (X, Y, Z)
        The run's mean EPI so far (NaN drawn black).
    tsnr : ndarray, shape (X, Y, Z)
        The running voxelwise tSNR (NaN where not yet defined: drawn black).
    mask : ndarray of bool, shape (X, Y, Z), or None
        The bundle's mask on the same grid: its outline is drawn over the mean in :data:`OUTLINE`.
    slices : list of int, optional
        The axial slices to show (default :func:`choose_slices` of the mask: 5 over its extent in z).

    Returns
    -------
    ndarray of uint8, shape (H, W, 3)
    """
    mean = np.asarray(mean)
    tsnr = np.asarray(tsnr)
    if mean.ndim != 3 or tsnr.shape != mean.shape:
        raise ValueError(f"mean and tsnr must be 3-D of one shape, got {mean.shape} and {tsnr.shape}")
    m = None if mask is None else np.asarray(mask) != 0
    if m is not None and m.shape != mean.shape:
        raise ValueError(f"the mask's shape {m.shape} is not the volume's {mean.shape}")
    zs = choose_slices(m, mean.shape) if slices is None else [int(z) for z in slices]
    if not zs or any(not 0 <= z < mean.shape[2] for z in zs):
        raise ValueError(f"slices {zs} are not within the volume's {mean.shape[2]} slices")
    lay = maps_layout(mean.shape, len(zs))
    img = np.empty(lay.image_shape, np.uint8)
    img[:] = _BACKGROUND
    grey = _grey(mean)
    _, hi = tsnr_scale(tsnr, m)
    colour = _colour(tsnr, hi)
    th, tw = lay.tile
    for k, z in enumerate(zs):
        g = np.repeat(grey[:, :, z, None], 3, axis=2)
        if m is not None:
            g[_boundary(m[:, :, z])] = OUTLINE
        c = lay.cols[k]
        img[lay.mean_row : lay.mean_row + th, c : c + tw] = _tile(g, lay.scale)
        img[lay.tsnr_row : lay.tsnr_row + th, c : c + tw] = _tile(colour[:, :, z], lay.scale)
    (r0, r1), (c0, c1) = lay.bar_rows, lay.bar_cols
    ramp = VIRIDIS[np.rint(np.linspace(255, 0, r1 - r0)).astype(np.intp)]
    img[r0:r1, c0:c1] = ramp[:, None, :]
    _text(img, r0 - 11, c0, _label(hi))
    _text(img, r1 + 1, c0, "0")
    return img
