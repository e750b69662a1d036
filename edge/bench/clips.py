"""Spotting clips: a video run once through the product's own face, flow and spot nodes, in-process.

`extract` feeds a video's frames through the face, flow and spot node classes with the in-process runner
(edge.runtime.inprocess: the same input synchronisation as in a running graph), so the bench and the
calibration see exactly what the pipeline computes from crops to intervals. The spot node's spotter
records every call it is given (frame information, ROI features, ended tracks): `spot_clip` replays them
through a fresh spotter with other params in a fraction of the time, which is what threshold calibration
needs. Beside them, `extract` records what the bench's plain baseline needs (its own fixed-crop flow) and,
on request, the aligned crops for label accuracy.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from edge.perception.capture import open_source
from edge.perception.flow import LagBuffer, create_flow
from edge.perception.geometry import roi_boxes
from edge.perception.spot import FrameInfo, Interval, SpotParams, Spotter
from edge.perception.spot.track import TrackSpotter
from edge.progress import Progress
from edge.runtime.inprocess import run_chain
from edge.runtime.messages import Message
from nodes.face import FaceNode
from nodes.flow import FlowNode
from nodes.spot import SpotNode


@dataclass(frozen=True)
class Noted:
    """Spotter.note_frame's arguments."""

    frame: int
    track_id: int
    info: FrameInfo


@dataclass(frozen=True)
class Pushed:
    """Spotter.push_features' arguments (but the ROI layout, which is the clip's)."""

    frame: int
    t_mono_ns: int
    t_wall_ns: int
    track_id: int
    ref_frame: int
    feats: np.ndarray
    rigid: float


@dataclass(frozen=True)
class Ended:
    """Spotter.end_track's arguments."""

    track_id: int
    reason: str


@dataclass
class TrackSeq:
    """One track's baseline record (frames with a fixed-crop flow, and its mean |flow| per ROI) and, on
    request, its aligned crops by frame (label accuracy)."""

    frames: list[int] = field(default_factory=list)
    base: list[np.ndarray] = field(default_factory=list)  # (R,) mean |flow| per ROI, fixed crop
    crops: dict[int, np.ndarray] = field(default_factory=dict)
    ended: bool = False


@dataclass
class Clip:
    """A video's recorded spotter input, its baseline record and its ground truth."""

    fps: float
    n_frames: int
    truth: list[dict]
    tracks: dict[int, TrackSeq]
    roi_of: np.ndarray
    lag: int
    calls: list[Noted | Pushed | Ended] = field(default_factory=list)
    # (kind, onset, apex, offset) of each interval the spot node sent, in order: what the pipeline would
    # have published with the params the clip was extracted with
    published: list[tuple[str, int, int, int]] = field(default_factory=list)


class RecordingSpotter(Spotter):
    """A spotter that records every call it is given, in order."""

    def __init__(self, params: SpotParams, calls: list[Noted | Pushed | Ended]) -> None:
        super().__init__(params)
        self.calls = calls
        self.roi_of: np.ndarray | None = None

    def note_frame(self, frame: int, track_id: int, info: FrameInfo) -> None:
        self.calls.append(Noted(frame, int(track_id), info))
        super().note_frame(frame, track_id, info)

    def push_features(self, frame: int, t_mono_ns: int, t_wall_ns: int, track_id: int, ref_frame: int,
                      feats: np.ndarray, rigid: float, roi_of: np.ndarray) -> list[Interval]:
        self.calls.append(Pushed(frame, t_mono_ns, t_wall_ns, int(track_id), int(ref_frame), feats, float(rigid)))
        self.roi_of = roi_of
        return super().push_features(frame, t_mono_ns, t_wall_ns, track_id, ref_frame, feats, rigid, roi_of)

    def end_track(self, track_id: int, reason: str = "track lost") -> list[Interval]:
        self.calls.append(Ended(int(track_id), reason))
        return super().end_track(track_id, reason)


class _RecordingSpotNode(SpotNode):
    """The spot node with a recording spotter (`calls` and `spot_params` are set by `extract`)."""

    calls: list[Noted | Pushed | Ended]
    spot_params: SpotParams

    def make_spotter(self) -> Spotter:
        self.recorder = RecordingSpotter(self.spot_params, self.calls)
        return self.recorder


class VideoFile:
    """A video file read as the capture node reads it (edge.perception.capture's file source): `fps` (the
    given rate, else the file's), `truth` (ground-truth intervals, [] when none), `n_frames` (as the file
    declares it, or the segment's length) and its BGR frames in decode order. `frames` (first, last),
    inclusive, reads only that segment of the file, its first frame yielded as frame 0. A missing or
    undecodable file is a UserError here."""

    def __init__(self, path: str | Path, fps: float = 0.0, truth: list[dict] | None = None,
                 frames: tuple[int, int] | None = None) -> None:
        self.source = open_source("file", str(path), fps=fps)
        self.path, self.fps, self.truth = Path(path), self.source.fps, list(truth or [])
        self.frames = frames
        self.n_frames = frames[1] - frames[0] + 1 if frames else self.source.declared

    def __iter__(self) -> Iterator[np.ndarray]:
        first, last = self.frames or (0, None)
        for image, _mono, _wall, index in self.source:
            if last is not None and index > last:
                return
            if index >= first:  # decoded and dropped: seeking an mp4 is not frame-accurate in OpenCV
                yield image


def _frames(video: Iterable[np.ndarray], fps: float, grey_now: list[np.ndarray], counted: list[int],
            progress: Progress | None) -> Iterator[tuple[str, Message]]:
    """The video as the capture node sends a file: frame messages on the media clock. The frame being sent
    is left in grey_now[0] (the baseline warps it), the number sent in counted[0]."""
    meta = {"fps": fps, "clock": "media"}
    for k, image in enumerate(video):
        counted[0] = k + 1
        grey_now[0] = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
        t_ns = int(round(k / fps * 1e9))
        yield "frames", Message("frame", frame=k, t_mono_ns=t_ns, t_wall_ns=t_ns, meta=meta,
                                arrays={"image": image})
        if progress is not None:
            progress.update(1)


def extract(video, lag: int = 3, backend: str = "auto", baseline: bool = True, progress: Progress | None = None,
            keep_crops: bool = False, params: SpotParams | None = None) -> Clip:
    """Run `video` (anything with fps, truth and iteration over BGR or grey frames) through the face, flow
    and spot nodes (default params but the flow's `lag` and `backend`; the spotter's `params`, of which
    only `rigid` changes the recorded features); record the spotter's calls, the baseline and the crops."""
    fps = float(video.fps)
    tracks: dict[int, TrackSeq] = {}
    fixed: dict[int, np.ndarray] = {}  # baseline: each track's first alignment, kept for ever
    base_lags = LagBuffer(lag)
    base_flow = create_flow(backend) if baseline else None
    grey_now: list[np.ndarray] = [np.zeros((1, 1), np.uint8)]
    counted = [0]
    boxes: list[tuple[int, int, int, int]] = []

    def tap(port: str, msg: Message) -> None:  # the face node's crops, as flow and spot receive them
        a = msg.arrays
        for i, tid in enumerate(a["track_ids"].tolist()):
            crop = a["crops"][i]
            seq = tracks.setdefault(tid, TrackSeq())
            if keep_crops:
                seq.crops[msg.frame] = crop.copy()
            if base_flow is None:
                continue
            if not boxes:
                boxes.extend(roi_boxes(crop.shape[0]).values())
            m0 = fixed.setdefault(tid, a["transforms"][i].astype(np.float64))
            bcrop = cv2.warpAffine(grey_now[0], m0, crop.shape[::-1], flags=cv2.INTER_LINEAR)
            bref = base_lags.push(tid, msg.frame, bcrop)
            if bref is None:
                continue
            uvb = base_flow.calc(bref[1], bcrop).transpose(2, 0, 1)
            # The crop's median flow (its global translation) off: without even that, the fixed crop's
            # frame-to-frame jitter swamps every ROI and the baseline finds nothing at any amplitude.
            mag = np.hypot(*(uvb - np.median(uvb.reshape(2, -1), axis=1)[:, None, None]))
            seq.frames.append(msg.frame)
            seq.base.append(np.array([mag[y0:y1, x0:x1].mean() for x0, y0, x1, y1 in boxes]))
        for tid in msg.meta.get("ended", []):
            if tid in tracks:
                tracks[tid].ended = True

    face = FaceNode("face", FaceNode.resolve_params({}), tap)
    flow = FlowNode("flow", FlowNode.resolve_params({"lag": lag, "backend": backend}), lambda port, msg: None)
    published: list[tuple[str, int, int, int]] = []

    def sent(port: str, msg: Message) -> None:
        if msg.meta["kind"] != "provisional":
            published.append((msg.meta["kind"], msg.meta["onset"], msg.meta["apex"], msg.meta["offset"]))

    spot = _RecordingSpotNode("spot", _RecordingSpotNode.resolve_params({}), sent)
    spot.calls, spot.spot_params = [], params or SpotParams()
    nodes = (face, flow, spot)
    # The replay (spot_clip) logs each interval with its discard reason; here it would be logged twice.
    with quiet_logs(TrackSpotter.__module__), quiet_logs(*PER_CLIP_LOGS, unless_verbose=True):
        for node in nodes:
            node.setup()
        try:
            run_chain(nodes, _frames(video, fps, grey_now, counted, progress))
        finally:
            for node in nodes:
                node.teardown()
    recorder = getattr(spot, "recorder", None)
    roi_of = recorder.roi_of if recorder is not None and recorder.roi_of is not None else np.zeros(0, int)
    return Clip(fps, counted[0], list(video.truth), tracks, roi_of, lag, spot.calls, published)


# Loggers whose lines come once per clip or interval (node set-up, each discard with its reason): a
# bench's table is its output and sums them, so they show only with -v.
PER_CLIP_LOGS = ("node", "edge.perception")


@contextmanager
def quiet_logs(*names: str, unless_verbose: bool = False) -> Iterator[None]:
    """The loggers `names` at WARNING for the block (left as they are under -v, with `unless_verbose`)."""
    if unless_verbose and logging.getLogger().isEnabledFor(logging.DEBUG):
        yield
        return
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def spot_clip(clip: Clip, params: SpotParams) -> list[Interval]:
    """Replay a clip's recorded spotter calls through a spotter with `params` (cheap: calibration calls
    this many times)."""
    sp = Spotter(params)
    out: list[Interval] = []
    with quiet_logs(*PER_CLIP_LOGS, unless_verbose=True):
        for call in clip.calls:
            if isinstance(call, Noted):
                sp.note_frame(call.frame, call.track_id, call.info)
            elif isinstance(call, Pushed):
                out += sp.push_features(call.frame, call.t_mono_ns, call.t_wall_ns, call.track_id,
                                        call.ref_frame, call.feats, call.rigid, clip.roi_of)
            else:
                out += sp.end_track(call.track_id, call.reason)
        out += sp.finish()
    return out
