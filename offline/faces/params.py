"""The generative parameters of the procedural faces, how they are sampled and the attributes they imply.

Every parameter lies in [0, 1]. Sampling draws one uniform block ``rng.random((n, P))`` and reshapes a few
columns conditionally (men get shorter hair and may have beards, older faces are more often grey), so drawing
in batches gives exactly the sequence of drawing all at once. Attributes are thresholds on the parameters:
the renderer draws a beard, glasses or an open smile exactly when the attribute says so.
"""

from __future__ import annotations

import numpy as np

__all__ = ["PARAM_NAMES", "ATTRIBUTE_NAMES", "sample_params", "attributes_from_params", "HAIR_BANDS"]

PARAM_NAMES: tuple[str, ...] = (
    "masculinity",  # > 0.5: male (wider jaw, heavier brows, no lipstick)
    "age",  # wrinkles, thinner lips; < 0.6: Young
    "face_width",
    "face_length",
    "jaw_taper",  # 0: square jaw, 1: pointed chin
    "skin_tone",  # 0: pale ... 1: dark
    "hair_colour",  # bands: black, brown, blond, grey (HAIR_BANDS)
    "hair_length",  # 0: cropped ... 1: below the shoulders
    "hair_volume",
    "hair_parting",  # 0: parted left, 0.5: centre, 1: parted right
    "bangs",  # > 0.7: a fringe over the forehead
    "eye_size",
    "eye_spacing",
    "eye_height",
    "iris_colour",  # blue, green, hazel, brown, dark
    "brow_thickness",
    "brow_angle",
    "nose_length",
    "nose_width",
    "mouth_width",
    "smile",  # < 0.35 slight frown, > 0.55 Smiling, > 0.78 open smile with teeth
    "lip_fullness",
    "lip_colour",  # > 0.7: lipstick
    "glasses",  # > 0.8: Eyeglasses
    "glasses_style",  # frame shape and colour
    "beard",  # > 0.6: beard (its density grows with the value)
    "background_hue",
    "background_value",
    "clothes_hue",
    "light_angle",  # 0: lit from the left, 1: from the right
    "yaw",  # 0.5: frontal
    "roll",  # 0.5: upright
    "shift_x",
    "shift_y",
    "scale",
)

ATTRIBUTE_NAMES: tuple[str, ...] = (
    "Male",
    "Smiling",
    "Eyeglasses",
    "Black_Hair",
    "Blond_Hair",
    "Brown_Hair",
    "Gray_Hair",
    "No_Beard",
    "Bangs",
    "Wearing_Lipstick",
    "Pale_Skin",
    "Big_Nose",
    "Narrow_Eyes",
    "Young",
    "Mouth_Slightly_Open",
)

#: Upper edges of the hair colour bands: black < 0.32 <= brown < 0.62 <= blond < 0.86 <= grey.
HAIR_BANDS = (0.32, 0.62, 0.86)
_IDX = {name: i for i, name in enumerate(PARAM_NAMES)}

SMILE_THRESHOLD = 0.55
OPEN_MOUTH_THRESHOLD = 0.78
GLASSES_THRESHOLD = 0.8
BEARD_THRESHOLD = 0.6
BANGS_THRESHOLD = 0.7
LIPSTICK_THRESHOLD = 0.7


def col(name: str) -> int:
    """Column index of a parameter."""
    return _IDX[name]


def sample_params(n: int, rng: np.random.Generator) -> np.ndarray:
    """Draw ``n`` faces' parameters.

    Parameters
    ----------
    n : int
        Number of faces.
    rng : numpy.random.Generator
        Source of randomness; consumes exactly ``n * len(PARAM_NAMES)`` doubles.

    Returns
    -------
    params : ndarray float32 [n, P]
        Each in [0, 1], columns in the order of ``PARAM_NAMES``.
    """
    u = rng.random((int(n), len(PARAM_NAMES)))
    p = u.copy()
    male = u[:, col("masculinity")] > 0.5
    # Men mostly short hair, women mostly long; a mild overlap either way.
    hl = u[:, col("hair_length")]
    p[:, col("hair_length")] = np.where(male, 0.45 * hl**1.5, 0.25 + 0.75 * hl)
    # Beards on about half of the men, never on women; lipstick mostly on women.
    p[:, col("beard")] = np.where(male, u[:, col("beard")] * 0.999, 0.55 * u[:, col("beard")])
    p[:, col("lip_colour")] = np.where(male, 0.6 * u[:, col("lip_colour")], u[:, col("lip_colour")])
    p[:, col("bangs")] = np.where(male, 0.85 * u[:, col("bangs")], u[:, col("bangs")])
    # Grey hair with age: the older the face, the likelier the grey band.
    age = u[:, col("age")]
    grey = u[:, col("hair_colour")] < 0.35 * np.clip((age - 0.45) / 0.55, 0.0, 1.0) ** 1.5
    hc = u[:, col("hair_colour")]
    p[:, col("hair_colour")] = np.where(grey, HAIR_BANDS[2] + (1 - HAIR_BANDS[2]) * hc / 0.35, HAIR_BANDS[2] * hc)
    # Pose: mostly frontal, a little jitter (central values most likely).
    for name in ("yaw", "roll", "shift_x", "shift_y", "scale"):
        p[:, col(name)] = 0.5 + 0.5 * np.sin(np.pi * (u[:, col(name)] - 0.5)) ** 3
    return np.clip(p, 0.0, 1.0).astype(np.float32)


def attributes_from_params(params: np.ndarray) -> np.ndarray:
    """CelebA-style attributes (1 present, -1 absent) implied by the parameters.

    Parameters
    ----------
    params : ndarray [n, P]
        As returned by :func:`sample_params`.

    Returns
    -------
    attributes : ndarray int8 [n, A]
        Columns in the order of ``ATTRIBUTE_NAMES``.
    """
    p = np.asarray(params, dtype=np.float32)
    if p.ndim != 2 or p.shape[1] != len(PARAM_NAMES):
        raise ValueError(f"params must have shape [n, {len(PARAM_NAMES)}], got {p.shape}")
    hc = p[:, col("hair_colour")]
    flags = {
        "Male": p[:, col("masculinity")] > 0.5,
        "Smiling": p[:, col("smile")] > SMILE_THRESHOLD,
        "Eyeglasses": p[:, col("glasses")] > GLASSES_THRESHOLD,
        "Black_Hair": hc < HAIR_BANDS[0],
        "Brown_Hair": (hc >= HAIR_BANDS[0]) & (hc < HAIR_BANDS[1]),
        "Blond_Hair": (hc >= HAIR_BANDS[1]) & (hc < HAIR_BANDS[2]),
        "Gray_Hair": hc >= HAIR_BANDS[2],
        "No_Beard": p[:, col("beard")] <= BEARD_THRESHOLD,
        "Bangs": p[:, col("bangs")] > BANGS_THRESHOLD,
        "Wearing_Lipstick": p[:, col("lip_colour")] > LIPSTICK_THRESHOLD,
        "Pale_Skin": p[:, col("skin_tone")] < 0.15,
        "Big_Nose": p[:, col("nose_width")] > 0.75,
        "Narrow_Eyes": p[:, col("eye_size")] < 0.2,
        "Young": p[:, col("age")] < 0.6,
        "Mouth_Slightly_Open": p[:, col("smile")] > OPEN_MOUTH_THRESHOLD,
    }
    out = np.stack([flags[name] for name in ATTRIBUTE_NAMES], axis=1)
    return np.where(out, 1, -1).astype(np.int8)
