"""Face photographs for the synthetic source, brought into the canonical layout of `edge.perception.geometry`.

A `FaceTemplate` is a photograph resampled so that crop coordinates (px of the 128-px aligned crop,
see edge.perception.geometry) map linearly onto it, with a margin of `MARGIN` crop px on every side so that the
head, hair and some background exist around the crop: template px = (crop px + MARGIN) * scale.

Faces come from scikit-image's sample data (the astronaut photograph ships inside the wheel) or from a
folder of the user's photographs; eyes are found with OpenCV's Haar cascades, so any frontal photo works.
`Subject` turns one template into a distinct synthetic person (identity warp, flip, colour, gamma, blur,
expressiveness), so one photo yields as many subject ids as LOSO needs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from edge.errors import UserError
from edge.perception import geometry

log = logging.getLogger(__name__)

MARGIN = 64          # crop px of context around the 128-px crop
TEMPLATE_SCALE = 2.0  # template px per crop px
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
# Head outline on the crop (centre x, centre y, semi-axis x, semi-axis y) in crop px, for compositing.
HEAD_ELLIPSE = (63.5, 58.0, 60.0, 82.0)


@dataclass
class FaceTemplate:
    """A photograph in canonical layout: `image` BGR uint8 (T, T, 3), T = (128 + 2*MARGIN) * scale."""

    name: str
    image: np.ndarray
    scale: float = TEMPLATE_SCALE


def _cascade(name: str) -> cv2.CascadeClassifier:
    c = cv2.CascadeClassifier(str(Path(cv2.data.haarcascades) / name))
    if c.empty():
        raise UserError(f"OpenCV Haar cascade {name} not found in {cv2.data.haarcascades}")
    return c


def find_eyes(bgr: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Eye centre pairs (left, right) in image px, image-left first, one per frontal face found.

    Eyes come from the eye cascade inside the face box; when it finds fewer than two, they are placed
    at the canonical proportions of the Haar face box (eyes at 30 % / 70 % of its width, 38 % of height).
    """
    grey = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY) if bgr.ndim == 3 else bgr
    grey = cv2.equalizeHist(grey)
    faces = _cascade("haarcascade_frontalface_default.xml").detectMultiScale(grey, 1.1, 5, minSize=(40, 40))
    eyes_c = _cascade("haarcascade_eye.xml")
    out = []
    for x, y, w, h in faces:
        roi = grey[y:y + int(h * 0.6), x:x + w]
        found = eyes_c.detectMultiScale(roi, 1.1, 5, minSize=(w // 10, w // 10))
        left = [e for e in found if e[0] + e[2] / 2 < w / 2]
        right = [e for e in found if e[0] + e[2] / 2 >= w / 2]
        if left and right:
            le, re_ = (max(g, key=lambda e: e[2]) for g in (left, right))
            pl = np.array([x + le[0] + le[2] / 2, y + le[1] + le[3] / 2])
            pr = np.array([x + re_[0] + re_[2] / 2, y + re_[1] + re_[3] / 2])
        else:
            log.debug("eye cascade missed in face %s; using face-box proportions", (x, y, w, h))
            pl, pr = np.array([x + 0.3 * w, y + 0.38 * h]), np.array([x + 0.7 * w, y + 0.38 * h])
        out.append((pl, pr))
    return out


def template_from_photo(bgr: np.ndarray, left_eye: np.ndarray, right_eye: np.ndarray, name: str,
                        scale: float = TEMPLATE_SCALE) -> FaceTemplate:
    """Resample a photo so its eyes sit at the canonical crop positions (with margin, at `scale`)."""
    m = geometry.align_from_eyes(left_eye, right_eye)  # frame -> crop px
    # crop -> template: t = (c + MARGIN + 0.5) * scale - 0.5 (pixel centres)
    t = np.array([[scale, 0, (MARGIN + 0.5) * scale - 0.5], [0, scale, (MARGIN + 0.5) * scale - 0.5]])
    full = t @ np.vstack([m, [0, 0, 1]])
    side = int(round((geometry.CROP_SIZE + 2 * MARGIN) * scale))
    img = cv2.warpAffine(bgr, full, (side, side), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
    return FaceTemplate(name, img, scale)


def builtin_faces() -> list[FaceTemplate]:
    """The frontal face photographs that ship with scikit-image (the astronaut, Eileen Collins, NASA)."""
    from skimage import data

    bgr = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    eyes = find_eyes(bgr)
    if not eyes:  # the cascade finds it in every OpenCV we know; keep the measured positions as a fallback
        eyes = [(np.array([201.5, 100.5]), np.array([247.0, 104.0]))]
    return [template_from_photo(bgr, *eyes[0], "astronaut")]


def folder_faces(folder: str | Path) -> list[FaceTemplate]:
    """Every frontal face found in the photographs of `folder` (not recursive)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"face photo folder {folder} does not exist")
    out = []
    for p in sorted(folder.iterdir()):
        if p.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        img = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if img is None:
            log.warning("cannot read %s; skipped", p)
            continue
        for i, (le, re_) in enumerate(find_eyes(img)):
            out.append(template_from_photo(img, le, re_, f"{p.stem}{'' if i == 0 else f'_{i}'}"))
    if not out:
        raise UserError(f"no frontal face found in the photographs of {folder}")
    log.info("%d face(s) from %s", len(out), folder)
    return out


def load_faces(folder: str | Path | None = None) -> list[FaceTemplate]:
    """Templates from `folder`, or the built-in photographs when it is None."""
    return builtin_faces() if folder is None else folder_faces(folder)


@dataclass
class Subject:
    """One synthetic person: a template with a fixed appearance augmentation and expression style.

    `image` BGR uint8 and `grey` uint8 share the template layout. `gain` scales every AU amplitude of this
    person (expressiveness) and `asym` tilts it left/right (micro-expressions are often asymmetric).
    """

    id: str
    image: np.ndarray
    grey: np.ndarray
    scale: float
    gain: float
    asym: float
    _levels: dict = field(default_factory=dict, repr=False)

    def grey_at(self, scale: float) -> np.ndarray:
        """The grey template resampled (area filter, so no aliasing) to `scale` px per crop px."""
        key = round(scale, 2)
        if key not in self._levels:
            side = int(round((geometry.CROP_SIZE + 2 * MARGIN) * key))
            interp = cv2.INTER_AREA if key < self.scale else cv2.INTER_CUBIC
            self._levels[key] = cv2.resize(self.grey, (side, side), interpolation=interp)
        return self._levels[key]

    def bgr_at(self, scale: float) -> np.ndarray:
        side = int(round((geometry.CROP_SIZE + 2 * MARGIN) * scale))
        interp = cv2.INTER_AREA if scale < self.scale else cv2.INTER_CUBIC
        return cv2.resize(self.image, (side, side), interpolation=interp)


def make_subject(template: FaceTemplate, rng: np.random.Generator, sid: str) -> Subject:
    """A distinct person from `template`: smooth identity warp (face shape, <= ~3 crop px), mirror,
    colour cast, contrast, gamma and skin smoothness, plus an expressiveness gain and asymmetry."""
    img = template.image
    side = img.shape[0]
    # Identity warp: a 4x4 random displacement lattice, cubic-upsampled: changes proportions smoothly.
    lattice = rng.normal(0.0, 1.5 * template.scale, (4, 4, 2)).astype(np.float32)
    disp = cv2.resize(lattice, (side, side), interpolation=cv2.INTER_CUBIC)
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32)
    img = cv2.remap(img, xx + disp[..., 0], yy + disp[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    if rng.random() < 0.5:
        img = img[:, ::-1].copy()  # the layout is symmetric about the crop centre, so eyes stay in place
    f = img.astype(np.float32) / 255.0
    f = f * rng.uniform(0.85, 1.15, 3).astype(np.float32)            # colour cast
    f = (f - 0.5) * rng.uniform(0.8, 1.2) + 0.5 + rng.uniform(-0.08, 0.08)  # contrast, brightness
    f = np.clip(f, 0, 1) ** rng.uniform(0.8, 1.25)                    # gamma
    img = (f * 255).round().astype(np.uint8)
    sigma = rng.uniform(0.0, 1.0) * template.scale
    if sigma > 0.3:
        img = cv2.GaussianBlur(img, (0, 0), sigma)
    grey = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    return Subject(sid, img, grey, template.scale, float(rng.uniform(0.7, 1.3)), float(rng.uniform(-0.3, 0.3)))


def head_mask(size_px: int, scale: float) -> np.ndarray:
    """Soft head alpha (float32, 0..1) in template layout of side `size_px` at `scale` px per crop px."""
    cx, cy, ax, ay = HEAD_ELLIPSE
    t = (np.arange(size_px, dtype=np.float32) + 0.5) / scale - 0.5 - MARGIN  # template px -> crop px
    r = ((t[None, :] - cx) / ax) ** 2 + ((t[:, None] - cy) / ay) ** 2
    return np.clip((1.15 - r) / 0.3, 0.0, 1.0).astype(np.float32)  # feathered edge
