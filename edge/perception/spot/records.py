"""What spotting reads and writes: Interval (out), FrameInfo (face-node input), FrameRecord (one frame of
a track's history) and History (a track's recent frames)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from edge.perception.geometry import CROP_SIZE

KINDS = ("micro", "macro", "blink")


@dataclass
class Interval:
    """One spotted interval of one track. Frames are source frame indices; times are capture times (ns)."""

    track_id: int
    kind: str
    onset: int
    apex: int
    offset: int
    t_onset_ns: int
    t_apex_ns: int
    t_offset_ns: int
    wall_onset_ns: int = 0
    wall_apex_ns: int = 0
    wall_offset_ns: int = 0
    score: float = 0.0          # peak ROI score, noise units
    intensity: float = 0.0      # peak ROI displacement, crop px
    rois: list[str] = field(default_factory=list)
    discarded: str = ""         # reason, or "" when kept
    # what went on around it (edge.perception.spot.context): talking, blink_near, head_pose (at the apex),
    # occluded and muted ROIs; plain types, as events carry it
    context: dict = field(default_factory=dict)

    @property
    def duration_s(self) -> float:
        return (self.t_offset_ns - self.t_onset_ns) * 1e-9


@dataclass
class FrameInfo:
    """What the face node reported about one track at one frame."""

    head_motion: float = 0.0   # frame px / frame
    residual: float = 0.0      # crop px RMS
    scale: float = 1.0         # crop px per frame px
    position: tuple[float, float] | None = None  # where the crop centre lies in the frame, frame px
    # The face node's facial state (edge.perception.face.state), None where the face node sent none:
    eye_open: tuple[float, float] | None = None  # (image-left, image-right), 1 = usual open, ~0 = shut
    mouth_open: float | None = None   # dlib68: inner-lip gap / inter-ocular distance
    speech: float | None = None       # 0..1 speech activity (mouth aperture at syllable rate)
    head_pose: tuple[float, float, float] | None = None  # yaw, pitch, roll, degrees (nan: unknown)
    occlusion: tuple[float, ...] | None = None  # per ROI (geometry.ROIS order): warp residual over its
    # usual (edge.perception.spot.occlusion; the spot node adds it, from the flow)
    edge_occlusion: float | None = None  # the same, the highest of the face's lower edges (geometry.EDGE_BOXES)
    landmarks: str = ""               # the state's source: the face node's landmarks ("dlib68", "eyes")

    @classmethod
    def from_transform(cls, head_motion: float, residual: float, transform: np.ndarray,
                       **state: object) -> FrameInfo:
        """From the face node's (2, 3) frame -> crop affine of this track (crops message `transforms`);
        `state`: the facial-state fields above, where the message has them."""
        M = np.asarray(transform, np.float64)
        A = M[:, :2]
        c = (CROP_SIZE - 1) / 2  # any fixed crop point would do: only its motion in the frame is used
        centre = np.linalg.solve(A, np.array([c, c]) - M[:, 2])
        return cls(float(head_motion), float(residual), float(np.sqrt(abs(np.linalg.det(A)))),
                   (float(centre[0]), float(centre[1])), **state)


@dataclass
class FrameRecord:
    """One frame of one track, as the detectors read it."""

    frame: int
    t_mono_ns: int
    t_wall_ns: int
    ref: int                     # the flow's reference frame
    spans: np.ndarray            # (J, C, 2) displacement over 1..J chained flows, crop px (nan: unknown)
    starts: np.ndarray           # (J,) frame index each span starts from
    smoothed: np.ndarray         # (J, C, 2) spans averaged over the last `smooth` frames
    scores: np.ndarray | None    # (J, C) noise units, None during warm-up
    flag: str                    # "" or why this frame cannot carry an interval
    acc: np.ndarray | None = None  # (C, 2) accumulated displacement: running sum of flow / lag, crop px
    speed: float = 0.0           # head speed (face node, sustained over ~0.1 s), crop px/s
    busy: bool = False           # part of an event: left out of the noise model
    muted: np.ndarray | None = None  # (C,) bool: channels that cannot carry an event here (talking, occluded)
    context: object = None       # the frame's FrameContext (edge.perception.spot.context)

    def best(self) -> np.ndarray:
        """(C,) best score of each channel over the spans (0 for muted channels: their scores are nan)."""
        if self.scores is None:
            return np.zeros(self.spans.shape[1])
        return np.nan_to_num(np.fmax.reduce(self.scores, axis=0), nan=0.0)


class History:
    """A track's frames of the last noise window, in order and by frame index."""

    def __init__(self) -> None:
        self.frames: deque[FrameRecord] = deque()
        self.by_frame: dict[int, FrameRecord] = {}
        self.quiet_from = -1  # spans starting before this frame reach into the last event

    def append(self, f: FrameRecord) -> None:
        self.frames.append(f)
        self.by_frame[f.frame] = f

    def forget(self, before_ns: int) -> None:
        """Drop the frames captured before `before_ns`."""
        while self.frames and self.frames[0].t_mono_ns < before_ns:
            self.by_frame.pop(self.frames.popleft().frame, None)

    def fps(self) -> float:
        """Frame rate from the capture timestamps of the history (30 before there is any)."""
        if len(self.frames) < 2:
            return 30.0
        a, b = self.frames[0], self.frames[-1]
        dt = (b.t_mono_ns - a.t_mono_ns) * 1e-9
        return (b.frame - a.frame) / dt if dt > 0 and b.frame > a.frame else 30.0
