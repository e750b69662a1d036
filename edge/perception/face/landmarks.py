"""Landmarks that place the aligned crop: eye centres from OpenCV's eye cascade, or dlib's 68 points.

Both give eye centres in frame px, ordered image-left first (the convention of edge.perception.geometry). When the
eye cascade finds no clean pair, the eyes fall back to their canonical place in a frontal-face box
(measured on Haar boxes: centres at 28 % / 72 % of the width, 38 % of the height), which loses only roll.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path

import cv2
import numpy as np

from edge.errors import Unavailable

log = logging.getLogger(__name__)

# Eye centres as fractions of a frontal-face detector box (x, y), image-left eye first.
BOX_EYES = np.array([[0.28, 0.38], [0.72, 0.38]])
DLIB68_EYES = (slice(36, 42), slice(42, 48))  # image-left eye (subject's right), image-right eye
DLIB_MODEL_ENV = "FACESLEUTH_DLIB68"


def box_eyes(box: np.ndarray) -> np.ndarray:
    """Canonical eye centres (2, 2) frame px inside a face box (x, y, w, h)."""
    x, y, w, h = box
    return np.array([x, y]) + BOX_EYES * np.array([w, h])


class HaarEyes:
    """Eye centres from the eye cascade, searched in the upper half of the face box at full resolution."""

    kind = "eyes"

    def __init__(self) -> None:
        self.cascade = cv2.CascadeClassifier(str(Path(cv2.data.haarcascades) / "haarcascade_eye.xml"))
        if self.cascade.empty():
            raise Unavailable("haarcascade_eye.xml not found in this OpenCV build (use opencv<5)")

    def eyes(self, grey: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, bool]:
        """(2, 2) eye centres frame px and whether the cascade found them (False: box fallback)."""
        x, y, w, h = (int(round(v)) for v in box)
        x0, y0 = max(0, x), max(0, y + h // 8)
        roi = grey[y0:max(y0, y + (h * 5) // 8), x0:max(x0, x + w)]
        fallback = box_eyes(box)
        if roi.size == 0 or w < 40:
            return fallback, False
        m = max(8, w // 8)
        found = self.cascade.detectMultiScale(roi, 1.1, 3, minSize=(m, m), maxSize=(w // 2, w // 2))
        centres = np.array([[x0 + a + c / 2, y0 + b + d / 2] for a, b, c, d in found]).reshape(-1, 2)
        mid = x + w / 2
        pair = []
        for side, target in ((centres[:, 0] < mid, fallback[0]), (centres[:, 0] >= mid, fallback[1])):
            cand = centres[side]
            if len(cand) == 0:
                return fallback, False
            # Several hits per side (brows, nostrils): keep the one nearest the canonical place.
            pair.append(cand[np.argmin(np.hypot(*(cand - target).T))])
        eyes = np.array(pair)
        d = eyes[1] - eyes[0]
        # A pair that is too close, too far or steeper than 30 degrees is not a pair of eyes.
        if not (0.25 * w < d[0] < 0.7 * w and abs(d[1]) < 0.6 * d[0]):
            return fallback, False
        return eyes, True


def find_dlib68_model() -> Path | None:
    """The 68-point shape predictor file: $FACESLEUTH_DLIB68, the face_recognition_models package, or
    Debian's libdlib-data; None if none exists."""
    cands = [os.environ.get(DLIB_MODEL_ENV, "")]
    spec = importlib.util.find_spec("face_recognition_models")  # its __init__ needs pkg_resources: don't import
    if spec is not None and spec.origin:
        cands.append(str(Path(spec.origin).parent / "models" / "shape_predictor_68_face_landmarks.dat"))
    cands.append("/usr/share/dlib/shape_predictor_68_face_landmarks.dat")
    for c in cands:
        if c and Path(c).is_file():
            return Path(c)
    return None


class Dlib68:
    """dlib's 68-point shape predictor (iBUG 300-W layout) run inside a face box."""

    kind = "dlib68"

    def __init__(self, model_path: str | Path | None = None) -> None:
        from edge.perception.face.detect import import_dlib

        dlib = import_dlib()
        path = Path(model_path) if model_path else find_dlib68_model()
        if path is None or not path.is_file():
            raise Unavailable("dlib's 68-point model not found (pip install face_recognition_models, "
                              f"apt install libdlib-data, or set ${DLIB_MODEL_ENV})")
        self._rect = dlib.rectangle
        self.predictor = dlib.shape_predictor(str(path))

    def points(self, grey: np.ndarray, box: np.ndarray) -> np.ndarray:
        """(68, 2) float64 landmarks frame px for the face in `box` (x, y, w, h)."""
        return self._predict(grey, box)

    def crop_points(self, crop: np.ndarray, box: np.ndarray) -> np.ndarray:
        """(68, 2) float64 landmarks crop px for the face of an aligned crop, `box` (x, y, w, h) its detection
        box in crop px: the facial state's lids and lips, searched every frame (~3 ms a face)."""
        return self._predict(crop, box)

    def _predict(self, grey: np.ndarray, box: np.ndarray) -> np.ndarray:
        x, y, w, h = box
        shape = self.predictor(grey, self._rect(int(round(x)), int(round(y)), int(round(x + w)), int(round(y + h))))
        return np.array([[p.x, p.y] for p in shape.parts()], np.float64)

    def eyes(self, grey: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, bool]:
        pts = self.points(grey, box)
        return np.array([pts[DLIB68_EYES[0]].mean(0), pts[DLIB68_EYES[1]].mean(0)]), True


def make_landmarker(kind: str = "auto", model_path: str | Path | None = None):
    """`eyes` (Haar eye cascade), `dlib68`, or `auto`: dlib68 when dlib and its model exist, else eyes."""
    if kind == "eyes":
        return HaarEyes()
    if kind == "dlib68":
        return Dlib68(model_path)
    if kind == "auto":
        try:
            return Dlib68(model_path)
        except Unavailable as e:
            log.info("landmarks: eye cascade (%s)", e)
            return HaarEyes()
    from edge.errors import UserError

    raise UserError(f"unknown landmarks {kind!r} (known: auto, eyes, dlib68)")
