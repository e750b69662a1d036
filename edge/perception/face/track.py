"""Multi-face tracker: detection every N frames, rigid stabilisation in between, stable track ids.

Rules:
- Detection runs on frame 0 and every `detect_every` frames (and on every frame while a track has lost
  its lock, to re-lock it quickly; these extra rounds do not count as misses). Detections are matched to tracks by IoU of boxes (greedy, best first).
- Birth: an unmatched detection starts a tentative track (eyes from the detector, or the landmarker,
  place its aligned crop). It is confirmed, and only then output, after `min_hits` detections.
- Between detections every track follows its face by itself (edge.perception.face.align.Stabiliser).
- A track whose lock is lost is re-locked from the next matching detection (a new alignment: its
  head_motion that frame is the jump, large, so the spotter discards it).
- Death: a track unmatched in `max_missed` detection rounds in a row, or lost for longer than that, or a
  duplicate of an older track (boxes overlapping by IoU > 0.5), ends; ids are never reused. An
  established track (ESTABLISHED_HITS detections) that still holds its lock lives `max_missed_locked`
  rounds without a detection: Haar finds no face with a hand over one eye, and the track that ended
  there came back as a new one, whose spotting needs a second of history (docs/face-frontend.md).
- A frame's detection round runs after its crops are out (track(), then detect()): births, re-locks and
  ends show in the next frame's output, and detection is never in a frame's latency. With
  detect(background=True) (the face node) the detector itself runs in a worker thread while the next
  frame is awaited and tracked (OpenCV releases the GIL), and the round's results are applied after that
  frame's crops are out: they show one frame later, at the same frame on every run.
"""

from __future__ import annotations

import dataclasses
import logging
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from edge.errors import UserError
from edge.perception.face.align import Stabiliser, apply, compose, invert
from edge.perception.face.config import FaceTrackerConfig
from edge.perception.face.detect import Detection, drop_enclosing, make_detector
from edge.perception.face.landmarks import POINT_LANDMARKS, make_landmarker
from edge.perception.face.state import FaceState, FaceStateTracker

log = logging.getLogger(__name__)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two (x, y, w, h) boxes."""
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[3], b[1] + b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    union = a[2] * a[3] + b[2] * b[3] - inter
    return float(inter / union) if union > 0 else 0.0


@dataclass
class Track:
    """One face: its stabiliser and bookkeeping. `box_crop` (4, 2) is the detection box's corners in
    template crop px, mapped back to the frame each frame to give the track's box. `eyes_crop` (2, 2) are
    the eyes found at birth (or at the last retarget) in template crop px: the stabilisation keeps them
    there."""

    id: int
    stab: Stabiliser
    box_crop: np.ndarray
    eyes_crop: np.ndarray
    hits: int = 1
    missed: int = 0
    lost: int = 0
    confirmed: bool = False
    motion: float = 0.0
    jump: float = 0.0  # a re-lock's jump, frame px, added to the next output's head motion
    relocks: int = 0  # how often the lock was lost and found again
    last: object = None  # the latest StabResult
    points_crop: np.ndarray | None = None  # (68, 2) dlib landmarks of the last detection round, crop px
    state: FaceStateTracker | None = None  # made at the first output, when the stream's fps is known

    def box(self) -> np.ndarray:
        """(x, y, w, h) frame px."""
        c = apply(invert(self.stab.M), self.box_crop)
        lo, hi = c.min(0), c.max(0)
        return np.array([lo[0], lo[1], hi[0] - lo[0], hi[1] - lo[1]])


@dataclass
class TrackedFaces:
    """The tracker's output for one frame, laid out as the `crops` message's arrays (N confirmed faces)."""

    crops: np.ndarray          # (N, S, S) uint8
    track_ids: np.ndarray      # (N,) int32
    boxes: np.ndarray          # (N, 4) float32 x, y, w, h frame px
    points: np.ndarray         # (N, K, 2) float32 crop px (K = 2 eyes or 68 dlib points)
    residual: np.ndarray       # (N,) float32 crop px
    transforms: np.ndarray     # (N, 2, 3) float32 frame -> crop
    head_motion: list[float] = field(default_factory=list)  # frame px / frame per face
    ended: list[int] = field(default_factory=list)          # ids of confirmed tracks that ended here
    detected: bool = False     # whether a detection round ran since the last output (its births, re-locks
    # and ends are in this one; dlib68 landmarks were searched again)
    # The facial state (edge.perception.face.state.FaceState), as arrays:
    eye_open: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float32))  # (N, 2) left, right
    mouth_open: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))     # (N,)
    head_pose: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.float32))  # (N, 3) yaw, pitch,
    # roll degrees (nan: not estimated)
    speech: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))         # (N,) 0..1
    states: list[FaceState] = field(default_factory=list)  # the same, per face

    @classmethod
    def zeros(cls, n: int, size: int, k: int, ended: list[int] | None = None) -> TrackedFaces:
        """N faces' worth of zeroed arrays (N = 0: an empty frame, still sent so time advances)."""
        return cls(np.zeros((n, size, size), np.uint8), np.zeros(n, np.int32), np.zeros((n, 4), np.float32),
                   np.zeros((n, k, 2), np.float32), np.zeros(n, np.float32), np.zeros((n, 2, 3), np.float32),
                   [], list(ended or []), eye_open=np.zeros((n, 2), np.float32),
                   mouth_open=np.zeros(n, np.float32), head_pose=np.zeros((n, 3), np.float32),
                   speech=np.zeros(n, np.float32))

    def arrays(self) -> dict[str, np.ndarray]:
        return {"crops": self.crops, "track_ids": self.track_ids, "boxes": self.boxes, "points": self.points,
                "residual": self.residual, "transforms": self.transforms, "eye_open": self.eye_open,
                "mouth_open": self.mouth_open, "head_pose": self.head_pose, "speech": self.speech}


class FaceTracker:
    """Detect, track, align and stabilise every face of a video stream.

    Every RETARGET_ROUNDS-th matched detection round the landmarks are searched again, and a track whose
    crop placement disagrees with them is pulled towards them slowly (edge.perception.face.align, "Slow correction").

    Settings: a FaceTrackerConfig (edge.perception.face.config), and/or its fields as keywords, which replace the
    config's: FaceTracker(detector="haar", landmarks="eyes", detect_every=5).

    `fps` (frames per second, default 30) times the facial state's filters (edge.perception.face.state);
    set it before the first frame when the stream's rate is known.
    """

    RETARGET_ROUNDS = 4
    ESTABLISHED_HITS = 8  # detections before a locked track outlives missed rounds (not a passing false face)

    def __init__(self, config: FaceTrackerConfig | None = None, **fields: Any) -> None:
        cfg = dataclasses.replace(config or FaceTrackerConfig(), **fields).check()
        self.config = cfg
        self.detector = make_detector(cfg.detector, cfg.model or None, cfg.det_width, cfg.min_face)
        self.landmarker = make_landmarker(cfg.landmarks, cfg.landmark_model or None)
        self.landmarks = self.landmarker.kind
        self.detect_every, self.size = cfg.detect_every, cfg.crop_size
        self.min_hits, self.max_missed, self.max_faces, self.max_age = (cfg.min_hits, cfg.max_missed, cfg.max_faces,
                                                                        cfg.max_age)
        self.tracks: list[Track] = []
        self.frame_index = -1
        self._grey: np.ndarray | None = None  # the last tracked frame, until its detection round has run
        self._ended: list[int] = []  # confirmed tracks ended by that round, for the next output
        self._detected = False  # whether that round ran (the next output searches landmarks again)
        # a round whose detector runs in the background: (detections, its frame, scheduled)
        self._round: tuple[Future, np.ndarray, bool] | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._next_id = 0
        self.fps = 30.0
        log.info("face tracker: detector %s, landmarks %s, detect every %d frames",
                 self.detector.name, self.landmarks, cfg.detect_every)

    # ------------------------------------------------------------------------------------------------
    def update(self, image: np.ndarray) -> TrackedFaces:
        """Process the next frame: (H, W) grey or (H, W, 3) BGR uint8. The same as track() then detect()."""
        out = self.track(image)
        self.detect()
        return out

    def track(self, image: np.ndarray) -> TrackedFaces:
        """Stabilise every track on the next frame, (H, W) grey or (H, W, 3) BGR uint8, and return the crops.

        The detection round due on this frame runs in detect(), once these crops are on their way: a
        detection costs ~15 ms (40 on a busy 2-core machine), and held in front of every fifth frame it was
        in the latency of every event that closed on one. Its births, re-locks and ends show in the next
        frame's output; the crops of tracked faces do not depend on it."""
        if image.ndim == 3:
            image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        if image.ndim != 2 or image.dtype != np.uint8:
            raise UserError(f"face tracker needs uint8 grey or BGR frames, got {image.dtype} {image.shape}")
        grey = np.ascontiguousarray(image)
        self.frame_index += 1
        for t in self.tracks:
            r = t.stab.update(grey)
            t.last, t.motion, t.jump = r, r.motion + t.jump, 0.0
            t.lost = 0 if r.ok else t.lost + 1
        out = self._output(grey, self._ended, self._detected)
        self._ended, self._detected, self._grey = [], False, grey
        return out

    def detect(self, background: bool = False) -> None:
        """Run the detection round due on the frame last passed to track(), if any: every
        `detect_every` frames, and every frame while a track has lost its lock. `background`: run the
        detector in a worker thread and apply its results at the next call (after the next frame's
        crops are out) instead of now."""
        self._apply_round()
        grey, self._grey = self._grey, None
        if grey is None:
            return
        scheduled = self.frame_index % self.detect_every == 0
        if scheduled or any(t.lost for t in self.tracks):
            if background:
                self._pool = self._pool or ThreadPoolExecutor(1, thread_name_prefix="face-detect")
                self._round = (self._pool.submit(self.detector.detect, grey), grey, scheduled)
            else:
                done: Future = Future()
                done.set_result(self.detector.detect(grey))
                self._round = (done, grey, scheduled)
                self._apply_round()
        for t in list(self.tracks):
            if t.lost > self.max_missed * self.detect_every:
                self._ended += self._end(t, "lost")

    def _apply_round(self) -> None:
        """Births, re-locks and ends from the pending detection round (waits for its detector)."""
        if self._round is None:
            return
        dets, grey, scheduled = self._round
        self._round = None
        self._ended += self._associate(grey, drop_enclosing(dets.result()), scheduled)
        self._detected = True

    def _associate(self, grey: np.ndarray, dets: list[Detection], scheduled: bool) -> list[int]:
        """Match detections to tracks; births and deaths. Only `scheduled` rounds count as misses, so
        the extra detections run while a track is lost do not shorten its life."""
        ended: list[int] = []
        pairs = sorted(((iou(t.box(), d.box), i, j) for i, t in enumerate(self.tracks) for j, d in enumerate(dets)),
                       reverse=True)
        used_t, used_d = set(), set()
        for score, i, j in pairs:
            if score < 0.3 or i in used_t or j in used_d:
                continue
            used_t.add(i)
            used_d.add(j)
            t, d = self.tracks[i], dets[j]
            t.hits, t.missed = t.hits + 1, 0
            t.confirmed = t.confirmed or t.hits >= self.min_hits
            if t.lost:
                self._relock(t, grey, d)
            elif scheduled and t.hits % self.RETARGET_ROUNDS == 0:
                eyes, found = self._eyes(grey, d)
                if found and t.stab.retarget(eyes):
                    t.eyes_crop = apply(t.stab.M, eyes)
        for i, t in enumerate(list(self.tracks)):
            if i not in used_t and scheduled:
                t.missed += 1
                locked = t.lost == 0 and t.hits >= self.ESTABLISHED_HITS
                if t.missed >= (max(self.config.max_missed_locked, self.max_missed) if locked else self.max_missed):
                    ended += self._end(t, "no detection")
        for j, d in enumerate(dets):
            if j not in used_d and len(self.tracks) < self.max_faces:
                self._birth(grey, d)
        # Two tracks on one face (a re-detection beside a drifting track): keep the older.
        for a in list(self.tracks):
            for b in list(self.tracks):
                if a.id < b.id and a in self.tracks and b in self.tracks and iou(a.box(), b.box()) > 0.5:
                    ended += self._end(b, "duplicate")
        return ended

    def _eyes(self, grey: np.ndarray, d: Detection) -> tuple[np.ndarray, bool]:
        if d.eyes is not None and self.landmarks == "eyes":
            return d.eyes, True
        return self.landmarker.eyes(grey, d.box)

    def _new_stab(self, grey: np.ndarray, d: Detection) -> tuple[Stabiliser, np.ndarray, np.ndarray] | None:
        eyes, _ = self._eyes(grey, d)
        try:
            stab = Stabiliser(grey, eyes, self.size, max_age=self.max_age)
        except ValueError:  # eyes coincide: not a usable face
            return None
        x, y, w, h = d.box
        corners = np.array([[x, y], [x + w, y], [x + w, y + h], [x, y + h]])
        return stab, apply(stab.M, corners), apply(stab.M, eyes)

    def _birth(self, grey: np.ndarray, d: Detection) -> None:
        made = self._new_stab(grey, d)
        if made is None:
            return
        t = Track(self._next_id, *made)
        t.confirmed = self.min_hits <= 1
        t.last = t.stab.update(grey)  # registers the birth frame against its own template: residual ~0
        self._next_id += 1
        self.tracks.append(t)
        log.debug("track %d born at frame %d, box %s", t.id, self.frame_index, np.round(d.box, 1).tolist())

    def _relock(self, t: Track, grey: np.ndarray, d: Detection) -> None:
        """A lost track found again by detection `d`. First the old template is registered near where the
        detection box moved (Stabiliser.recover): the crop keeps its placement on the face. Only when that
        fails is the alignment rebuilt from the landmarks in `d`, as at a birth (a visible jump)."""
        old = t.stab.M
        x, y, w, h = t.box()
        dx, dy, dw, dh = d.box
        k = float(np.sqrt(dw * dh / max(w * h, 1e-9)))  # the face's scale change while lost
        # frame -> frame similarity moving the tracked box onto the detection: new M = old M o move^-1
        move = np.array([[k, 0.0, dx + dw / 2 - k * (x + w / 2)], [0.0, k, dy + dh / 2 - k * (y + h / 2)]])
        found = t.stab.recover(grey, compose(old, invert(move)))
        if found is not None:
            t.last, how = found, "recovered"
        else:
            made = self._new_stab(grey, d)
            if made is None:
                return
            t.stab, t.box_crop, t.eyes_crop = made
            t.last, how = t.stab.update(grey), "rebuilt from landmarks"
        t.jump, t.lost = t.stab.motion(old, t.stab.M), 0
        t.relocks += 1
        log.info("track %d re-locked at frame %d, %s (jump %.1f px)", t.id, self.frame_index, how, t.jump)

    def _end(self, t: Track, why: str) -> list[int]:
        self.tracks.remove(t)
        log.debug("track %d ended at frame %d: %s", t.id, self.frame_index, why)
        return [t.id] if t.confirmed else []

    def _output(self, grey: np.ndarray, ended: list[int], detected: bool) -> TrackedFaces:
        live = [t for t in self.tracks if t.confirmed and t.lost == 0]
        out = TrackedFaces.zeros(len(live), self.size, self.n_points, ended)
        out.detected = detected
        for i, t in enumerate(live):
            box = t.box()
            out.crops[i] = t.last.crop
            out.track_ids[i] = t.id
            out.boxes[i] = box
            out.residual[i] = t.last.residual
            out.transforms[i] = t.stab.output_M
            if self.landmarks in POINT_LANDMARKS:
                # The facial state needs the lids and lips of every frame (a blink lasts 4-9 frames): they
                # are searched on the aligned crop, inside the detection box's place there.
                corners = apply(t.stab.C, t.box_crop)
                lo, hi = corners.min(0), corners.max(0)
                now = self.landmarker.crop_points(t.last.crop, np.array([lo[0], lo[1], *(hi - lo)]))
                if self.landmarks == "mesh":  # the crop's points are this frame's: no second search
                    out.points[i] = now
                else:
                    # Searched on the frame on detection rounds only (3 ms a face, a third of the tracker's
                    # time per frame): in between the stabilised crop holds the face still, so crop-px
                    # landmarks stay put.
                    if detected or t.points_crop is None:
                        t.points_crop = apply(t.stab.output_M, self.landmarker.points(grey, box))
                    out.points[i] = t.points_crop
            else:
                now = out.points[i] = apply(t.stab.C, t.eyes_crop)
            out.head_motion.append(round(float(t.motion), 4))
            if t.state is None:
                t.state = FaceStateTracker(self.landmarks, self.fps, self.size)
            st = t.state.update(t.last.crop, now, t.stab.output_M, (grey.shape[1], grey.shape[0]))
            out.states.append(st)
            out.eye_open[i], out.mouth_open[i], out.speech[i] = st.eye_open, st.mouth_open, st.speech
            out.head_pose[i] = (st.yaw, st.pitch, st.roll)
        return out

    @property
    def pose_source(self) -> str:
        """How head_pose is estimated: "pnp68" (68 points: dlib's or the mesh's) or "eye_line" (roll only)."""
        return "pnp68" if self.landmarks in POINT_LANDMARKS else "eye_line"

    @property
    def n_points(self) -> int:
        """K, the landmarks per face in `points`."""
        return 68 if self.landmarks in POINT_LANDMARKS else 2

    # What a restarted face node goes on from (its checkpoint): everything that changes from frame to frame.
    # The detector and landmarker hold only their models, and the worker thread nothing of its own.
    _STATE = ("tracks", "frame_index", "_grey", "_ended", "_detected", "_next_id", "fps")

    def save(self) -> dict[str, Any]:
        """The tracker's state, picklable: restore() on a tracker of the same config goes on from it as this
        one would. A detection round still running is waited for and saved as its result, so its births
        and re-locks show at the same frame as they would have."""
        state = {name: getattr(self, name) for name in self._STATE}
        if self._round is not None:
            dets, grey, scheduled = self._round
            state["round"] = (dets.result(), grey, scheduled)
        return state

    def restore(self, state: dict[str, Any]) -> None:
        """Go on from save()'s result (a KeyError on a state that is not one changes nothing)."""
        values = [state[name] for name in self._STATE]
        pending = state.get("round")
        for name, value in zip(self._STATE, values, strict=True):
            setattr(self, name, value)
        self._round = None
        if pending is not None:
            done: Future = Future()
            done.set_result(pending[0])
            self._round = (done, pending[1], pending[2])

    def close(self) -> TrackedFaces:
        """End every track (end of stream): an empty frame whose `ended` lists the confirmed ids."""
        self._apply_round()
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
        ended = self._ended + [t.id for t in self.tracks if t.confirmed]
        self.tracks.clear()
        self._ended, self._grey = [], None
        return TrackedFaces.zeros(0, self.size, self.n_points, ended)
