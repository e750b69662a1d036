"""The metrics of `bench face --real` (edge.bench.facereal) on synthetic series with known answers, and the
tracker's re-lock that registers the old template instead of jumping to new landmarks."""

from __future__ import annotations

import numpy as np
import pytest

from edge.bench.faceclips import ASTRONAUT_EYES, astronaut_grey
from edge.bench.facereal import JUMP_PX, blink_scores, dips, percentiles, still_jitter
from edge.perception.face import FaceTracker
from edge.perception.face.align import Stabiliser, apply, compose, invert
from edge.perception.geometry import eye_points


def test_percentiles_count_the_known_jump():
    jumps = [1.0] * 19 + [12.0]
    p = percentiles(jumps)
    assert p["p50"] == 1.0 and p["max"] == 12.0 and p["over"] == 1
    assert 1.0 < p["p95"] < 12.0
    assert percentiles([])["over"] == 0 and np.isnan(percentiles([])["max"])
    assert percentiles([JUMP_PX])["over"] == 0, "over means more than JUMP_PX"


def test_still_jitter_measures_alternating_jitter_and_skips_moving_and_missing_frames():
    rng = np.random.default_rng(0)
    n = 200
    still = np.zeros((n, 2)) + [50.0, 60.0]
    still[:, 0] += np.where(np.arange(n) % 2, 0.3, -0.3)  # +-0.3 px every other frame
    rms, count = still_jitter(still, np.ones(n, bool))
    assert count == n - 8 and rms == pytest.approx(0.3 * 8 / 9, rel=0.02)  # about a 9-frame mean of +-0.3
    moving = still + np.arange(n)[:, None] * [2.0, 0.0]  # 2 px / frame: not still
    assert still_jitter(moving, np.ones(n, bool)) == (pytest.approx(np.nan, nan_ok=True), 0)
    gaps = still + rng.normal(0, 0.01, still.shape)
    gaps[100] = np.nan  # no face in frame 100: the windows over it are left out
    ok = np.ones(n, bool)
    ok[:50] = False  # an annotated head turn
    _, count = still_jitter(gaps, ok)
    assert count == (n - 4) - 50 - 9  # centres 50..195 less the 9 windows over frame 100


def test_dips_and_blink_scores():
    eye = np.ones(100)
    eye[10:14] = 0.3   # a blink, annotated 11..13
    eye[50:52] = 0.6   # a shallow dip, annotated 50..51
    eye[80] = 0.2      # a dip on no blink
    eye[90] = np.nan   # no face: not a dip
    assert dips(eye, 0.5) == [(10, 13), (80, 80)]
    blinks = [(11, 13), (50, 51), (70, 72)]
    assert blink_scores(eye, blinks, 0.5) == (1, 1)
    assert blink_scores(eye, blinks, 0.7) == (2, 1)
    eye[67] = 0.1  # within BLINK_SLACK (2) of the third blink's start
    assert blink_scores(eye, blinks, 0.5) == (1, 2)
    eye[68] = 0.1
    assert blink_scores(eye, blinks, 0.5) == (2, 1)


def shifted(grey: np.ndarray, dx: float, dy: float) -> np.ndarray:
    import cv2

    return cv2.warpAffine(grey, np.array([[1.0, 0, dx], [0, 1.0, dy]]), grey.shape[::-1], flags=cv2.INTER_CUBIC,
                          borderMode=cv2.BORDER_REPLICATE)


def test_recover_registers_the_old_template_from_a_rough_guess():
    grey = astronaut_grey()
    stab = Stabiliser(grey, ASTRONAUT_EYES)
    M0 = stab.M.copy()
    moved = shifted(grey, 14.0, -9.0)  # the face moved while the lock was lost
    true = compose(M0, np.array([[1.0, 0, -14.0], [0, 1.0, 9.0]]))
    # The guess from a detection box that is off by a few px (Haar boxes are).
    guess = compose(M0, np.array([[1.0, 0, -10.5], [0, 1.0, 6.0]]))
    r = stab.recover(moved, guess)
    assert r is not None and r.ok
    err = np.hypot(*(apply(invert(stab.M), eye_points()) - apply(invert(true), eye_points())).T).max()
    assert err < 0.3, f"recovered eyes {err:.2f} frame px from the truth"
    # A frame without the face: nothing registers, the stabiliser is left as it was.
    blank = np.full_like(grey, 128)
    before = stab.M.copy()
    assert stab.recover(blank, guess) is None and np.array_equal(stab.M, before)


def test_a_lost_track_is_relocked_without_a_jump():
    grey = astronaut_grey()
    tracker = FaceTracker(detector="haar", landmarks="eyes", detect_every=1, min_hits=1, max_missed=5)
    for _ in range(3):
        out = tracker.update(grey)
    assert len(out.track_ids) == 1
    M_before = out.transforms[0].astype(np.float64)
    blank = np.full_like(grey, 128)
    tracker.update(blank)  # the lock is lost
    assert tracker.tracks and tracker.tracks[0].lost
    moved = shifted(grey, 30.0, 20.0)  # too far for the tracker to follow by itself
    tracker.update(moved)  # the detection round re-locks it
    out = tracker.update(moved)
    assert out.track_ids.tolist() == [tracker.tracks[0].id] and tracker.tracks[0].relocks == 1
    # The crop's eye points lie on the same spots of the face as before the loss (moved by 30, 20).
    eyes_now = apply(invert(out.transforms[0].astype(np.float64)), eye_points())
    eyes_then = apply(invert(M_before), eye_points()) + [30.0, 20.0]
    assert np.hypot(*(eyes_now - eyes_then).T).max() < 0.5
