"""`facesleuth bench face --real`: the face front-end on the annotated real clips (edge.data.real), per
detector x landmarks source that is installed here.

Per combination and clip set (tuning clips and held-out clips are reported apart, never pooled):
- `round_*`: at every detection round, for each tracked face the detector matched, how far the
  landmarks' eyes in the detection box lie from where tracking had the eyes (the crop's canonical eye
  points mapped back to the frame): the jump a re-lock from that detection would make. In crop px (the
  aligned crop's scale at that frame) and as a fraction of the inter-ocular distance (IOD); p50, p95,
  max and the count over 5 crop px. `centre_*`: the same for the detection box's centre against the
  tracked box's centre.
- `relocks`, `relock_*`: the re-locks that did happen (a lost track found again), and how far the
  emitted crop's eye points moved from the track's last emitted placement, crop px.
- `jitter_rms`: crop jitter on still stretches: the emitted crop's centre (frame px, as crop px) minus
  its centred JITTER_WINDOW-frame moving average, RMS over the frames where that average moves less than
  STILL_PX crop px per frame and no head turn or occlusion is annotated.
- `losses` (a confirmed track lost its lock), `tracks` (ids output; one person per clip: 1 is ideal),
  `covered` (fraction of frames with a face out).
- `ms/frame`: the tracker's own time per frame (the probes below are timed apart and left out).
- blinks: eye_open = the lower of the two eyes' openness; a "dip" is a run of frames under a threshold
  (DIP_THRESHOLDS, fixed, not tuned); an annotated spontaneous blink is found when a dip lies within
  BLINK_SLACK frames of its span; `false dips/min` counts dips touching no blink span.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from edge.data.real import RealClip
from edge.perception.face import FaceTracker
from edge.perception.face.align import apply, invert
from edge.perception.face.track import iou
from edge.perception.geometry import eye_points
from edge.progress import Progress

JUMP_PX = 5.0         # crop px: a jump over this is visible in the crops (the users' report: 5-33 px)
JITTER_WINDOW = 9     # frames of the moving average that the still-stretch jitter is measured about
STILL_PX = 0.5        # crop px per frame: the moving average slower than this is a still stretch
DIP_THRESHOLDS = (0.5, 0.7)  # eye_open (1 = the track's usual open level) under which a run is a dip
BLINK_SLACK = 2       # frames either side of an annotated blink span in which its dip may lie
NOT_SPONTANEOUS = "not a spontaneous blink"


def percentiles(values: Sequence[float]) -> dict[str, float]:
    """p50, p95, max and the count over JUMP_PX of a list of jumps (nan and 0 when empty)."""
    v = np.asarray(values, np.float64)
    if v.size == 0:
        return {"p50": float("nan"), "p95": float("nan"), "max": float("nan"), "over": 0}
    return {"p50": float(np.median(v)), "p95": float(np.percentile(v, 95)), "max": float(v.max()),
            "over": int((v > JUMP_PX).sum())}


def still_jitter(centres: np.ndarray, still_ok: np.ndarray, window: int = JITTER_WINDOW,
                 still_px: float = STILL_PX) -> tuple[float, int]:
    """RMS crop px of (T, 2) crop-centre positions (crop px units) about their centred moving average, over
    frames where that average moves under `still_px` per frame and `still_ok` (T,) bool is true; and how
    many frames that was. Frames with a nan centre (no face) break the series: windows never span them."""
    c = np.asarray(centres, np.float64)
    n = len(c)
    if n < window:
        return float("nan"), 0
    half = window // 2
    resid, count = [], 0
    for k in range(half, n - half):
        w = c[k - half:k + half + 1]
        if np.isnan(w).any() or not still_ok[k]:
            continue
        mean = w.mean(0)
        speed = float(np.hypot(*(w[-1] - w[0]))) / (window - 1)
        if speed >= still_px:
            continue
        resid.append(np.hypot(*(c[k] - mean)))
        count += 1
    if not resid:
        return float("nan"), 0
    return float(np.sqrt(np.mean(np.square(resid)))), count


def dips(eye_open: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """Runs (first, last frame, inclusive) where eye_open (T,) is under `threshold` (nan: not a dip)."""
    below = np.nan_to_num(np.asarray(eye_open, np.float64), nan=np.inf) < threshold
    runs, start = [], None
    for k, b in enumerate(below.tolist() + [False]):
        if b and start is None:
            start = k
        elif not b and start is not None:
            runs.append((start, k - 1))
            start = None
    return runs


def blink_scores(eye_open: np.ndarray, blinks: Sequence[tuple[int, int]], threshold: float,
                 slack: int = BLINK_SLACK) -> tuple[int, int]:
    """(annotated blinks found, dips touching no blink) for eye_open (T,) and blink spans (start, end)."""
    runs = dips(eye_open, threshold)
    near = [(s - slack, e + slack) for s, e in blinks]
    found = sum(any(a <= r1 and r0 <= b for r0, r1 in runs) for a, b in near)
    false = sum(not any(a <= r1 and r0 <= b for a, b in near) for r0, r1 in runs)
    return found, false


@dataclass
class ClipRun:
    """What one tracker did on one clip (the inputs of the metrics)."""

    frames: int = 0
    seconds: float = 0.0  # the tracker's own time
    round_eye: list[float] = field(default_factory=list)      # crop px
    round_eye_iod: list[float] = field(default_factory=list)  # IOD fractions
    round_centre: list[float] = field(default_factory=list)   # crop px
    relock: list[float] = field(default_factory=list)         # crop px
    losses: int = 0
    ids: set = field(default_factory=set)
    covered: int = 0
    centres: list[np.ndarray] = field(default_factory=list)   # (2,) crop-px units, nan when no face
    eye_open: list[float] = field(default_factory=list)


class _Probe:
    """Wraps the tracker's detector: before each detection round it notes every track's emitted placement
    and box, after it the detections, so that the round's disagreement and re-locks can be measured."""

    def __init__(self, tracker: FaceTracker) -> None:
        self.tracker, self.inner = tracker, tracker.detector
        self.name = self.inner.name
        self.round: tuple[np.ndarray, list, dict] | None = None

    def detect(self, grey: np.ndarray) -> list:
        before = {t.id: (t.stab.output_M.copy(), t.box(), t.lost) for t in self.tracker.tracks}
        dets = self.inner.detect(grey)
        self.round = (grey, dets, before)
        return dets


def _eyes_frame(M: np.ndarray, size: int) -> np.ndarray:
    return apply(invert(M), eye_points(size))


def _scale(M: np.ndarray) -> float:
    return float(np.hypot(M[0, 0], M[1, 0]))


def run_clip(clip: RealClip, tracker_kw: dict[str, Any], progress: Progress | None = None,
             max_frames: int | None = None) -> ClipRun:
    """Run a fresh tracker over a clip's frames (decoded before timing) and collect ClipRun."""
    cap = cv2.VideoCapture(str(clip.path))
    frames = []
    while max_frames is None or len(frames) < max_frames:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(f, cv2.COLOR_BGR2GRAY))
    cap.release()
    tracker = FaceTracker(**tracker_kw)
    tracker.fps = clip.fps
    probe = _Probe(tracker)
    tracker.detector = probe
    size = tracker.size
    canon = eye_points(size)
    iod_crop = float(np.hypot(*(canon[1] - canon[0])))
    run = ClipRun(frames=len(frames))
    last_out: dict[int, np.ndarray] = {}  # track id -> its last emitted placement
    was_lost: dict[int, int] = {}
    relocks_seen: dict[int, int] = {}
    for grey in frames:
        t0 = time.perf_counter()
        out = tracker.update(grey)
        run.seconds += time.perf_counter() - t0
        if probe.round is not None:
            _, dets, before = probe.round
            probe.round = None
            for M, box, lost in before.values():
                if lost:
                    continue
                match = max(dets, key=lambda d: iou(box, d.box), default=None)
                if match is None or iou(box, match.box) < 0.3:
                    continue
                s = _scale(M)
                eyes, _ = tracker.landmarker.eyes(grey, match.box)  # not timed: a probe, not the tracker's
                jump = float(np.hypot(*(eyes - _eyes_frame(M, size)).T).max()) * s
                run.round_eye.append(jump)
                run.round_eye_iod.append(jump / iod_crop)
                c_det = match.box[:2] + match.box[2:] / 2
                run.round_centre.append(float(np.hypot(*(c_det - (box[:2] + box[2:] / 2)))) * s)
        for t in tracker.tracks:
            if t.confirmed and t.lost and not was_lost.get(t.id):
                run.losses += 1
            was_lost[t.id] = t.lost
        centre = np.full(2, np.nan)
        run.covered += len(out.track_ids) > 0
        for i, tid in enumerate(out.track_ids.tolist()):
            M = out.transforms[i].astype(np.float64)
            n = relocks_of(tracker, tid)
            if tid in last_out and n > relocks_seen.get(tid, 0):
                run.relock.append(float(np.hypot(*(_eyes_frame(M, size) - _eyes_frame(last_out[tid], size)).T).max())
                                  * _scale(M))
            relocks_seen[tid] = n
            last_out[tid] = M
            run.ids.add(tid)
            if i == 0:
                centre = apply(invert(M), [[size / 2, size / 2]])[0] * _scale(M)
                run.eye_open.append(float(min(out.eye_open[0])))
        if len(out.track_ids) == 0:
            run.eye_open.append(float("nan"))
        run.centres.append(centre)
        if progress is not None:
            progress.update(1)
    tracker.close()
    return run


def relocks_of(tracker: FaceTracker, tid: int) -> int:
    """How often track `tid` has been re-locked so far (0 if it has ended)."""
    return next((t.relocks for t in tracker.tracks if t.id == tid), 0)


def summarise(clips: Sequence[RealClip], runs: Sequence[ClipRun]) -> dict[str, Any]:
    """One row's numbers for a set of clips (lists concatenated, counts added)."""
    rows: dict[str, Any] = {}
    eye = percentiles([v for r in runs for v in r.round_eye])
    iod = percentiles([v for r in runs for v in r.round_eye_iod])
    cen = percentiles([v for r in runs for v in r.round_centre])
    rel = percentiles([v for r in runs for v in r.relock])
    frames = sum(r.frames for r in runs)
    jit, jit_n = [], 0
    for c, r in zip(clips, runs, strict=True):
        ok = np.ones(r.frames, bool)
        for e in c.events:
            if e.kind in ("head_turn", "occlusion"):
                ok[e.start:e.end + 1] = False
        v, n = still_jitter(np.array(r.centres), ok)
        if n:
            jit.append(v * v * n)
            jit_n += n
    rows.update({
        "rounds": len([v for r in runs for v in r.round_eye]),
        "round_p50": eye["p50"], "round_p95": eye["p95"], "round_max": eye["max"], "round_over5": eye["over"],
        "round_iod_p95": iod["p95"], "round_iod_max": iod["max"],
        "centre_p50": cen["p50"], "centre_p95": cen["p95"], "centre_max": cen["max"], "centre_over5": cen["over"],
        "relocks": sum(len(r.relock) for r in runs), "relock_p50": rel["p50"], "relock_max": rel["max"],
        "jitter_rms": float(np.sqrt(sum(jit) / jit_n)) if jit_n else float("nan"), "still_frames": jit_n,
        "losses": sum(r.losses for r in runs), "tracks": sum(len(r.ids) for r in runs),
        "covered": sum(r.covered for r in runs) / frames if frames else float("nan"),
        "ms/frame": 1e3 * sum(r.seconds for r in runs) / frames if frames else float("nan"),
    })
    minutes = frames and sum(r.frames / c.fps for c, r in zip(clips, runs, strict=True)) / 60
    for thr in DIP_THRESHOLDS:
        found = false = total = 0
        for c, r in zip(clips, runs, strict=True):
            spans = [(e.start, e.end) for e in c.spans("blink") if not e.note.startswith(NOT_SPONTANEOUS)]
            f, x = blink_scores(np.array(r.eye_open), spans, thr)
            found, false, total = found + f, false + x, total + len(spans)
        rows[f"blinks<{thr}"] = f"{found}/{total}"
        rows[f"false dips/min<{thr}"] = round(false / minutes, 2) if minutes else float("nan")
    return rows
