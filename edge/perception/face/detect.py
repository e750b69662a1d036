"""Face detectors behind one interface: `detect(grey) -> list[Detection]` in frame px.

- `haar`: OpenCV's frontal-face Haar cascade (ships in the 4.x wheels; the default).
- `yunet`: cv2.FaceDetectorYN with a user-supplied ONNX model file (also gives eye points).
- `dlib`: dlib's HOG frontal detector, when dlib is installed.

Detection runs on a copy of the frame downscaled to at most `det_width` px wide: the tracker calls it
only every few frames and faces in 640x480 video are large, so the full resolution buys nothing but time.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edge.errors import Unavailable, UserError

log = logging.getLogger(__name__)

DETECTORS = ("haar", "yunet", "dlib")
HAAR_WINDOW = 24  # px, the frontal-face cascade's training window: it finds nothing smaller
DLIB_WINDOW = 80  # px, about the smallest face dlib's HOG detector finds without upsampling


@dataclass
class Detection:
    """One face: `box` (x, y, w, h) float frame px, `score` (detector-specific, higher is surer),
    `eyes` (2, 2) [[x_left, y_left], [x_right, y_right]] frame px when the detector gives them."""

    box: np.ndarray
    score: float = 1.0
    eyes: np.ndarray | None = None


def _downscale(grey: np.ndarray, det_width: int, max_factor: float = float("inf")) -> tuple[np.ndarray, float]:
    """The frame resized to at most det_width px wide (but shrunk by at most `max_factor`), and the
    factor frame px / small px."""
    if grey.ndim != 2:
        raise UserError(f"face detection needs a grey (H, W) image, got shape {grey.shape}")
    h, w = grey.shape
    f = min(w / det_width if det_width > 0 else 1.0, max_factor)
    if f <= 1.0:
        return grey, 1.0
    small = cv2.resize(grey, (max(1, round(w / f)), max(1, round(h / f))), interpolation=cv2.INTER_AREA)
    return small, f


class HaarDetector:
    """OpenCV's Haar frontal-face cascade. `min_face` is the smallest face side in frame px: the frame is
    never shrunk so far that such a face falls below the cascade's 24 px window (HD input keeps more
    pixels than 640x480 does)."""

    name = "haar"

    def __init__(self, det_width: int = 320, min_face: int = 48, cascade: str = "haarcascade_frontalface_default.xml",
                 min_neighbors: int = 5) -> None:
        path = Path(cv2.data.haarcascades) / cascade if not Path(cascade).is_file() else Path(cascade)
        self.cascade = cv2.CascadeClassifier(str(path))
        if self.cascade.empty():
            raise Unavailable(f"Haar cascade {path} not found (OpenCV 5 wheels dropped them; use opencv<5)")
        self.det_width, self.min_face, self.min_neighbors = det_width, min_face, min_neighbors

    def detect(self, grey: np.ndarray) -> list[Detection]:
        small, f = _downscale(grey, self.det_width, self.min_face / HAAR_WINDOW)
        m = max(HAAR_WINDOW, int(self.min_face / f))
        found = self.cascade.detectMultiScale(small, scaleFactor=1.1, minNeighbors=self.min_neighbors,
                                              minSize=(m, m))
        return [Detection(np.array(b, np.float64) * f) for b in found]


class YuNetDetector:
    """cv2.FaceDetectorYN with the ONNX model at `model_path`; its first two landmarks are the eyes."""

    name = "yunet"

    def __init__(self, model_path: str | Path, det_width: int = 320, score_threshold: float = 0.8) -> None:
        if not hasattr(cv2, "FaceDetectorYN"):
            raise Unavailable("this OpenCV build has no cv2.FaceDetectorYN (needs OpenCV >= 4.5.4)")
        if not model_path or not Path(model_path).is_file():
            raise UserError(f"YuNet model file not found: {model_path!r} (give the ONNX file's path)")
        try:
            self.net = cv2.FaceDetectorYN.create(str(model_path), "", (det_width, det_width), score_threshold)
        except cv2.error as e:
            raise UserError(f"cannot load YuNet model {model_path}: {str(e).strip().splitlines()[-1]}") from None
        self.det_width = det_width

    def detect(self, grey: np.ndarray) -> list[Detection]:
        small, f = _downscale(grey, self.det_width)
        self.net.setInputSize((small.shape[1], small.shape[0]))
        _, faces = self.net.detect(cv2.cvtColor(small, cv2.COLOR_GRAY2BGR))
        out = []
        for row in faces if faces is not None else []:
            # Row: x, y, w, h, then 5 (x, y) landmarks: subject's right eye (image left), left eye, ...
            eyes = np.array([row[4:6], row[6:8]], np.float64) * f
            out.append(Detection(np.array(row[:4], np.float64) * f, float(row[14]), eyes[np.argsort(eyes[:, 0])]))
        return out


class DlibHogDetector:
    """dlib's HOG + linear SVM frontal detector (finds faces from about 80 px at upsample 0, so frames are
    shrunk only as far as keeps a `min_face` face at 80 px)."""

    name = "dlib"

    def __init__(self, det_width: int = 640, min_face: int = 80) -> None:
        dlib = import_dlib()
        self.detector = dlib.get_frontal_face_detector()
        self.det_width, self.min_face = det_width, min_face

    def detect(self, grey: np.ndarray) -> list[Detection]:
        small, f = _downscale(grey, self.det_width, self.min_face / DLIB_WINDOW)
        rects, scores, _ = self.detector.run(np.ascontiguousarray(small), 0, 0.0)
        return [Detection(np.array([r.left(), r.top(), r.width(), r.height()], np.float64) * f, float(s))
                for r, s in zip(rects, scores, strict=True)]


def drop_enclosing(dets: list[Detection], ratio: float = 0.6) -> list[Detection]:
    """Detections less those that enclose a smaller face: a box around the centre of another detection at
    most `ratio` its side is a false positive on the texture around a real face (a face inside a face is
    no face). Seen with the Haar cascade on busy backgrounds: a ~3x box around the face, detected as
    steadily as the face itself."""
    keep = []
    for d in dets:
        x, y, w, h = d.box
        inner = any(e is not d and e.box[2] <= ratio * w
                    and x <= e.box[0] + e.box[2] / 2 <= x + w and y <= e.box[1] + e.box[3] / 2 <= y + h
                    for e in dets)
        if not inner:
            keep.append(d)
    return keep


def import_dlib():
    """The dlib module, or Unavailable with the install hint."""
    try:
        import dlib
    except ImportError:
        raise Unavailable("dlib is not installed (pip install dlib-bin face_recognition_models)") from None
    return dlib


def make_detector(kind: str = "haar", model_path: str | Path | None = None, det_width: int = 320,
                  min_face: int = 48):
    """A detector by name (one of DETECTORS)."""
    if kind == "haar":
        return HaarDetector(det_width, min_face)
    if kind == "yunet":
        return YuNetDetector(model_path or "", det_width)
    if kind == "dlib":
        return DlibHogDetector(max(det_width, 640), min_face)
    raise UserError(f"unknown face detector {kind!r} (known: {', '.join(DETECTORS)})")
