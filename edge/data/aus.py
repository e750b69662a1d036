"""FACS action units as smooth displacement fields on the canonical aligned crop.

Each AU is a sum of anisotropic Gaussian "skin patches", each moving in one direction, anchored to the
face by the eye centres of `edge.perception.geometry`: a patch centre is given in eye units (u, v) =
((x - eye midpoint x) / inter-ocular distance, (y - eye line y) / inter-ocular distance), so the layout
follows any face that is aligned by its eyes. Bilateral AUs list the image-left patch and are mirrored.

Convention (the one sign convention of the synthetic source): a field d (2, H, W) in crop px gives, at
crop pixel x, how far the skin seen at x in the onset frame has moved by the apex: skin at x moves to
x + d(x). It is rendered with an inverse warp, apex(x) = onset(x - d(x)) (cv2.remap, bilinear, so the
shift is sub-pixel exact for smooth fields), which makes the onset->apex optical flow approximately d.
Channel 0 is dx (right positive), channel 1 is dy (down positive). Amplitudes are in px of a 128-px crop.

Directions follow the FACS manual's appearance changes (Ekman, Friesen & Hager 2002): e.g. AU1 raises the
inner brow, AU4 lowers and draws the brows together, AU12 pulls the lip corners up and out.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from edge.perception import geometry


@dataclass(frozen=True)
class Patch:
    """One moving skin patch: centre (u, v) in eye units, sigma (su, sv) in eye units, direction (dx, dy)."""

    centre: tuple[float, float]
    sigma: tuple[float, float]
    direction: tuple[float, float]
    weight: float = 1.0


@dataclass(frozen=True)
class ActionUnit:
    number: int
    name: str
    patches: tuple[Patch, ...]
    regions: tuple[str, ...]  # edge.perception.geometry.ROIS (or CHEEK_ROIS) names where the motion lies
    bilateral: bool = True


# Cheeks are not a spotting ROI in edge.perception.geometry, but AU6 moves them (fractions of the crop side).
CHEEK_ROIS = {"cheek_left": (0.14, 0.40, 0.42, 0.62), "cheek_right": (0.58, 0.40, 0.86, 0.62)}

_S = 0.5 ** 0.5
# Patch centres: eyes at (-0.5, 0) and (0.5, 0); the mouth corners lie near (-0.4, 1.05), the chin (0, 1.5).
AUS: dict[int, ActionUnit] = {a.number: a for a in (
    ActionUnit(1, "inner brow raiser", (Patch((-0.20, -0.33), (0.11, 0.08), (0.0, -1.0)),),
               ("brow_left", "brow_right")),
    ActionUnit(2, "outer brow raiser", (Patch((-0.68, -0.30), (0.14, 0.08), (0.0, -1.0)),),
               ("brow_left", "brow_right")),
    ActionUnit(4, "brow lowerer", (Patch((-0.25, -0.28), (0.16, 0.08), (0.6, 0.8)),),
               ("brow_left", "brow_right")),
    ActionUnit(5, "upper lid raiser", (Patch((-0.5, -0.08), (0.12, 0.04), (0.0, -1.0)),),
               ("eye_left", "eye_right")),
    ActionUnit(6, "cheek raiser", (Patch((-0.55, 0.42), (0.18, 0.14), (0.0, -1.0)),
                                  Patch((-0.5, 0.10), (0.12, 0.04), (0.0, -1.0), 0.5)),
               ("cheek_left", "cheek_right", "eye_left", "eye_right")),
    ActionUnit(7, "lid tightener", (Patch((-0.5, 0.09), (0.13, 0.04), (0.0, -1.0)),),
               ("eye_left", "eye_right")),
    ActionUnit(9, "nose wrinkler", (Patch((-0.15, 0.55), (0.08, 0.12), (0.0, -1.0)),
                                   Patch((-0.12, -0.22), (0.08, 0.06), (0.0, 1.0), 0.4)),
               ("nose_left", "nose_right", "brow_left", "brow_right")),
    ActionUnit(10, "upper lip raiser", (Patch((-0.24, 0.88), (0.12, 0.06), (0.0, -1.0)),),
               ("mouth_left", "mouth_right", "nose_left", "nose_right")),
    ActionUnit(12, "lip corner puller", (Patch((-0.40, 1.05), (0.10, 0.08), (-0.8, -0.6)),),
               ("mouth_left", "mouth_right")),
    ActionUnit(14, "dimpler", (Patch((-0.42, 1.05), (0.08, 0.07), (1.0, 0.0)),),
               ("mouth_left", "mouth_right")),
    ActionUnit(15, "lip corner depressor", (Patch((-0.38, 1.10), (0.09, 0.08), (0.0, 1.0)),),
               ("mouth_left", "mouth_right")),
    ActionUnit(17, "chin raiser", (Patch((0.0, 1.48), (0.22, 0.10), (0.0, -1.0)),), ("chin",),
               bilateral=False),
    ActionUnit(20, "lip stretcher", (Patch((-0.40, 1.08), (0.10, 0.07), (-1.0, 0.0)),),
               ("mouth_left", "mouth_right")),
    ActionUnit(26, "jaw drop", (Patch((0.0, 1.50), (0.30, 0.14), (0.0, 1.0)),
                               Patch((0.0, 1.15), (0.20, 0.05), (0.0, 1.0), 0.6)),
               ("chin", "mouth_left", "mouth_right"),
               bilateral=False),
)}
# Blink (AU45): the upper lid slides down over the eye; a large (eye-height) shift, eye region only.
BLINK = ActionUnit(45, "blink", (Patch((-0.5, -0.03), (0.16, 0.06), (0.0, 1.0)),), ("eye_left", "eye_right"))
BLINK_AMPLITUDE_PX = 5.0  # about the palpebral fissure height of a 128-px crop
# What a real blink drags along: the orbicularis oculi that closes the lid also pulls the brow and the
# upper cheek down a little (a fraction of the lid's travel, the synthetic "drag" blink's `drag`).
BLINK_DRAG = ActionUnit(45, "blink drag", (Patch((-0.45, -0.30), (0.20, 0.08), (0.0, 1.0)),
                                           Patch((-0.50, 0.30), (0.18, 0.08), (0.0, 1.0), 0.8)),
                        ("brow_left", "brow_right", "cheek_left", "cheek_right"))
# Speech: the jaw drops and the lips part at syllable rate. Lower lip and chin go down; the mouth corners
# follow the jaw down and draw in a little (an open mouth is taller and narrower); the upper lip barely
# moves. Not an expression AU of `AUS`: speech is a nuisance the spotter must not report.
SPEECH = ActionUnit(26, "speech (jaw drop + lips part)", (
    Patch((0.0, 1.52), (0.30, 0.14), (0.0, 1.0)),          # chin
    Patch((0.0, 1.16), (0.22, 0.06), (0.0, 1.0), 0.9),     # lower lip
    Patch((0.0, 0.94), (0.18, 0.04), (0.0, -1.0), 0.15),   # upper lip, slightly up
), ("chin", "mouth_left", "mouth_right"), bilateral=False)
SPEECH_CORNERS = ActionUnit(25, "speech mouth corners", (Patch((-0.40, 1.06), (0.09, 0.08), (0.35, 0.94)),),
                            ("mouth_left", "mouth_right"))


def _eye_frame(size: int) -> tuple[float, float, float]:
    """(x of the eye midpoint, y of the eye line, inter-ocular distance) in px of a crop of side `size`."""
    e = geometry.eye_points(size)
    return float(e[:, 0].mean()), float(e[:, 1].mean()), float(e[1, 0] - e[0, 0])


def au_field(au: ActionUnit | int, x: np.ndarray, y: np.ndarray, size: int = geometry.CROP_SIZE,
             normalise: bool = True) -> np.ndarray:
    """Displacement of one AU at crop points (x, y) (any equal shapes, px of a crop of side `size`).

    Returns (2, *x.shape) float32 in crop px; with `normalise` the peak |d| over the 128 grid is 1 px.
    """
    au = AUS[au] if isinstance(au, int) else au
    mx, my, iod = _eye_frame(size)
    u, v = (np.asarray(x, np.float32) - mx) / iod, (np.asarray(y, np.float32) - my) / iod
    d = np.zeros((2, *u.shape), np.float32)
    for p in au.patches:
        sides = ((1.0,), (1.0, -1.0))[au.bilateral]
        for s in sides:
            g = p.weight * np.exp(-0.5 * (((u - s * p.centre[0]) / p.sigma[0]) ** 2
                                          + ((v - p.centre[1]) / p.sigma[1]) ** 2))
            d[0] += g * (s * p.direction[0])
            d[1] += g * p.direction[1]
    if normalise:
        d *= (size / geometry.CROP_SIZE) / _peak(au)
    return d


@lru_cache(maxsize=64)
def _peak(au: ActionUnit) -> float:
    """Peak |d| of an AU's raw field on the 128 grid (so that normalised fields peak at 1 px)."""
    yy, xx = np.mgrid[0:geometry.CROP_SIZE, 0:geometry.CROP_SIZE].astype(np.float32)
    d = au_field(au, xx, yy, normalise=False)
    return float(np.hypot(d[0], d[1]).max())


def combo_field(amplitudes: dict[int | ActionUnit, float], x: np.ndarray, y: np.ndarray,
                size: int = geometry.CROP_SIZE) -> np.ndarray:
    """Sum of AU fields, {au number or ActionUnit: peak amplitude in px of a 128 crop}, at crop points
    (x, y); (2, ...)."""
    d = np.zeros((2, *np.shape(x)), np.float32)
    for n, a in amplitudes.items():
        au = n if isinstance(n, ActionUnit) else BLINK if n == BLINK.number else AUS[n]
        d += a * au_field(au, x, y, size)
    return d


def grid(size: int = geometry.CROP_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (x, y), each (size, size) float32, of a crop of side `size`."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    return xx, yy


def region_mask(au: ActionUnit | int, size: int = geometry.CROP_SIZE) -> np.ndarray:
    """(size, size) bool: union of the AU's named regions (edge.perception.geometry.ROIS or CHEEK_ROIS)."""
    au = AUS[au] if isinstance(au, int) else au
    boxes = geometry.roi_boxes(size, {**geometry.ROIS, **CHEEK_ROIS})
    m = np.zeros((size, size), bool)
    for r in au.regions:
        x0, y0, x1, y1 = boxes[r]
        m[y0:y1, x0:x1] = True
    return m
