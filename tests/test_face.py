"""Face detection, tracking, alignment and stabilisation on real video files (MJPG .avi written with OpenCV)
of a real face photograph (skimage's astronaut) moving rigidly."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edge.bench.faceclips import ASTRONAUT_EYES, astronaut_grey, crop_shift, read_frames, write_clip
from edge.errors import UserError
from edge.perception.face import FaceTracker
from edge.perception.face.align import apply, compose, invert, robust_similarity
from edge.perception.face.detect import Detection, HaarDetector, drop_enclosing, make_detector
from edge.perception.face.landmarks import HaarEyes, find_dlib68_model
from edge.perception.geometry import EYE_DISTANCE, eye_points, roi_boxes

N_FRAMES = 60


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Real video files: one moving face (with its true transforms), two faces, no face."""
    d = tmp_path_factory.mktemp("faceclips")
    out = {}
    for name, n in (("one", 1), ("two", 2), ("none", 0)):
        path = d / f"{name}.avi"
        truth = write_clip(path, N_FRAMES, n, seed=n)
        out[name] = (read_frames(path), truth)
    return out


def run(frames, **kw):
    """Track a clip; per frame the TrackedFaces output."""
    tracker = FaceTracker(**kw)
    return [tracker.update(f) for f in frames]


def per_track(outputs):
    """track id -> list of (frame index, crop, transform, residual, head motion)."""
    tracks: dict[int, list] = {}
    for k, o in enumerate(outputs):
        for i, tid in enumerate(o.track_ids):
            tracks.setdefault(int(tid), []).append((k, o.crops[i], o.transforms[i].astype(np.float64),
                                                    float(o.residual[i]), o.head_motion[i]))
    return tracks


def test_photograph_is_detected_with_its_eyes():
    grey = astronaut_grey()
    dets = HaarDetector().detect(grey)
    assert len(dets) == 1
    x, y, w, h = dets[0].box
    for ex, ey in ASTRONAUT_EYES:
        assert x < ex < x + w and y < ey < y + h
    eyes, found = HaarEyes().eyes(grey, dets[0].box)
    assert found
    # The eye cascade agrees with dlib's 68-point eye centres to a few px (eyes are ~10 px tall here).
    assert np.abs(eyes - ASTRONAUT_EYES).max() < 4.0


def test_a_box_around_a_smaller_face_is_no_face():
    """Haar on a busy background can fire on a ~3x box around the real face as steadily as on the face:
    a face inside a face is dropped; faces side by side, and two boxes of one size, are kept."""
    face, other = Detection(np.array([260.0, 180, 110, 110])), Detection(np.array([480.0, 60, 90, 90]))
    around = Detection(np.array([120.0, 60, 380, 380]))
    assert drop_enclosing([around, face, other]) == [face, other]
    twin = Detection(np.array([270.0, 185, 105, 105]))  # one face found twice: the tracker's IoU merges it
    assert drop_enclosing([face, twin]) == [face, twin]
    # Through the tracker: the real photograph, plus the same box blown up around it, gives one track.
    grey = astronaut_grey()
    real = HaarDetector().detect(grey)[0]
    x, y, w, h = real.box
    big = Detection(np.array([x - w, y - w, 3 * w, 3 * h]))

    class WithPhantom(HaarDetector):
        def detect(self, g):
            return [big] + super().detect(g)

    tracker = FaceTracker(detector="haar", landmarks="eyes", min_hits=1)
    tracker.detector = WithPhantom()
    outs = [tracker.update(grey) for _ in range(3)]
    assert [len(o.track_ids) for o in outs] == [0, 1, 1]  # born in frame 0's detection round, after its crops
    assert np.allclose(outs[-1].boxes[0][2], w, rtol=0.3)


@pytest.mark.parametrize("detector,landmarks,max_age", [
    ("haar", "eyes", 300),
    ("haar", "eyes", 7),  # the template is refreshed every 7 frames: re-anchoring must not move the crop
    ("haar", "dlib68", 300),
    ("dlib", "dlib68", 300),
])
def test_rigid_motion_gives_one_still_track(clips, detector, landmarks, max_age):
    if "dlib" in (detector, landmarks[:4]):
        pytest.importorskip("dlib", reason="dlib not installed (pip install dlib-bin)")
        if find_dlib68_model() is None:
            pytest.skip("dlib 68-point model not found (pip install face_recognition_models)")
    frames, truth = clips["one"]
    outs = run(frames, detector=detector, landmarks=landmarks, max_age=max_age)
    tracks = per_track(outs)
    assert list(tracks) == [0], f"expected one track, got ids {list(tracks)}"
    seq = tracks[0]
    first = seq[0][0]
    assert first <= 5 + 1, "the track is confirmed at the second detection round"
    assert len(seq) == N_FRAMES - first, "the track is output on every frame once confirmed"
    assert max(m for *_, m in seq) > 0.3, "the clip really moves the head"

    # Stillness by image content: phase correlation of every crop against the first.
    shifts = np.array([crop_shift(seq[0][1], crop) for _, crop, *_ in seq])
    assert np.abs(shifts).max() < 0.3, f"crops move by up to {np.abs(shifts).max(0)} px"
    assert max(r for *_, r, _ in seq) < 0.3

    # Stillness by geometry: photo px -> crop px (alignment composed with the true motion) is constant.
    probe = np.array([[180.0, 80.0], [270.0, 80.0], [225.0, 130.0], [190.0, 180.0], [260.0, 180.0]])
    ref = apply(compose(seq[0][2], truth[seq[0][0]][0]), probe)
    for k, _, M, *_ in seq:
        err = np.hypot(*(apply(compose(M, truth[k][0]), probe) - ref).T).max()
        assert err < 0.3, f"frame {k}: a photo point moved {err:.2f} crop px"

    # Head motion (frame px/frame) follows the true motion of the face.
    centre = apply(invert(compose(seq[0][2], truth[seq[0][0]][0])), [[64.0, 70.0]])
    for k, *_, motion in seq[1:]:
        true = np.hypot(*(apply(truth[k][0], centre) - apply(truth[k - 1][0], centre)).ravel())
        assert abs(motion - true) < 0.25, f"frame {k}: head motion {motion:.2f}, true {true:.2f} px"

    # Alignment: eye line horizontal, canonical inter-ocular distance, eyes near their canonical places.
    eyes = apply(compose(seq[0][2], truth[seq[0][0]][0]), ASTRONAUT_EYES)
    d = eyes[1] - eyes[0]
    assert abs(d[1]) < 1.5
    assert abs(np.hypot(*d) / (EYE_DISTANCE * 128) - 1) < 0.05
    assert np.abs(eyes - eye_points(128)).max() < 3.0
    last = next(o for o in outs[::-1] if len(o.track_ids))
    assert last.points.shape == (1, 68 if landmarks == "dlib68" else 2, 2)


def test_dlib_landmarks_are_searched_on_detection_rounds_only(clips):
    """68-point landmarks cost ~3 ms a face: they are searched when the detector runs and held in crop px
    in between (the stabilised crop keeps the face still), not searched again on every frame."""
    pytest.importorskip("dlib", reason="dlib not installed (pip install dlib-bin)")
    if find_dlib68_model() is None:
        pytest.skip("dlib 68-point model not found (pip install face_recognition_models)")
    frames, _ = clips["one"]
    tracker = FaceTracker(detector="haar", landmarks="dlib68", detect_every=5)
    calls, search = [], tracker.landmarker.points
    tracker.landmarker.points = lambda grey, box: calls.append(tracker.frame_index) or search(grey, box)
    outs = [tracker.update(f) for f in frames]
    live = [(k, o) for k, o in enumerate(outs) if len(o.track_ids)]
    # A round runs after frame k's crops are out (births and retargets search landmarks there) and the next
    # output, k + 1, is marked `detected` and searches them again for its tracks.
    rounds = {k for k, o in enumerate(outs) if o.detected} | {k - 1 for k, o in enumerate(outs) if o.detected}
    assert live and set(calls) <= rounds and len(rounds) < 0.5 * len(outs), calls
    for (k, o), (_, prev) in zip(live[1:], live, strict=False):
        if not o.detected:
            assert np.array_equal(o.points, prev.points), f"frame {k}: landmarks moved without a search"
    assert np.isfinite(live[-1][1].points).all() and np.ptp(live[-1][1].points[0], axis=0).min() > 30


def test_stabiliser_fit_is_continuous_when_anchor_points_split():
    """After a head turn, parallax can split the anchor points into two groups that disagree by most of a
    pixel. RANSAC's random samples then pick one group or the other from frame to frame, and the crop
    jitters by that much (seen on a synthetic clip: 0.9 px of rigid motion every other frame, which spotting
    took for facial motion; 0.24-0.39 px of spread on the points below). Frame to frame, with fresh point
    noise, the fit must move no more than that noise moves it, and gross tracking failures get no weight."""
    rng = np.random.default_rng(0)
    src = rng.uniform(10, 118, (40, 2))
    true = np.array([[np.cos(0.01), -np.sin(0.01), 0.3], [np.sin(0.01), np.cos(0.01), -0.2]]) * 1.01
    split = np.where(np.arange(40)[:, None] < 20, (0.5, 0.6), 0.0)  # half the points moved differently
    gross = np.where(np.arange(40)[:, None] % 9 == 0, 12.0, 0.0)   # LK failures
    centre = [[64.0, 64.0]]
    fits = np.stack([apply(robust_similarity(src, apply(true, src) + split + gross
                                             + rng.normal(0, 0.1, src.shape)), centre)[0] for _ in range(30)])
    assert np.ptp(fits, axis=0).max() < 0.15, np.ptp(fits, axis=0)
    off = fits.mean(0) - apply(true, centre)[0]
    assert (-0.05 < off).all() and off[0] < 0.55 and off[1] < 0.65, off  # between the groups, never off them
    clean = robust_similarity(src, apply(true, src) + gross)
    assert np.abs(clean - true).max() < 1e-3, clean - true


def test_brow_raise_survives_stabilisation(tmp_path):
    """What remains in the crops is facial deformation: a 1.5 px brow raise shows in the brow ROIs while
    the nose bridge and the crop as a whole stay still."""
    path = tmp_path / "raise.avi"
    write_clip(path, 40, 1, raise_frames=(25, 40), noise=0.5)
    outs = run(read_frames(path), landmarks="eyes")
    crops = {k: o.crops[0] for k, o in enumerate(outs) if len(o.track_ids)}
    flow = cv2.calcOpticalFlowFarneback(crops[20], crops[30], None, 0.5, 3, 9, 5, 5, 1.1, 0)
    boxes = roi_boxes(128)
    brow = np.concatenate([flow[y0:y1, x0:x1, 1].ravel() for name, (x0, y0, x1, y1) in boxes.items()
                           if name.startswith("brow")])
    x0, y0, x1, y1 = roi_boxes(128, {"nb": (0.44, 0.40, 0.56, 0.52)})["nb"]
    bridge = flow[y0:y1, x0:x1]
    assert np.percentile(brow, 5) < -0.8, "the brow raise (about -1.6 crop px at its peak) is visible"
    assert np.abs(np.median(bridge, axis=(0, 1))).max() < 0.2, "the nose bridge stays still"


def test_two_faces_two_ids(clips):
    frames, _ = clips["two"]
    outs = run(frames, landmarks="eyes")
    tracks = per_track(outs)
    assert sorted(tracks) == [0, 1]
    assert all(len(v) == len(tracks[0]) for v in tracks.values()), "both tracked on every frame"
    xs = {tid: np.mean([invert(M)[0, 2] for _, _, M, *_ in seq]) for tid, seq in tracks.items()}
    assert abs(xs[0] - xs[1]) > 200, "the two ids are two different faces"
    assert all(len(o.track_ids) == 2 for o in outs[10:])


def test_no_face_no_tracks(clips):
    frames, _ = clips["none"]
    outs = run(frames, landmarks="eyes", detect_every=1)
    assert all(len(o.track_ids) == 0 and o.crops.shape == (0, 128, 128) for o in outs)
    assert all(o.ended == [] for o in outs)


def test_track_ends_when_face_leaves(clips):
    frames, _ = clips["one"]
    empty = clips["none"][0]
    tracker = FaceTracker(landmarks="eyes", max_missed=2)
    outs = [tracker.update(f) for f in frames[:20] + empty[:30]]
    ended = [(k, tid) for k, o in enumerate(outs) for tid in o.ended]
    assert len(ended) == 1 and ended[0][1] == 0
    assert all(len(o.track_ids) == 0 for o in outs[ended[0][0]:])


def test_bad_input_is_one_clear_error(tmp_path):
    with pytest.raises(UserError, match="unknown face detector"):
        make_detector("nope")
    with pytest.raises(UserError, match="YuNet model file not found"):
        make_detector("yunet", tmp_path / "missing.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(UserError, match="cannot load YuNet model"):
        make_detector("yunet", bad)
    tracker = FaceTracker(landmarks="eyes")
    with pytest.raises(UserError, match="uint8"):
        tracker.update(np.zeros((48, 64), np.float32))
    with pytest.raises(UserError):
        FaceTracker(detect_every=0)


def test_dlib_hog_detector_finds_the_photograph():
    pytest.importorskip("dlib", reason="dlib not installed (pip install dlib-bin)")
    dets = make_detector("dlib").detect(astronaut_grey())
    assert len(dets) == 1
    x, y, w, h = dets[0].box
    assert all(x < ex < x + w and y < ey < y + h for ex, ey in ASTRONAUT_EYES)


def test_short_occlusion_keeps_the_id(clips):
    """The face vanishes for 7 frames (shorter than max_missed detection rounds) and comes back: the
    track is not output while lost, then re-locks with the same id."""
    one, none = clips["one"][0], clips["none"][0]
    frames = one[:25] + none[25:32] + one[32:]
    outs = run(frames, landmarks="eyes")
    ids = [o.track_ids.tolist() for o in outs]
    assert all(i == [] for i in ids[25:32]), "no crops of a face that is not there"
    assert all(i == [0] for i in ids[6:25] + ids[33:]), ids
    assert not any(o.ended for o in outs)
    crops = [o.crops[0] for o in outs[33:]]
    assert max(np.hypot(*crop_shift(crops[0], c)) for c in crops) < 0.3, "still again after the re-lock"


def test_slow_pull_fixes_a_bad_start_without_jumps(clips):
    """Birth from eyes rotated by 10 degrees: once correct eyes are given (retarget), the crop placement
    moves to them by at most pull_step per frame, and the stabilisation is unaffected."""
    from edge.perception.face.align import Stabiliser

    frames, truth = clips["one"]
    true_eyes = apply(truth[0][0], ASTRONAUT_EYES)
    mid, a = true_eyes.mean(0), np.deg2rad(10)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    stab = Stabiliser(frames[0], (true_eyes - mid) @ rot.T + mid, pull_step=0.2)
    assert stab.retarget(true_eyes)
    placed = []  # the true eyes in the emitted crop, per frame
    for k, f in enumerate(frames[1:], 1):
        r = stab.update(f)
        assert r.ok
        placed.append(apply(compose(r.M, truth[k][0]), ASTRONAUT_EYES))
        if k == 1:
            assert r.motion < 2.0, "the pull is not reported as head motion"
    steps = [np.hypot(*(b - a).T).max() for a, b in zip(placed, placed[1:], strict=False)]
    assert max(steps) < 0.2 + 0.1, "never faster than pull_step (+ tracking noise)"
    d0, d1 = placed[0][1] - placed[0][0], placed[-1][1] - placed[-1][0]
    assert abs(d0[1]) > 3.0 and abs(d1[1]) < 0.5, "the eye line ends horizontal"
    assert np.abs(placed[-1] - eye_points(128)).max() < 0.5
    now = apply(truth[len(frames) - 1][0], ASTRONAUT_EYES)
    assert not stab.retarget(now + 0.5), "landmark noise below the tolerance starts no pull"


def test_small_face_in_hd_frame_is_detected():
    """Detection downscales for speed but never so far that a face of `min_face` px is lost (1280x720)."""
    n = int(512 * 0.6)  # the face becomes ~57 px wide
    frame = np.full((720, 1280), 120, np.uint8)
    frame[100:100 + n, 700:700 + n] = cv2.resize(astronaut_grey(), (n, n), interpolation=cv2.INTER_AREA)
    eyes = ASTRONAUT_EYES * 0.6 + [700, 100]
    dets = HaarDetector(det_width=320, min_face=48).detect(frame)
    assert any(all(d.box[0] < ex < d.box[0] + d.box[2] and d.box[1] < ey < d.box[1] + d.box[3] for ex, ey in eyes)
               for d in dets)


def test_tracker_takes_a_config_and_keywords_over_it():
    from edge.perception.face import FaceTrackerConfig

    cfg = FaceTrackerConfig(landmarks="eyes", detect_every=3)
    tracker = FaceTracker(cfg, min_hits=1)
    assert (tracker.detect_every, tracker.min_hits, tracker.landmarks, tracker.size) == (3, 1, "eyes", 128)
    with pytest.raises(UserError, match="det_width must be >= 64"):
        FaceTracker(cfg, det_width=8)
