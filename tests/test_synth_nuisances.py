"""Real-face nuisances of the synthetic source: speech, full blinks, occluders, restless heads, small faces,
codecs; and that the existing kinds give the same clips for a seed as before the nuisances existed."""

from __future__ import annotations

import hashlib
import json

import cv2
import numpy as np
import pytest

from edge.bench.spotting import make_video
from edge.data import faces, synth
from edge.errors import UserError
from edge.perception import geometry


@pytest.fixture(autouse=True, scope="module")
def _faces_once():
    """The built-in face photo is found and aligned once for the module (Haar cascades, ~0.3 s a video)."""
    mp = pytest.MonkeyPatch()
    templates = synth.load_faces()
    mp.setattr(synth, "load_faces", lambda folder=None: templates if folder is None else faces.load_faces(folder))
    yield
    mp.undo()


STILL = dict(noise_sigma=0.0, jpeg_quality=None, drift_px_s=0.0, jitter_px=0.0, illumination=0.0,
             blinks_per_min=0.0, head_turns_per_min=0.0, iod_px=(60.0, 60.0))
BOXES = geometry.roi_boxes(128)


def _still(script: list[dict], seed: int = 3, duration_s: float = 2.5, **over) -> synth.SyntheticVideo:
    return synth.SyntheticVideo("lab200", seed=seed, duration_s=duration_s, fps=30, width=320, height=240,
                                overrides={**STILL, "iod_px": (40.0, 40.0), **over}, script=script)


def _crop(v: synth.SyntheticVideo, k: int) -> np.ndarray:
    """Frame k's face on the 128-px crop (grey float), through the true alignment."""
    inv = cv2.invertAffineTransform(v.face_transform(0, k))
    return cv2.cvtColor(cv2.warpAffine(v.frame(k), inv, (128, 128)), cv2.COLOR_BGR2GRAY).astype(np.float32)


def _roi(img: np.ndarray, *names: str) -> np.ndarray:
    return np.concatenate([img[y0:y1, x0:x1].ravel() for x0, y0, x1, y1 in (BOXES[n] for n in names)])


def _truth_hash(truth: list[dict]) -> str:
    return hashlib.sha256(json.dumps(truth, sort_keys=True).encode()).hexdigest()[:16]


# Computed on the code before the nuisances existed (main at a8bb9e8): truth hash and frame means of
# frames 0, 37 and the last.
BEFORE = {
    "webcam30_random": ("c24199ece9a25a82", (109.3122, 114.9699, 102.9449)),
    "bench_edge60": ("b2b818c73e93cf8c", (121.147, 125.5153, 132.7188)),
    "bench_distractors": ("1a3877d2edfe2925", (114.174, 113.2006, 118.4218)),
}


def test_existing_kinds_give_the_same_clip_for_a_seed_as_before():
    cases = {"webcam30_random": lambda: synth.SyntheticVideo("webcam30", seed=1, duration_s=20.0),
             "bench_edge60": lambda: make_video(0.8, 3.0, 100, 16.0),
             "bench_distractors": lambda: make_video(None, 1.0, 7, 16.0, distractors_only=True)}
    for name, make in cases.items():
        v = make()
        means = [float(v.frame(k).astype(np.float64).mean()) for k in (0, 37, v.n_frames - 1)]
        assert _truth_hash(v.truth) == BEFORE[name][0], name
        assert means == pytest.approx(BEFORE[name][1], abs=0.02), name


def test_new_kinds_are_deterministic_per_seed_and_leave_the_other_events_alone():
    script = [{"t": 0.2, "kind": "micro", "label": "surprise"}, {"t": 0.6, "kind": "speech", "duration_s": 1.0},
              {"t": 1.7, "kind": "blink", "drag": True}, {"t": 1.9, "kind": "occluder", "target": "chin"}]
    a, b, c = _still(script, duration_s=4.5), _still(script, duration_s=4.5), _still(script, seed=4, duration_s=4.5)
    assert a.truth == b.truth and a.truth != c.truth
    assert [t["kind"] for t in a.truth] == ["micro", "speech", "blink", "occluder"]
    k = a.truth[3]["apex"]
    assert np.array_equal(a.frame(k), b.frame(k))
    # The nuisances draw from their own streams: the micro-expression is the one a script without them gets.
    alone = _still(script[:1], duration_s=4.5)
    assert alone.truth[0] == a.truth[0]
    assert set(a.truth[2]) == set(alone.truth[0]) | {"drag"} and 0.1 <= a.truth[2]["drag"] <= 0.3


def test_speech_moves_mouth_and_chin_at_syllable_rate_and_leaves_the_brows_still():
    v = _still([{"t": 0.1, "kind": "speech", "duration_s": 2.0, "nod_px": 0.0}])
    (sp,) = v.truth
    assert sp["kind"] == "speech" and sp["label"] is None and 2.0 <= sp["amplitude_px"] <= 6.0
    assert 2.5 <= sp["rate_hz"] <= 6.5
    ref = _crop(v, 0)
    frames = range(sp["onset"], sp["offset"] + 1)
    mouth, brows = [], []
    for k in frames:
        diff = np.abs(_crop(v, k) - ref)
        mouth.append(_roi(diff, "mouth_left", "mouth_right", "chin").mean())
        brows.append(_roi(diff, "brow_left", "brow_right").mean())
    mouth, brows = np.array(mouth), np.array(brows)
    assert mouth.max() > 5.0 and brows.max() < 0.02 * mouth.max()
    # Opening and closing: one appearance peak per syllable (pauses and jitter aside), 3-6 a second.
    peaks = [i for i in range(1, len(mouth) - 1) if mouth[i] >= mouth[i - 1] and mouth[i] > mouth[i + 1]
             and mouth[i] > 0.25 * mouth.max()]
    rate = len(peaks) / ((sp["offset"] - sp["onset"]) / v.fps)
    assert abs(len(peaks) - sp["syllables"]) <= 1 and 2.5 <= rate <= 6.5, (peaks, sp)
    # The open mouth is drawn, not only warped: the darkest mouth pixels get darker at the widest syllable.
    apex = _crop(v, sp["apex"])
    assert np.percentile(_roi(apex, "mouth_left", "mouth_right"), 2) < np.percentile(_roi(ref, "mouth_left", "mouth_right"), 2)
    nodding = _still([{"t": 0.1, "kind": "speech", "duration_s": 2.0, "nod_px": 1.0}])
    dy = [nodding.face_transform(0, k)[1, 2] for k in frames]
    assert np.ptp(dy) > 0.3


def test_a_drag_blink_moves_the_brows_less_than_the_lids_and_closes_the_eye():
    v = _still([{"t": 0.2, "kind": "blink", "drag": 0.25, "duration_s": 0.3},
                {"t": 1.2, "kind": "blink", "duration_s": 0.3}])
    drag, plain = (e.disp for e in v._events)
    mag = np.hypot(drag[..., 0], drag[..., 1])
    brows = slice(BOXES["brow_left"][1], 36)  # the brow ROI above the upper lid's reach
    lid, brow = _roi(mag, "eye_left", "eye_right").max(), mag[brows].max()
    assert 0.1 * lid <= brow <= 0.4 * lid, (lid, brow)
    assert np.hypot(plain[..., 0], plain[..., 1])[brows].max() < 0.05 * brow
    def fissures(img):  # the eye openings (this person's eye centres): iris, white and lashes when open
        return np.concatenate([img[round(y) - 1:round(y) + 2, round(x) - 7:round(x) + 8].ravel()
                               for x, y in v._faces[0]["eyes"]])

    on, apex, plain_apex = (fissures(_crop(v, k)) for k in (0, v.truth[0]["apex"], v.truth[1]["apex"]))
    assert apex.std() < 0.75 * on.std()  # the lid covers iris and white: flatter
    assert np.percentile(apex, 5) > np.percentile(on, 5) + 30  # no dark iris left
    assert np.percentile(plain_apex, 5) < np.percentile(apex, 5) - 20  # a warp-only blink leaves it showing


@pytest.mark.parametrize("target,covered,clear", [("mouth", ("mouth_left", "mouth_right"), ("brow_left",)),
                                                   ("eye_left", ("eye_left",), ("mouth_right", "eye_right"))])
def test_the_occluder_covers_its_target_while_it_rests(target, covered, clear):
    v = _still([{"t": 0.3, "kind": "occluder", "target": target, "rest_s": 0.6, "duration_s": 1.4}])
    (oc,) = v.truth
    assert oc["kind"] == "occluder" and oc["target"] == target and oc["label"] is None
    ref = _crop(v, 0)
    before = np.abs(_crop(v, oc["onset"] - 1) - ref)
    assert before.max() == 0  # it reaches the head at the interval's onset
    for k in (oc["apex"] - 5, oc["apex"], oc["apex"] + 5):  # resting
        diff = np.abs(_crop(v, k) - ref)
        assert _roi(diff, *covered).mean() > 15, k
        assert _roi(diff, *clear).mean() < 1.0, k
    assert np.abs(_crop(v, oc["offset"] + 1) - ref).max() == 0


def test_small_faces_get_the_eye_distance_asked_for():
    for seed in range(4):
        v = synth.SyntheticVideo("webcam30", seed=seed, duration_s=0.5, overrides={"iod_px": (25.0, 30.0)})
        m = v.face_transform(0, 0)
        eyes = geometry.eye_points(128) @ m[:, :2].T + m[:, 2]
        assert 25.0 - 0.5 <= float(np.hypot(*(eyes[1] - eyes[0]))) <= 30.0 * 1.06  # the preset's slow zoom: 3 %


def test_a_restless_head_never_stops():
    still = dict(drift_px_s=0.0, jitter_px=0.0, head_turns_per_min=0.0)
    calm = synth.SyntheticVideo("edge60", seed=2, duration_s=4.0, fps=30, overrides=still)
    busy = synth.SyntheticVideo("edge60", seed=2, duration_s=4.0, fps=30, overrides={**still, "restless": 1.0})
    pts = np.array([[64.0, 64.0], [64.0, 10.0]])

    def track(v):
        return np.array([pts @ v.face_transform(0, k)[:, :2].T + v.face_transform(0, k)[:, 2] for k in range(len(v))])

    assert np.ptp(track(calm), axis=0).max() < 1e-9
    path = track(busy)
    speed = np.hypot(*np.diff(path, axis=0).transpose(2, 0, 1)) * 30 / calm._faces[0]["s"]  # crop px/s
    assert np.median(speed) > 1.0 and np.percentile(speed, 99) < 60.0
    assert calm.truth == busy.truth  # the head's motion draws from its own stream


def test_random_nuisances_come_from_the_domain_rates():
    base = synth.SyntheticVideo("webcam30", seed=5, duration_s=30.0)
    more = synth.SyntheticVideo("webcam30", seed=5, duration_s=30.0,
                                overrides={"speech_per_min": 6.0, "occluders_per_min": 4.0, "blink_drag": 0.2})
    kinds = {t["kind"] for t in more.truth}
    assert {"speech", "occluder"} <= kinds and not {"speech", "occluder"} & {t["kind"] for t in base.truth}
    same = [t for t in more.truth if t["kind"] not in ("speech", "occluder")]
    assert [(t["kind"], t["onset"]) for t in same] == [(t["kind"], t["onset"]) for t in base.truth]
    assert all(0.0 < t["drag"] <= 0.3 for t in same if t["kind"] == "blink")


@pytest.mark.parametrize("bad", [
    {"t": 0.5, "kind": "speech", "target": "mouth"},              # a key of another kind
    {"t": 0.5, "kind": "occluder", "target": "elbow"},
    {"t": 0.5, "kind": "occluder", "shape": "cat"},
    {"t": 0.5, "kind": "occluder", "rest_s": 2.0, "duration_s": 1.0},
    {"t": 0.5, "kind": "blink", "drag": 2},
    {"t": 0.5, "kind": "speech", "rate_hz": "fast"},
    {"t": "soon", "kind": "speech"},
    {"t": 0.5, "kind": "speech", "amplitude_px": 3.0, "amplitude_frame_px": 2.0},
])
def test_a_bad_nuisance_entry_is_one_error_line(bad):
    with pytest.raises(UserError) as err:
        synth.SyntheticVideo("webcam30", duration_s=1.0, script=[bad])
    assert "\n" not in str(err.value) and str(err.value)


def test_clips_in_other_codecs(tmp_path):
    v = _still([{"t": 0.1, "kind": "speech", "duration_s": 0.3}], duration_s=0.4)
    doc = synth.write_clip(v, tmp_path / "c.mp4", codec="mp4v")
    assert doc["codec"] == "mp4v" and json.loads((tmp_path / "c.json").read_text())["intervals"] == v.truth
    cap = cv2.VideoCapture(str(tmp_path / "c.mp4"))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    assert n == v.n_frames
    if synth.can_write("h264", tmp_path):
        assert synth.write_clip(v, tmp_path / "h.mp4", codec="h264")["codec"] == "h264"
    else:  # this OpenCV's FFmpeg has no H.264 encoder: one clear line
        with pytest.raises(UserError, match="no H.264 encoder"):
            synth.write_clip(v, tmp_path / "h.mp4", codec="h264")
    with pytest.raises(UserError, match="unknown clip codec"):
        synth.write_clip(v, tmp_path / "x.avi", codec="theora")
