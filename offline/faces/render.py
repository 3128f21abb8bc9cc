"""The face renderer: parameters [B, P] -> RGB images [B, S, S, 3], vectorised over faces and pixels.

Layers are painted back to front: background, clothes, hair behind the head, neck, ears, the shaded face,
then the features (``_faces_features``), the hair in front and the glasses. Each is an anti-aliased
signed-distance shape computed only on the crop of the image it can touch.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from offline.faces.features import draw_features, draw_glasses
from offline.faces.params import BANGS_THRESHOLD, HAIR_BANDS, PARAM_NAMES, col
from offline.faces.sdf import F32, Canvas, blend, box, circle, coverage, ellipse, hsv_to_rgb, lerp_palette, shade

_SKIN = np.array(
    [[0.97, 0.86, 0.78], [0.93, 0.76, 0.64], [0.82, 0.61, 0.46], [0.62, 0.42, 0.28], [0.40, 0.26, 0.17]], F32
)
_HAIR = (  # one palette per band: black, brown, blond, grey
    np.array([[0.05, 0.04, 0.04], [0.17, 0.12, 0.09]], F32),
    np.array([[0.24, 0.14, 0.08], [0.46, 0.25, 0.12], [0.55, 0.36, 0.20]], F32),
    np.array([[0.70, 0.53, 0.30], [0.86, 0.71, 0.44], [0.96, 0.88, 0.62]], F32),
    np.array([[0.50, 0.50, 0.50], [0.90, 0.89, 0.87]], F32),
)


def hair_rgb(hc: np.ndarray) -> np.ndarray:
    """Hair colours [n, 3] for hair_colour values [n] (each band has its own palette)."""
    edges = (0.0, *HAIR_BANDS, 1.0)
    out = np.zeros((len(hc), 3), F32)
    for k, pal in enumerate(_HAIR):
        lo, hi = edges[k], edges[k + 1]
        sel = (hc >= lo) & ((hc < hi) if k < 3 else (hc <= hi))
        if sel.any():
            out[sel] = lerp_palette((hc[sel] - lo) / (hi - lo), pal)
    return out


def _geometry(params: np.ndarray) -> SimpleNamespace:
    """Per-face geometry and colours: arrays [B, 1, 1] (shapes) and [B, 3] (colours)."""

    def p(name: str) -> np.ndarray:
        return params[:, col(name), None, None]

    g = SimpleNamespace(p=p, raw=params, n=params.shape[0])
    g.m = np.clip((p("masculinity") - 0.5) * 4.0 + 0.5, 0.0, 1.0)  # soft male flag for geometry
    g.old = np.clip((p("age") - 0.55) / 0.45, 0.0, 1.0)
    g.smile = p("smile")
    g.a = 0.47 + 0.10 * p("face_width") + 0.04 * g.m
    g.b = 0.62 + 0.09 * p("face_length")
    g.taper = 0.05 + 0.28 * p("jaw_taper") - 0.12 * g.m
    g.fx = (p("yaw") - 0.5) * 0.16
    g.eye_y = -0.05 + 0.07 * (p("eye_height") - 0.5)
    g.lx = (p("light_angle") - 0.5) * 1.6
    g.ls = np.clip((0.5 - p("light_angle")) * 4.0, -1.0, 1.0)
    g.ea = 0.07 + 0.035 * p("eye_size")
    g.eb = g.ea * (0.42 + 0.2 * p("eye_size")) * (1.0 - 0.35 * np.clip((g.smile - 0.6) / 0.4, 0.0, 1.0))
    g.es = 0.16 + 0.07 * p("eye_spacing")
    g.brow_y = g.eye_y - g.eb - 0.055 - 0.02 * p("eye_size")
    g.nose_y = g.eye_y + 0.17 + 0.09 * p("nose_length")
    g.nw = 0.045 + 0.04 * p("nose_width")
    g.mouth_y = g.nose_y + 0.12 + 0.03 * (p("face_length") - 0.5)
    g.mw = 0.1 + 0.08 * p("mouth_width")
    g.vol = 0.02 + 0.09 * p("hair_volume")
    g.ah, g.bh, g.cyh = g.a * 1.04 + g.vol, g.b * 0.98 + g.vol + 0.02, -0.04 - 0.02 * p("hair_volume")
    g.skin = lerp_palette(params[:, col("skin_tone")], _SKIN)
    g.hair = hair_rgb(params[:, col("hair_colour")])
    bg_v = 0.35 + 0.55 * params[:, col("background_value")]
    g.bg = hsv_to_rgb(params[:, col("background_hue")], np.full(g.n, 0.28, F32), bg_v)
    ch = params[:, col("clothes_hue")]
    g.clothes = hsv_to_rgb(ch, 0.25 + 0.4 * ((ch * 5.0) % 1.0), 0.22 + 0.55 * ((ch * 7.0) % 1.0))
    return g


def render(params: np.ndarray, size: int) -> np.ndarray:
    """Render faces; see :func:`offline.faces.render_faces`."""
    params = np.asarray(params, dtype=F32)
    if params.ndim != 2 or params.shape[1] != len(PARAM_NAMES):
        raise ValueError(f"params must have shape [n, {len(PARAM_NAMES)}], got {params.shape}")
    g = _geometry(params)
    p = g.p
    cv = Canvas(
        size,
        tx=(p("shift_x") - 0.5) * 0.16,
        ty=(p("shift_y") - 0.5) * 0.12 + 0.04,
        zoom=1.14 + 0.14 * (p("scale") - 0.5),
        angle=(p("roll") - 0.5) * 0.26,
    )
    x, y = cv.maps["x"], cv.maps["y"]
    img = cv.img
    img[:] = g.bg.T[:, :, None, None]
    img *= (1.08 - 0.08 * (cv.gv + 1.0)).astype(F32)

    # Per-pixel maps shared by several layers.
    yl = np.maximum(y, 0.0)
    cv.maps["d_face"] = ellipse(x, y, 0.0, 0.0, g.a * (1.0 - g.taper * yl * yl / (g.b * g.b)), g.b)
    side = np.sign(x - g.fx)
    cv.maps["side"] = side
    cv.maps["xm"] = np.abs(x - g.fx) * (1.0 + (p("yaw") - 0.5) * 0.5 * side)
    tex = (0.95 + 0.05 * np.sin(60.0 * x + 6.0 * np.sin(5.0 * y))).astype(F32)
    hair_shade = tex * (0.9 + 0.18 * np.clip(g.lx * x - 0.4 * y, -1.0, 1.0))

    # Clothes and shoulders, with a round neckline.
    v = cv.view(0.8, 2.5)
    if v is not None:
        d_cl = np.maximum(
            ellipse(v.x, v.y, 0.0, 1.45, 1.0 + 0.1 * g.m, 0.58),
            -circle(v.x, v.y, 0.0, 0.86, 0.17 + 0.05 * p("clothes_hue")),
        )
        blend(v.img, coverage(d_cl, cv.px), g.clothes)

    # Hair behind the head: a cap, plus a curtain for long hair.
    length = p("hair_length")
    d_cap = ellipse(x, y, 0.0, g.cyh, g.ah, g.bh)
    bottom = -0.1 + np.maximum(length - 0.22, 0.0) * 1.55
    hh = np.maximum((bottom + 0.1) / 2.0, 1e-3)
    d_back = np.minimum(d_cap, box(x, y, 0.0, -0.1 + hh, g.ah * (0.96 + 0.12 * length), hh, np.minimum(0.12, hh)))
    blend(img, coverage(d_back, cv.px), g.hair * 0.72, hair_shade)

    # Neck (in the shadow of the chin) and ears.
    v = cv.view(0.35, 2.5, -0.4, 0.4)
    if v is not None:
        d_neck = box(v.x, v.y, 0.0, g.b * 0.7 + 0.3, 0.18 + 0.06 * g.m, 0.32, 0.06)
        blend(v.img, coverage(d_neck, cv.px), g.skin * 0.78)
    ear_x = g.a * 0.98 + 0.015
    v = cv.view(g.eye_y - 0.1, g.eye_y + 0.26)
    if v is not None:
        ax = np.abs(v.x)
        blend(v.img, coverage(ellipse(ax, v.y, ear_x, g.eye_y + 0.08, 0.065, 0.12), cv.px), g.skin * 0.9)
        shade(v.img, coverage(ellipse(ax, v.y, ear_x + 0.012, g.eye_y + 0.08, 0.03, 0.07), cv.px, 0.06), 0.85)

    # Face with Lambert shading on an ellipsoid.
    v = cv.view(-g.b, g.b, -1.1 * g.a, 1.1 * g.a)
    nx, ny = v.x / g.a, v.y / g.b
    nz = np.sqrt(np.maximum(1.0 - nx * nx - ny * ny, 0.02))
    lit = (nx * g.lx - 0.35 * ny + 0.85 * nz) / np.sqrt(g.lx * g.lx + 0.35**2 + 0.85**2)
    blend(v.img, coverage(v.d_face, cv.px), g.skin, 0.7 + 0.38 * np.clip(lit, 0.0, 1.0))

    draw_features(cv, g)

    # Hair in front: the cap above a hairline (parting, bangs, sideburns or long sides).
    part = (p("hair_parting") - 0.5) * 2.0
    bangs = p("bangs") > BANGS_THRESHOLD
    y0 = np.where(bangs, g.brow_y - 0.06, -0.42 + 0.1 * g.m * g.old)
    fringe = bangs * 0.015 * np.sin(70.0 * x)
    notch = 0.08 * np.clip(1.0 - np.abs(x - part * 0.22) / 0.07, 0.0, 1.0) * ~bangs
    drop = (g.eye_y + 0.08 - y0) + 0.45 * np.maximum(length - 0.3, 0.0)
    sides = np.clip((np.abs(x) - 0.5 * g.a) / (0.5 * g.a), 0.0, 1.0)
    yh = y0 + 0.07 * part * x / g.a - notch + fringe + drop * sides * sides
    d_front = np.maximum(d_cap, (y - yh) * 0.8)
    blend(img, coverage(d_front, cv.px), g.hair, hair_shade)

    draw_glasses(cv, g)
    np.clip(img, 0.0, 1.0, out=img)
    img *= 255.0
    img += 0.5
    return img.transpose(1, 2, 3, 0).astype(np.uint8)
