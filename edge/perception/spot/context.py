"""What goes on around the face at each frame: talking, the eyes shut, the head pose, occluded ROIs.

Real faces between micro-expressions talk, blink and touch themselves; none of that is a micro-expression,
and each moves some ROIs a lot. Per track and frame, `ContextTracker.update()` reads the face node's
facial state (FrameInfo: eye openness, speech activity, head pose, per-ROI occlusion) and the flow
features, and says which channels cannot carry an event at that frame (`muted`) and why:

- talking (FrameContext.talking): the mouth swinging open and shut at least `speech_swings` times within
  `speech_window_s`, read from the flow (any landmarks): the mouth's or the chin's mean vertical
  displacement, averaged over SWING_SMOOTH frames, reversing by `speech_px` (a micro-expression rises and
  returns once: two swings). The landmarks' lip gap is not used: dlib's lip points jitter by 0.1-0.2 eye
  distances on closed, still lips (docs/spotting.md). Words open the mouth at 1-2 Hz and syllables at
  2-8 Hz; the face node's speech activity (the lip gap's 2-8 Hz band energy) missed the slower talking of
  the real clips, so it is context, not a decision (docs/spotting.md). While talking, the mouth, chin and mouth-pair
  channels are muted: they neither open nor hold an event, and an interval that only they carried is
  speech. Brows, eyes and nose still count; their intervals carry `talking` in their context.
- eyes shut (FrameContext.shut): both eyes' mean openness under `eye_shut` of its open level over the last
  second. A closure that reopens within `blink_max_s` is a blink (EyeClosures): the spotter emits a
  blink interval for it, whatever the brows did, and a motion interval of the eye region over it is that
  blink, not an expression. Only landmarks with lid points give openness worth this (not "eyes": its
  appearance measure also drops in head turns).
- occluded ROIs: the ROI's warp residual (change its own flow cannot explain: edge.perception.spot.occlusion)
  at or over `occlusion_k` times its usual, except the eyes (the lid is the eye's own occluder) and the
  mouth and chin while talking (an open mouth is the face's own). Occluded ROIs' channels are muted.
- the face's edges (FrameContext.edge): the same score at the jaw line, outside the ROIs, where a hand
  comes in; it mutes nothing, and a micro interval next to a frame where it reaches `occlusion_k` is the
  hand's (edge.perception.spot.describe).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from edge.perception.geometry import ROIS
from edge.perception.spot.features import PAIRS
from edge.perception.spot.params import SpotParams
from edge.perception.spot.records import FrameInfo

SPEECH_ROIS = ("mouth_left", "mouth_right", "chin")  # what the jaw and lips move when talking
SPEECH_PAIRS = ("mouth",)
NO_LIDS = ("eyes", "")  # landmark sources whose eye openness cannot tell a blink (module docstring)
SWING_SMOOTH = 3  # frames: the flow's frame-to-frame noise averages out, a syllable (>= 0.12 s) does not
OPEN_AGAIN = 0.85  # eye openness back over this (of the last second's open level): a closure's edges
EYE_LEVEL_Q = 75.0  # percentile of the last second's openness taken as its open level


@dataclass(frozen=True)
class FrameContext:
    """One frame of one track: what goes on besides expressions (module docstring)."""

    talking: bool = False
    speech: float = math.nan            # the face node's speech activity 0..1 (nan: none sent)
    swings: int = 0                     # mouth swings (lip gap or flow) within speech_window_s
    eye_open: float = math.nan          # both eyes' mean openness over the last second's open level (nan:
    # unknown or not trusted)
    shut: bool = False
    head_pose: tuple[float, float, float] | None = None  # yaw, pitch, roll, degrees
    occluded: tuple[str, ...] = ()      # ROI names
    edge: float = math.nan              # the face's lower edges' warp residual over its usual (nan: none sent)


@dataclass
class Closure:
    """One eye closure: frames from the lids leaving their open level to their return, the shut part."""

    start: int                  # first frame under OPEN_AGAIN before the shut frames (-1: from the start)
    shut_from: int              # first shut frame
    shut_to: int                # last shut frame so far
    end: int = -1               # first frame back over OPEN_AGAIN (-1 while not yet)
    deepest: int = -1           # frame of the lowest openness
    lowest: float = math.inf


class SwingCounter:
    """Reversals of a signal by at least a threshold (hysteresis: a swing counts once the signal has come
    back by `threshold` from its last extreme), with the frame of each."""

    def __init__(self) -> None:
        self.extreme: float | None = None
        self.rising = True
        self.swings: deque[int] = deque()

    def update(self, frame: int, x: float, threshold: float, since: int) -> int:
        """Add sample x at `frame`; the number of swings at frames >= `since`."""
        if self.extreme is None:
            self.extreme = x
        elif (x > self.extreme) == self.rising:
            self.extreme = x  # still going the same way: a new extreme
        elif abs(x - self.extreme) >= threshold:
            self.swings.append(frame)
            self.rising, self.extreme = not self.rising, x
        while self.swings and self.swings[0] < since:
            self.swings.popleft()
        return len(self.swings)


@dataclass
class ContextTracker:
    """One track's context over time (module docstring): `update()` once per frame, in order."""

    params: SpotParams
    roi_of: np.ndarray  # (C,) RoiFeatures.roi_of
    flow_swings: tuple[SwingCounter, SwingCounter] = field(
        default_factory=lambda: (SwingCounter(), SwingCounter()))  # the mouth's and the chin's flow
    recent_mouth: deque[np.ndarray] = field(default_factory=lambda: deque(maxlen=SWING_SMOOTH))
    closure: Closure | None = None
    closures: deque[Closure] = field(default_factory=lambda: deque(maxlen=16))  # finished, newest last
    pending: list[Closure] = field(default_factory=list)  # finished blinks not yet taken (take_blinks)
    dip_from: int = -1  # the frame after the last one with the eyes open (-1: none seen yet)
    recent_eye: deque[float] = field(default_factory=deque)  # the last second's eye openness
    level: float = 1.0  # _open_level()

    def __post_init__(self) -> None:
        names = list(ROIS)
        speech = [names.index(r) for r in SPEECH_ROIS]
        pair = [-1 - list(PAIRS).index(p) for p in SPEECH_PAIRS]
        self.speech_channels = np.isin(self.roi_of, speech + pair)
        # single blocks of the mouth and of the chin: the flow's swing signals
        self.speech_blocks = (np.isin(self.roi_of, speech[:2]), self.roi_of == speech[2])
        self.roi_channels = {r: self.roi_of == k for k, r in enumerate(names)}
        for k, (a, b) in enumerate(PAIRS.values()):  # a pair channel goes with both its ROIs
            self.roi_channels[a] = self.roi_channels[a] | (self.roi_of == -1 - k)
            self.roi_channels[b] = self.roi_channels[b] | (self.roi_of == -1 - k)

    def update(self, frame: int, fps: float, acc: np.ndarray | None, info: FrameInfo | None
               ) -> tuple[FrameContext, np.ndarray]:
        """This frame's context and (C,) bool muted channels; `acc`: the frame's accumulated displacement
        (C, 2) crop px (FrameRecord.acc)."""
        p = self.params
        since = frame - max(1, round(p.speech_window_s * fps))
        swings = 0
        if acc is not None:  # the lips and the jaw apart: each ROI's mean vertical displacement
            self.recent_mouth.append(np.array([acc[blocks, 1].mean() for blocks in self.speech_blocks]))
            mouth = np.mean(self.recent_mouth, axis=0)
            swings = max(counter.update(frame, float(x), p.speech_px, since)
                         for counter, x in zip(self.flow_swings, mouth, strict=True))
        speech = float(info.speech) if info is not None and info.speech is not None else math.nan
        talking = swings >= p.speech_swings
        eye = math.nan
        if info is not None and info.eye_open is not None and info.landmarks not in NO_LIDS:
            eye = float(np.mean(info.eye_open)) / self._open_level(float(np.mean(info.eye_open)), fps)
        shut = eye < p.eye_shut
        self._closure(frame, fps, eye, shut)
        occluded = self._occluded(info, talking)
        muted = np.zeros(len(self.roi_of), bool)
        if talking:
            muted |= self.speech_channels
        for r in occluded:
            muted |= self.roi_channels[r]
        pose = tuple(float(v) for v in info.head_pose) if info is not None and info.head_pose is not None else None
        edge = math.nan if info is None or info.edge_occlusion is None else float(info.edge_occlusion)
        return FrameContext(talking, speech, swings, eye, shut, pose, occluded, edge), muted

    def _open_level(self, eye: float, fps: float) -> float:
        """The eyes' open level of the last second (EYE_LEVEL_Q-th percentile), frozen during a closure.
        The face node's openness is relative to its last 10 s, which a long closure (eyes shut while
        crying) pulls down: eyes open after it read 1.5-2, and a blink from there never gets under
        eye_shut. Relative to the last second, blinks dip to 0.3-0.65 on the real clips (docs/spotting.md)."""
        if self.closure is None:
            self.recent_eye.append(eye)
            while len(self.recent_eye) > max(3, round(fps)):
                self.recent_eye.popleft()
            self.level = max(float(np.percentile(self.recent_eye, EYE_LEVEL_Q)), 1e-3)
        return self.level

    def _occluded(self, info: FrameInfo | None, talking: bool) -> tuple[str, ...]:
        if info is None or info.occlusion is None:
            return ()
        out = []
        for r, score in zip(ROIS, info.occlusion, strict=False):
            if score < self.params.occlusion_k:
                continue
            if r.startswith("eye"):
                # The lid is the eye's own occluder: every blink moves it over the eye, also where the eye
                # state misses the closure (a partial blink; no lid landmarks), and muting the eyes then
                # leaves the dragged brows to pass for a micro-expression (docs/spotting.md).
                continue
            if r in SPEECH_ROIS and talking:
                continue  # the mouth opening
            out.append(r)
        return tuple(out)

    def _closure(self, frame: int, fps: float, eye: float, shut: bool) -> None:
        """Follow eye closures: one that reopens within blink_max_s goes to `pending` as a blink."""
        c = self.closure
        # Open again: back over OPEN_AGAIN of the level, or, after the shut frames, over halfway from the
        # lowest point back to the level: eyes that reopen to a lowered gaze (looking down after the blink)
        # never get back to the level before blink_max_s runs out.
        reopened = c is not None and frame > c.shut_to and eye >= max(self.params.eye_shut, (c.lowest + 1.0) / 2)
        if math.isnan(eye) or eye >= OPEN_AGAIN or reopened:  # open (or unknown: no closure can be followed)
            self.dip_from = frame + 1
            if c is not None:
                c.end, self.closure = frame, None
                self.closures.append(c)
                if (c.end - c.start) / fps <= self.params.blink_max_s:
                    self.pending.append(c)
                if eye < OPEN_AGAIN:
                    # Reopened to a lowered gaze: that is the eyes' level now (the lids hover under the old
                    # one, and each tremor there would pass for a new blink).
                    self.recent_eye.clear()
            return
        if c is not None and (frame - c.start) / fps > self.params.blink_max_s:
            # Shut this long is no blink (eyes closed, or the levels moved): given up, so that the open
            # level follows the eyes again.
            c.end, self.closure = frame, None
            self.closures.append(c)
            self.dip_from = frame + 1
            self.recent_eye.clear()
            return
        if c is None:
            if not shut:
                return
            c = self.closure = Closure(self.dip_from, frame, frame)
        if eye < c.lowest:
            c.lowest, c.deepest = eye, frame
        if shut:
            c.shut_to = frame

    def take_blinks(self) -> list[Closure]:
        """Blinks finished since the last call."""
        out, self.pending = self.pending, []
        return out

    def closure_near(self, first: int, last: int, margin: int) -> Closure | None:
        """A closure (finished or under way) with shut frames within `margin` frames of first..last."""
        for c in [*self.closures, *([self.closure] if self.closure is not None else [])]:
            if c.shut_from <= last + margin and c.shut_to >= first - margin:
                return c
        return None
