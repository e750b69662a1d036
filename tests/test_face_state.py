"""The facial state measures (edge.perception.face.state) on synthetic inputs, and a synthetic blink
through the tracker."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edge.perception.face.landmarks import find_dlib68_model
from edge.perception.face.state import (
    PNP_MODEL,
    PNP_POINTS,
    BandEnergy,
    FaceStateTracker,
    RunningLevel,
    camera_matrix,
    eye_aspect_ratio,
    head_pose,
    mouth_gap,
    roll_deg,
)


def eye(h: float) -> np.ndarray:
    """6 dlib eye points: corners 30 px apart, both lid pairs `h` px apart."""
    return np.array([[0, 0], [10, -h / 2], [20, -h / 2], [30, 0], [20, h / 2], [10, h / 2]], float)


def test_eye_aspect_ratio_of_known_eyes():
    assert eye_aspect_ratio(eye(10)) == pytest.approx(10 / 30)
    assert eye_aspect_ratio(eye(0)) == 0.0
    rot = cv2.getRotationMatrix2D((0, 0), 25, 1.7)[:, :2]  # rotation and scale change nothing
    assert eye_aspect_ratio(eye(6) @ rot.T) == pytest.approx(6 / 30)


def test_mouth_gap_is_the_inner_lip_gap_over_the_eye_distance():
    p = np.zeros((68, 2))
    p[36:42] = eye(8) + [20, 0]
    p[42:48] = eye(8) + [80, 0]  # eye centres 60 px apart
    for a, b in ((61, 67), (62, 66), (63, 65)):
        p[a], p[b] = (50, 100), (50, 112)
    assert mouth_gap(p) == pytest.approx(12 / 60)


def test_roll_of_a_rotated_eye_line():
    for deg in (-20.0, 0.0, 7.5, 30.0):
        r = np.radians(deg)
        assert roll_deg(np.array([100.0, 50.0]), np.array([100 + 60 * np.cos(r), 50 + 60 * np.sin(r)])) == (
            pytest.approx(deg))


@pytest.mark.parametrize("yaw, pitch, roll", [(0, 0, 0), (25, 0, 0), (-15, 10, 0), (0, -12, 8), (10, 5, -20)])
def test_head_pose_recovers_a_projected_model(yaw, pitch, roll):
    def rot(axis: int, deg: float) -> np.ndarray:
        v = np.zeros(3)
        v[axis] = np.radians(deg)
        return cv2.Rodrigues(v)[0]

    R = rot(2, roll) @ rot(1, -yaw) @ rot(0, -pitch)
    K = camera_matrix(640, 480)
    proj, _ = cv2.projectPoints(PNP_MODEL, cv2.Rodrigues(R)[0], np.array([10.0, -20.0, 600.0]), K, None)
    pts = np.zeros((68, 2))
    pts[PNP_POINTS] = proj.reshape(-1, 2)
    got = head_pose(pts, (640, 480))
    np.testing.assert_allclose(got[:3], (yaw, pitch, roll), atol=0.5)
    if yaw > 0:  # the sign convention: yaw > 0 moves the nose tip to the image's right of the eyes' middle
        nose, mid = pts[30, 0], (pts[39, 0] + pts[42, 0]) / 2
        assert nose > mid
    # Landmarks that no rigid face fits (each point off by ~15 % of the eye-corner spacing): no pose.
    bad = pts.copy()
    bad[PNP_POINTS] += np.random.default_rng(1).normal(0, 0.15 * np.hypot(*(pts[45] - pts[36])), (len(PNP_POINTS), 2))
    assert np.isnan(head_pose(bad, (640, 480))[:3]).all()


def test_speech_band_passes_syllable_rate_not_slow_movement():
    fps = 30.0
    t = np.arange(int(3 * fps)) / fps

    def rms(hz: float) -> float:
        f = BandEnergy(fps)
        return [f.update(0.2 + 0.1 * np.sin(2 * np.pi * hz * x)) for x in t][-1]

    assert rms(4.0) == pytest.approx(0.1 / np.sqrt(2), rel=0.2)  # in band: the sinusoid's RMS
    assert rms(0.5) < 0.1 * rms(4.0)  # a slow opening (a yawn, a smile) is not speech
    assert rms(0.0) == 0.0
    assert BandEnergy(10.0).update(1.0) == 0.0  # a slow camera still gets a filter


def test_running_level_ignores_short_dips():
    lv = RunningLevel(100, floor=0.1)
    levels = [lv.update(0.3 if k % 40 > 3 else 0.05) for k in range(200)]
    assert levels[-1] == pytest.approx(0.3)
    assert RunningLevel(10, floor=0.2).update(0.05) == 0.2


def test_eyes_only_state_is_roll_from_the_eye_line():
    st = FaceStateTracker("eyes", 30.0, 128)
    crop = np.random.default_rng(0).integers(0, 255, (128, 128), dtype=np.uint8)
    M = cv2.getRotationMatrix2D((64, 64), 10, 1.0)  # frame -> crop rotates by 10 deg counter-clockwise
    eyes = np.array([[40.0, 46.0], [88.0, 46.0]])
    s = st.update(crop, eyes, M, (640, 480))
    assert s.pose_source == "eye_line" and np.isnan(s.yaw) and np.isnan(s.pitch)
    assert s.roll == pytest.approx(10.0, abs=1e-6)  # the frame's eye line is clockwise by 10 deg
    assert s.eye_open == (1.0, 1.0) and 0.0 <= s.speech <= 1.0


@pytest.mark.skipif(find_dlib68_model() is None, reason="dlib's 68-point model is not installed")
def test_a_synthetic_blink_lowers_eye_open():
    pytest.importorskip("dlib")
    from edge.data.synth import SyntheticVideo
    from edge.perception.face import FaceTracker

    video = SyntheticVideo("webcam30", seed=0, duration_s=3.0,
                           script=[{"t": 1.5, "kind": "blink", "duration_s": 0.3}])
    tracker = FaceTracker(landmarks="dlib68")
    tracker.fps = video.fps
    opens = {}
    for k, frame in enumerate(video):
        out = tracker.update(frame)
        if len(out.track_ids):
            assert out.eye_open.shape == (1, 2) and out.states[0].pose_source == "pnp68"
            opens[k] = float(out.eye_open[0].mean())
    during = [v for k, v in opens.items() if 45 <= k <= 54]  # 1.5-1.8 s at 30 fps
    before = [v for k, v in opens.items() if k < 44]
    assert np.median(before) > 0.85
    assert min(during) < 0.8 and min(during) < min(before) - 0.05


def test_view_draws_the_state():
    from edge.debug_view import draw_state_bars, state_text
    from edge.perception.face import TrackedFaces

    faces = TrackedFaces.zeros(1, 128, 2)
    faces.head_pose[0] = (np.nan, np.nan, 4.0)
    faces.speech[0] = 0.5
    assert state_text(faces, 0) == "roll 4 mouth 0.00 speech 0.50"
    faces.head_pose[0] = (12.0, -3.0, 4.0)
    assert state_text(faces, 0).startswith("yaw 12 pitch -3 roll 4")
    crop = np.zeros((128, 128, 3), np.uint8)
    draw_state_bars(crop, np.array([1.0, 0.2]), 0.5)
    left, right = (crop[:, :5].max(2) > 0).sum(0)[0], (crop[:, -5:].max(2) > 0).sum(0)[-1]
    assert left > 3 * right > 0, "an open eye's bar stands taller than a closing one's"
    assert (crop[-1].max(1) > 0).sum() == 64, "speech 0.5: half the bottom edge"


def test_view_keeps_the_state_line_inside_a_small_frame():
    """carphone is 176x144: the state line of a face near the right edge is moved left and shrunk to fit."""
    import cv2

    from edge.debug_view import fit_text

    text = "yaw -12 pitch 8 roll -4 mouth 0.31 speech 0.62"
    for x, width in ((120, 176), (0, 176), (300, 640)):
        fx, scale = fit_text(text, x, width, 0.4)
        tw = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0]
        assert 0 <= fx and fx + tw <= width, (x, width, fx, tw)
    assert fit_text(text, 10, 640, 0.4) == (10, 0.4), "a line that fits is left as it is"


def test_eye_likeness_drops_while_a_lid_covers_the_eye():
    from edge.perception.face.state import EyeLikeness

    rng = np.random.default_rng(3)
    crop = rng.integers(60, 200, (128, 128)).astype(np.uint8)
    like = EyeLikeness((26, 40, 55, 54), tau_frames=60)
    assert [round(like.update(crop), 3) for _ in range(5)] == [1.0] * 5
    shut = crop.copy()
    shut[40:54, 26:55] = 150  # the lid's flat skin over the ROI, a lash line below
    shut[52, 26:55] = 40
    assert like.update(shut) < 0.3
    assert like.update(crop) > 0.95, "one shut frame barely moves the template"
