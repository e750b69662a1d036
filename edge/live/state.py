"""What the live page shows, kept from the messages the `view` node receives; safe across threads.

The node's loop hands every message to `LiveState` (cheap: it keeps references and computes one
track's ROI motion per flows message); the server's threads read it. A frame is drawn (edge.debug_view's
compose_view: face boxes and state, the aligned crop with its landmarks and ROIs, the flow as colour)
and JPEG-encoded only when a browser asks for a newer one than the last drawn, once however many
browsers watch: a view nobody watches costs next to nothing, and a slow browser simply gets fewer frames.

Times on the page are seconds since the shown stream's first message (its capture clock), so the plot's
samples and the events' onset and offset share one axis.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any

import cv2
import numpy as np

from edge.debug_view import ROI_GROUPS, compose_view, roi_group
from edge.perception.face.track import TrackedFaces
from edge.perception.flow import resize_flow
from edge.perception.geometry import CROP_SIZE, ROIS
from edge.perception.spot.features import RoiFeatures
from edge.runtime.messages import Message

FRAMES_KEPT = 8  # recent frames, to draw the one the newest crops belong to (crops come a few ms later)
ROI_KEPT = 4096  # ROI-motion samples kept for the plot (over 2 min at 30 fps)
EVENTS_KEPT = 200  # events kept for a page opened late
RATE_WINDOW = 30  # frames over which the shown frame rate is measured


# The plot's lines, one per mirrored ROI pair (the same names and colours as the ROI boxes' legend).
GROUPS: list[str] = list(ROI_GROUPS)


def _css(bgr: tuple[int, int, int]) -> str:
    b, g, r = bgr
    return f"#{r:02x}{g:02x}{b:02x}"


def faces_from_crops(msg: Message) -> TrackedFaces:
    """A `crops` message as the tracker's output, for compose_view (the optional facial-state arrays a
    producer left out are neutral: eyes open, mouth shut, no speech, pose unknown)."""
    a = msg.arrays
    n = len(a["track_ids"])

    def optional(name: str, shape: tuple[int, ...], fill: float) -> np.ndarray:
        arr = a.get(name)
        return arr if arr is not None and len(arr) == n else np.full(shape, fill, np.float32)

    motion = [float(v) for v in msg.meta.get("head_motion", [])][:n]
    return TrackedFaces(a["crops"], a["track_ids"], a["boxes"], a["points"], a["residual"], a["transforms"],
                        head_motion=motion + [0.0] * (n - len(motion)), ended=list(msg.meta.get("ended", [])),
                        eye_open=optional("eye_open", (n, 2), 1.0), mouth_open=optional("mouth_open", (n,), 0.0),
                        head_pose=optional("head_pose", (n, 3), np.nan), speech=optional("speech", (n,), 0.0))


class RoiMotion:
    """Per plot line, the motion of one flow field (crop px): the spotter's features
    (edge.perception.spot.features: the rigid part removed, means over ROI blocks), the largest block
    magnitude in each ROI, the larger of a mirrored pair."""

    def __init__(self) -> None:
        self.features: dict[int, RoiFeatures] = {}  # per flow grid side
        self.members = [[i for i, r in enumerate(ROIS) if roi_group(r) == g] for g in GROUPS]

    def __call__(self, flow: np.ndarray, scale: float) -> list[float]:
        size = flow.shape[-1]
        if size not in self.features:
            self.features[size] = RoiFeatures(size)
        feats = self.features[size]
        channels, _ = feats(flow)
        per_roi = feats.roi_max(np.hypot(channels[:, 0], channels[:, 1])) / max(scale, 1e-6)
        return [round(float(per_roi[m].max()), 4) for m in self.members]


def event_row(ev: dict[str, Any], t0_ns: int | None) -> dict[str, Any]:
    """The fields of a mer.event the page lists, with onset and offset as seconds on the page's axis."""

    def point(key: str) -> dict[str, Any]:
        p = ev.get(key)
        return p if isinstance(p, dict) else {}

    def seconds(p: dict[str, Any]) -> float | None:
        t = p.get("t_mono_ns")
        return round((t - t0_ns) / 1e9, 3) if t0_ns is not None and isinstance(t, int) else None

    onset, apex, offset = point("onset"), point("apex"), point("offset")
    return {"seq": ev.get("seq"), "stream": ev.get("stream"), "track_id": ev.get("track_id"),
            "kind": ev.get("kind"), "label": ev.get("label"), "confidence": ev.get("confidence"),
            "duration_s": ev.get("duration_s"), "intensity": ev.get("intensity"), "rois": ev.get("rois") or [],
            "latency_ms": ev.get("latency_ms"), "onset_frame": onset.get("frame"), "apex_frame": apex.get("frame"),
            "offset_frame": offset.get("frame"), "onset_s": seconds(onset), "offset_s": seconds(offset)}


class LiveState:
    """The newest frames, crops and flows of one stream, its ROI-motion samples and every stream's events.

    `stream` picks the stream shown ("" = the first one seen). `has_crops`: whether a crops stream is
    connected (without one, each frame is a new picture; with one, each crops message is, drawn on its frame).
    """

    def __init__(self, stream: str = "", flow_max: float = 1.0, quality: int = 80, has_crops: bool = True) -> None:
        self.stream, self.flow_max, self.quality, self.has_crops = stream, flow_max, quality, has_crops
        self._cond = threading.Condition()
        self._render = threading.Lock()
        self._frames: deque[Message] = deque(maxlen=FRAMES_KEPT)
        self._flows: deque[Message] = deque(maxlen=FRAMES_KEPT)
        self._crops: Message | None = None
        self._roi: deque[tuple[int, float, int, list[float]]] = deque(maxlen=ROI_KEPT)
        self._events: deque[tuple[int, dict[str, Any]]] = deque(maxlen=EVENTS_KEPT)
        self._arrivals: deque[float] = deque(maxlen=RATE_WINDOW)
        self._jpeg: tuple[int, bytes] = (0, b"")
        self._motion = RoiMotion()
        self.version = 0  # bumped by each new picture
        self.roi_n = 0  # ROI samples so far
        self.events_n = 0  # events so far
        self.frame = -1  # index of the newest picture's frame
        self.frames_in = 0
        self.t0_ns: int | None = None
        self.ended = False  # every input ended
        self.closed = False  # the view is going away: streaming threads return

    # -- from the node's loop -----------------------------------------------------------------------------
    def _mine(self, msg: Message) -> bool:
        if not self.stream:
            self.stream = msg.stream
        if msg.stream != self.stream:
            return False
        if self.t0_ns is None and msg.t_mono_ns:
            self.t0_ns = msg.t_mono_ns
        return True

    def _t(self, msg: Message) -> float:
        return round((msg.t_mono_ns - (self.t0_ns or msg.t_mono_ns)) / 1e9, 3)

    def add_frame(self, msg: Message) -> None:
        with self._cond:
            if not self._mine(msg):
                return
            self._frames.append(msg)
            self._arrivals.append(time.monotonic())
            self.frames_in += 1
            if not self.has_crops:
                self.frame = msg.frame
                self.version += 1
                self._cond.notify_all()

    def add_crops(self, msg: Message) -> None:
        with self._cond:
            if not self._mine(msg):
                return
            self._crops = msg
            self.frame = msg.frame
            self.version += 1
            self._cond.notify_all()

    def add_flows(self, msg: Message) -> None:
        with self._cond:
            if not self._mine(msg):
                return
            self._flows.append(msg)
        flows, ids = msg.arrays["flows"], msg.arrays["track_ids"]
        if not len(ids):
            return
        # The plot follows one face: the first in the message (the oldest track).
        values = self._motion(np.asarray(flows[0], np.float32), float(msg.meta.get("scale", 1.0)))
        with self._cond:
            self.roi_n += 1
            self._roi.append((self.roi_n, self._t(msg), int(ids[0]), values))
            self._cond.notify_all()

    def add_event(self, msg: Message) -> None:
        with self._cond:
            self.events_n += 1
            self._events.append((self.events_n, event_row(dict(msg.meta), self.t0_ns)))
            self._cond.notify_all()

    def end(self) -> None:
        with self._cond:
            self.ended = True
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    # -- for the server's threads -------------------------------------------------------------------------
    def wait_picture(self, seen: int, timeout: float) -> int:
        """The picture version once it differs from `seen` (or after `timeout` s, or when closed)."""
        with self._cond:
            self._cond.wait_for(lambda: self.version != seen or self.closed, timeout)
            return self.version

    def mark(self) -> tuple[int, int, int, bool]:
        """Where the state stands: (picture version, ROI samples, events, ended)."""
        return self.version, self.roi_n, self.events_n, self.ended

    def wait_change(self, mark: tuple[int, int, int, bool], timeout: float) -> tuple[int, int, int, bool]:
        """The mark once it differs from `mark` (or after `timeout` s, or when closed)."""
        with self._cond:
            self._cond.wait_for(lambda: self.mark() != mark or self.closed, timeout)
            return self.mark()

    def hello(self) -> dict[str, Any]:
        """What the page needs once: the plot's lines and their colours (those of the ROI boxes)."""
        return {"stream": self.stream, "series": [{"name": g, "colour": _css(c)} for g, c in ROI_GROUPS.items()]}

    def since(self, roi_n: int, events_n: int) -> dict[str, Any]:
        """The status, the ROI samples after `roi_n` and the events after `events_n` (as many as are kept)."""
        with self._cond:
            now = time.monotonic()
            recent = [t for t in self._arrivals if now - t < 2.0]
            fps = (len(recent) - 1) / (recent[-1] - recent[0]) if len(recent) > 1 and recent[-1] > recent[0] else 0.0
            return {"stream": self.stream, "frame": self.frame, "frames_in": self.frames_in,
                    "fps": round(fps, 1), "ended": self.ended, "roi_n": self.roi_n, "events_n": self.events_n,
                    "roi": [list(s) for s in self._roi if s[0] > roi_n],
                    "events": [e for n, e in self._events if n > events_n]}

    def jpeg(self) -> tuple[int, bytes] | None:
        """(version, JPEG bytes) of the newest picture, drawn now unless already drawn; None before the
        first frame."""
        with self._render:
            with self._cond:
                version = self.version
                if version == self._jpeg[0] and self._jpeg[1]:
                    return self._jpeg
                frames, flows, crops = list(self._frames), list(self._flows), self._crops
            img = self._draw(frames, flows, crops)
            if img is None:
                return None
            ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
            if not ok:
                return None
            self._jpeg = (version, buf.tobytes())
            return self._jpeg

    def _draw(self, frames: list[Message], flows: list[Message], crops: Message | None) -> np.ndarray | None:
        if not frames:
            return None
        k = crops.frame if crops is not None else frames[-1].frame
        # The frame the crops belong to; if it was dropped on the way, the newest one before it.
        frame = next((f for f in reversed(frames) if f.frame <= k), frames[-1])
        if crops is not None:
            faces = faces_from_crops(crops)
        else:
            faces = TrackedFaces.zeros(0, CROP_SIZE, 2)
        size = faces.crops.shape[1]
        fl = next((f for f in reversed(flows) if f.frame <= k), None)
        by_track = {}
        if fl is not None:
            for flow, tid in zip(fl.arrays["flows"], fl.arrays["track_ids"], strict=True):
                by_track[int(tid)] = resize_flow(np.ascontiguousarray(flow.transpose(1, 2, 0)), size)
        return compose_view(frame.arrays["image"], faces, by_track, self.flow_max, frame.frame)
