"""TrackSpotter: one face track's frames -> intervals, coordinating the noise model, the threshold
detector and the rise-and-return detector over a shared history."""

from __future__ import annotations

import logging
from collections import deque

import numpy as np

from edge.perception.spot.blink import blink_interval
from edge.perception.spot.bump import BumpDetector
from edge.perception.spot.context import ContextTracker
from edge.perception.spot.describe import Measured, TrackContext, describe
from edge.perception.spot.noise import NoiseModel
from edge.perception.spot.params import SpotParams
from edge.perception.spot.records import FrameInfo, FrameRecord, History, Interval
from edge.perception.spot.threshold import ThresholdDetector

log = logging.getLogger(__name__)


class TrackSpotter:
    """Online spotting for one face track. `push()` one flow's features per frame; it returns the
    intervals finished at that frame.

    Scores: a micro-expression's onset lasts longer than one flow lag, so besides the flow itself
    (span 1) the displacement over 2..J chained flows (F[t] + F[ref(t)] + ...) is scored too. Chained
    flows telescope: image noise of the shared frames cancels, so their noise grows far slower than
    their signal. A score is the RMS of a channel's (u, v) in noise units (NoiseModel.flow).
    """

    def __init__(self, track_id: int, params: SpotParams, roi_of: np.ndarray,
                 lid_reach: np.ndarray | None = None) -> None:
        self.track_id, self.p = track_id, params
        self.roi_of = roi_of  # (C,) ROI index of each channel (RoiFeatures.roi_of)
        # (C,) brow channels next to the lids (RoiFeatures.lid_reach); none when the layout is unknown
        self.lid_reach = lid_reach if lid_reach is not None else np.zeros(len(roi_of), bool)
        self.head_limit = 0.0  # this face's head-speed limit for micro intervals (Spotter sets it)
        self.last_frame = -1
        self.history = History()
        self.noise = NoiseModel(params)
        self.context = ContextTracker(params, roi_of)
        self.threshold = ThresholdDetector(params, self.history, self.noise, self._describe)
        self.bump = BumpDetector(params, self.history, self.noise, self._describe)

    @property
    def frames(self) -> deque[FrameRecord]:
        """The track's frames of the last noise window, oldest first."""
        return self.history.frames

    def fps(self) -> float:
        """Frame rate from the capture timestamps of the history (30 before there is any)."""
        return self.history.fps()

    def push(self, frame: int, t_mono_ns: int, t_wall_ns: int, ref_frame: int, feats: np.ndarray,
             flag: str = "", speed: float = 0.0, info: FrameInfo | None = None) -> list[Interval]:
        """One frame of this track.

        Args:
            frame: source frame index; t_mono_ns, t_wall_ns: its capture time (ns).
            ref_frame: frame index of the flow's reference frame.
            feats: (C, 2) channel features (RoiFeatures), crop px.
            flag: "" or a reason this frame must not carry an interval (head motion, residual, ...).
            speed: head speed at this frame, crop px/s (the face node's, over ~0.1 s).
            info: the face node's report on this frame (its facial state), if any.
        Returns:
            intervals finished at this frame, kept and discarded (Interval.discarded says why).
        """
        f = self._record(frame, t_mono_ns, t_wall_ns, ref_frame, feats, flag, speed, info)
        blinks = [blink_interval(self.track_id, c, self.history) for c in self.context.take_blinks()]
        if self.threshold.event is not None:
            return self._logged(blinks + self.threshold.step(f))
        self.history.forget(t_mono_ns - int(self.p.noise_window_s * 1e9))
        if f.scores is not None and self.threshold.triggered(f):
            self.bump.cancel()  # the onset threshold took it: the event machinery measures it
            self.threshold.open(f)
            return self._logged(blinks)
        if frame % 5 == 0 or self.noise.flow is None:  # the scale moves slowly: refresh every 5 frames
            self.noise.update(self.history)
        iv = self.bump.step(f)
        return self._logged(blinks + ([iv] if iv is not None else []))

    def provisional(self) -> tuple[int, int] | None:
        """(onset, apex) frames of the open event (or pending rise and return) as they would close now,
        once past its peak (None before that, or with nothing open): classify can prepare the model input
        while the event waits for its offset."""
        if self.threshold.event is None:
            return self.bump.provisional()
        return self.threshold.provisional()

    def finish(self, reason: str = "") -> list[Interval]:
        """The stream or the track ended: close an open event (discarded with `reason` if given)."""
        return self._logged(self.threshold.finish(reason))

    def _record(self, frame: int, t_mono_ns: int, t_wall_ns: int, ref_frame: int, feats: np.ndarray,
                flag: str, speed: float, info: FrameInfo | None) -> FrameRecord:
        """The frame's record (spans, scores, accumulated displacement), appended to the history."""
        # Frames dropped upstream (latest-wins links under load): while fewer than the flow lag are
        # missing in a row, the lagged flows still overlap and the displacement chain holds; a longer gap
        # breaks it, and intervals across it are discarded.
        step = frame - self.last_frame if self.last_frame >= 0 else 1
        if step > max(1, frame - ref_frame) and not flag:
            flag = f"{step - 1} frame(s) dropped"
        self.last_frame = frame
        J = max(1, self.p.spans)
        spans = np.full((J, *feats.shape), np.nan, np.float32)
        spans[0] = feats
        starts = np.full(J, ref_frame, np.int64)
        ref = self.history.by_frame.get(ref_frame)
        if ref is not None:
            spans[1:] = feats + ref.spans[:-1]
            starts[1:] = ref.starts[:-1]
        # Scores use the mean over the last `smooth` frames: neighbouring frames carry independent image
        # noise but (at >= 25 fps) nearly the same expression displacement.
        recent = [spans] + [g.spans for k in range(1, self.p.smooth)
                            if (g := self.history.by_frame.get(frame - k)) is not None]
        smoothed = np.mean(recent, axis=0)
        scores = None
        if self.noise.flow is not None:
            scores = np.sqrt(np.mean((smoothed / self.noise.flow[..., None]) ** 2, axis=2))
            scores[starts < self.history.quiet_from] = np.nan  # such a span still holds the last event
        lag = max(1, frame - ref_frame)
        prev = self.history.frames[-1].acc if self.history.frames else 0.0
        acc = prev + feats.astype(np.float64) * (max(1, step) / lag)
        context, muted = self.context.update(frame, self.history.fps(), acc, info)
        if scores is not None and muted.any():
            scores[:, muted] = np.nan  # talking or occluded: these channels neither open nor hold an event
        f = FrameRecord(frame, t_mono_ns, t_wall_ns, ref_frame, spans, starts, smoothed, scores, flag,
                        acc=acc, speed=speed, muted=muted, context=context)
        self.history.append(f)
        return f

    def _describe(self, m: Measured) -> Interval:
        """describe() with this track's context."""
        ctx = TrackContext(self.p, self.track_id, self.roi_of, self.lid_reach, self.history.frames,
                           self.p.k_off * self.noise.flow[-1], self.head_limit, self.noise.ready_frame,
                           self.context)
        return describe(ctx, m)

    def _logged(self, intervals: list[Interval]) -> list[Interval]:
        """The intervals, logged as they go out."""
        for iv in intervals:
            if iv.discarded:
                log.info("track %d: %s interval %d-%d discarded: %s", self.track_id, iv.kind, iv.onset,
                         iv.offset, iv.discarded)
            else:
                log.debug("track %d: %s %d/%d/%d score %.1f %.2f px %s", self.track_id, iv.kind, iv.onset,
                          iv.apex, iv.offset, iv.score, iv.intensity, iv.rois)
        return intervals
