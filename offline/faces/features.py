"""Facial features for the renderer: cheeks, age lines, nose, beard, mouth, eyes, brows and glasses.

Each is drawn on a crop of the canvas (``Canvas.view``) that bounds it in every face of the batch. Symmetric
features use the mirrored coordinate ``xm`` (distance from the feature midline, compressed on the side the head
turns away from).
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from offline.faces.params import BEARD_THRESHOLD, GLASSES_THRESHOLD, LIPSTICK_THRESHOLD, OPEN_MOUTH_THRESHOLD, col
from offline.faces.sdf import F32, Canvas, blend, box, circle, coverage, ellipse, lerp_palette, segment, shade

_IRIS = np.array(
    [[0.30, 0.50, 0.75], [0.32, 0.52, 0.35], [0.50, 0.40, 0.22], [0.35, 0.20, 0.10], [0.12, 0.08, 0.06]], F32
)
_FRAMES = np.array([[0.05, 0.05, 0.06], [0.35, 0.20, 0.10], [0.75, 0.62, 0.30]], F32)
_WHITE = np.array([0.95, 0.94, 0.92], F32)
_LASH = np.array([0.08, 0.06, 0.05], F32)
_BLUSH = np.array([0.85, 0.35, 0.35], F32)
_LIPSTICK = np.array([[0.75, 0.2, 0.3], [0.7, 0.1, 0.15]], F32)


def draw_features(cv: Canvas, g: SimpleNamespace) -> None:
    """Cheeks, age lines, nose, beard, mouth, eyes and brows, in that order."""
    px, p = cv.px, g.p
    # Cheeks, warmer with a smile.
    v = cv.view(g.eye_y - 0.05, g.eye_y + 0.5, -0.85, 0.85)
    blush = coverage(ellipse(v.xm, v.y, 0.25, g.eye_y + 0.24, 0.09, 0.06), px, 0.3) * (0.06 + 0.14 * g.smile)
    blend(v.img, blush, _BLUSH)
    # Forehead lines with age.
    v = cv.view(g.eye_y - 0.42, g.eye_y - 0.2, -0.35, 0.35)
    for k in range(2):
        yline = g.eye_y - 0.27 - 0.06 * k + 0.6 * (v.x - g.fx) ** 2
        d_line = np.maximum(np.abs(v.y - yline) - 0.005, np.abs(v.x - g.fx) - 0.2)
        shade(v.img, coverage(d_line, px, 0.01) * 0.35 * g.old, 0.8)

    # Nose: bridge shadow on the side away from the light, tip shadow and highlight, nostrils.
    v = cv.view(g.eye_y - 0.06, g.nose_y + 0.12, -0.35, 0.35)
    x, y = v.x, v.y
    d_bridge = segment(x, y, g.fx + g.ls * 0.03, g.eye_y + 0.05, g.fx + g.ls * g.nw * 0.9, g.nose_y - 0.03, 0.012)
    shade(v.img, coverage(d_bridge, px, 0.1) * 0.5, 0.82)
    shade(v.img, coverage(ellipse(x, y, g.fx, g.nose_y + 0.02, g.nw * 1.1, 0.03), px, 0.1) * 0.45, 0.8)
    shade(v.img, coverage(circle(x, y, g.fx - g.ls * 0.01, g.nose_y - 0.015, 0.022), px, 0.08) * 0.6, 1.12)
    nostril = ellipse(v.xm, y, g.nw * 0.55, g.nose_y + 0.012, 0.017 + 0.008 * p("nose_width"), 0.011)
    shade(v.img, coverage(nostril, px, 0.01), 0.55)
    # Smile and age folds from the nose wings to the corners of the mouth.
    v = cv.view(g.nose_y - 0.06, g.mouth_y + 0.08, -0.55, 0.55)
    fold = np.maximum(g.old, np.clip((g.smile - 0.5) * 2.0, 0.0, 1.0))
    d_fold = segment(v.xm, v.y, g.nw + 0.035, g.nose_y, g.mw + 0.035, g.mouth_y + 0.02, 0.004)
    shade(v.img, coverage(d_fold, px, 0.05) * 0.35 * fold, 0.8)

    _beard(cv, g)
    _mouth(cv, g)
    _eyes(cv, g)


def _beard(cv: Canvas, g: SimpleNamespace) -> None:
    """Beard and moustache: the lower face below a cheek line that rises into sideburns."""
    p = g.p
    on = p("beard") > BEARD_THRESHOLD
    if not on.any():
        return
    v = cv.view(g.eye_y + 0.05, g.b + 0.1, -0.8, 0.8)
    density = on * (0.35 + 0.6 * np.clip((p("beard") - BEARD_THRESHOLD) / (1 - BEARD_THRESHOLD), 0.0, 1.0))
    rise = np.clip((v.xm - 0.55 * g.a) / (0.45 * g.a), 0.0, 1.0)
    bump = np.clip(v.xm / (0.35 * g.a), 0.0, 1.0) * (1.0 - rise)
    top = g.nose_y + 0.03 + 0.07 * bump - (g.nose_y + 0.03 - (g.eye_y + 0.1)) * rise * rise
    d_beard = np.maximum(v.d_face - 0.02, top - v.y)
    blend(v.img, coverage(d_beard, cv.px, 0.04) * density, g.hair * 0.8)


def _mouth(cv: Canvas, g: SimpleNamespace) -> None:
    """Lips as a lens along a curved centre line; an open smile shows teeth."""
    p = g.p
    v = cv.view(g.mouth_y - 0.12, g.mouth_y + 0.15, g.fx - g.mw, g.fx + g.mw)
    x, y = v.x, v.y
    t = np.clip((x - g.fx) / g.mw, -1.0, 1.0)
    q = np.sqrt(1.0 - t * t)
    curv = (g.smile - 0.4) * 0.1
    yc = g.mouth_y - curv * (t * t - 0.3)
    lip = (0.016 + 0.02 * p("lip_fullness")) * (1.0 - 0.3 * g.old) * (1.0 - 0.25 * g.m)
    opening = (g.smile > OPEN_MOUTH_THRESHOLD) * (0.02 + 0.15 * (g.smile - OPEN_MOUTH_THRESHOLD))
    width = np.abs(x - g.fx) - g.mw
    d_lips = np.maximum(width, np.maximum(yc - (lip + 0.4 * opening) * q - y, y - yc - (1.3 * lip + opening) * q))
    lip_colour = g.raw[:, col("lip_colour")]
    natural = g.skin * np.array([0.85, 0.6, 0.6], F32)
    colour = np.where((lip_colour > LIPSTICK_THRESHOLD)[:, None], lerp_palette(lip_colour, _LIPSTICK), natural)
    blend(v.img, coverage(d_lips, cv.px), colour)
    is_open = opening > 0
    if is_open.any():
        d_inner = np.maximum(width + 0.1 * g.mw, np.maximum(yc - 0.4 * opening * q - y, y - yc - opening * q))
        blend(v.img, coverage(d_inner, cv.px) * is_open, np.array([0.3, 0.08, 0.08], F32))
        d_teeth = np.maximum(d_inner, y - yc - 0.35 * opening * q)
        blend(v.img, coverage(d_teeth, cv.px) * is_open, np.array([0.95, 0.93, 0.87], F32))
    d_seam = np.maximum(np.abs(y - yc) - 0.005, width + 0.03)
    shade(v.img, coverage(d_seam, cv.px) * (opening <= 0), 0.45)


def _eyes(cv: Canvas, g: SimpleNamespace) -> None:
    """Socket shadow, white, iris, pupil, lash line, glint; then the brows."""
    p, px = g.p, cv.px
    v = cv.view(g.eye_y - 0.3, g.eye_y + 0.25, -0.85, 0.85)
    xm, y = v.xm, v.y
    shade(v.img, coverage(ellipse(xm, y, g.es, g.eye_y - 0.015, g.ea * 1.45, g.eb * 2.2), px, 0.2) * 0.5, 0.86)
    d_white = ellipse(xm, y, g.es, g.eye_y, g.ea, g.eb)
    a_white = coverage(d_white, px)
    blend(v.img, a_white, _WHITE)
    ir = g.ea * 0.48
    iris = lerp_palette(g.raw[:, col("iris_colour")], _IRIS)
    blend(v.img, np.minimum(coverage(circle(xm, y, g.es, g.eye_y, ir), px), a_white), iris)
    blend(v.img, np.minimum(coverage(circle(xm, y, g.es, g.eye_y, ir * 0.45), px), a_white), iris * 0.15)
    lash = np.maximum(np.abs(d_white + 0.004) - 0.006 - 0.005 * (1 - g.m), y - g.eye_y + g.eb * 0.2)
    blend(v.img, coverage(lash, px), _LASH)
    glint = circle(xm, y, g.es - 0.3 * ir * v.side, g.eye_y - ir * 0.35, ir * 0.22)
    blend(v.img, coverage(glint, px) * a_white, np.ones(3, F32))

    # Brows: arched capsules, tilted by brow_angle.
    bw = g.ea * 1.25
    tilt = (p("brow_angle") - 0.5) * 0.07
    thick = 0.01 + 0.016 * p("brow_thickness") + 0.008 * g.m
    v = cv.view(g.brow_y - 0.12, g.brow_y + 0.1, -0.8, 0.8)
    xm = v.xm
    yb = v.y + 0.025 * np.clip(1.0 - ((xm - g.es) / bw) ** 2, 0.0, 1.0)
    d_brow = segment(xm, yb, g.es - bw, g.brow_y + tilt, g.es + bw, g.brow_y - tilt * 0.5, thick)
    blend(v.img, coverage(d_brow, px), g.hair * 0.75)


def draw_glasses(cv: Canvas, g: SimpleNamespace) -> None:
    """Rounded frames with a faint lens tint, a bridge and temples to the ears."""
    p = g.p
    on = (p("glasses") > GLASSES_THRESHOLD).astype(F32)
    if not on.any():
        return
    style = p("glasses_style")
    gw, gh = g.ea * 1.5, g.ea * (1.0 + 0.3 * style)
    v = cv.view(g.eye_y - gh - 0.04, g.eye_y + gh + 0.05, -1.4 * g.a - 0.12, 1.4 * g.a + 0.12)
    xm, y = v.xm, v.y
    corner = gh * (0.3 + 0.7 * ((style * 3.0) % 1.0))
    d_lens = box(xm, y, g.es, g.eye_y + 0.01, gw, gh, corner)
    shade(v.img, coverage(d_lens, cv.px) * on * 0.5, 1.1)
    th = 0.009 + 0.006 * (style < 0.66)
    frame = _FRAMES[np.minimum((g.raw[:, col("glasses_style")] * 3).astype(int), 2)]
    d_frame = np.minimum(np.abs(d_lens) - th, segment(xm, y, -0.01, g.eye_y - 0.01, g.es - gw, g.eye_y - 0.01, th))
    d_frame = np.minimum(d_frame, segment(xm, y, g.es + gw, g.eye_y - 0.01, g.a * 1.02, g.eye_y + 0.01, th * 0.8))
    blend(v.img, coverage(d_frame, cv.px) * on, frame)
