"""Spotter: spotting for every track of one stream, and the motion gates that flag its frames.

Per frame and track, besides the features: rigid motion left in the stabilised crop (RoiFeatures) and
head speed from the face node (FrameInfo) flag the frame when above their limits. The rigid-motion limit
and the micro-expressions' head limit are in noise units of each face's own recent speeds: max(
`rigid_speed_max` or `bump_head_speed_max`, median + `k_motion` MADs), so jittery footage (a webcam's
detections, sensor noise) does not discard everything. Head speed is taken over the last 0.1 s, so
per-frame alignment jitter does not count (`head_speed_max`).
"""

from __future__ import annotations

import itertools
from collections import deque

import numpy as np

from edge.perception.robust import MAD_TO_SIGMA
from edge.perception.spot.features import RoiFeatures
from edge.perception.spot.params import SpotParams
from edge.perception.spot.records import FrameInfo, Interval
from edge.perception.spot.track import TrackSpotter

JUMP = 4.0  # one frame's head speed above JUMP * head_speed_max discards at once (a re-lock, not jitter)


class Spotter:
    """Spotting for every track of one stream: feed it face-node info and flows, collect intervals."""

    def __init__(self, params: SpotParams | None = None) -> None:
        self.p = params or SpotParams()
        self.p.check()
        self.tracks: dict[int, TrackSpotter] = {}
        self.info: dict[tuple[int, int], FrameInfo] = {}
        self._features: dict[int, RoiFeatures] = {}
        self._positions: dict[int, deque] = {}  # per track: (frame, face position in frame px) of ~0.1 s
        self._speeds: dict[tuple[int, str], deque] = {}  # per (track, kind): recent rigid / head speeds
        self._last_rigid: dict[int, float] = {}  # per track: the previous frame's rigid speed, crop px/s

    def _limit(self, track_id: int, kind: str, value: float, floor: float, fps: float) -> float:
        """max(floor, median + k_motion MADs) of this track's recent `kind` speeds (then adds `value`)."""
        hist = self._speeds.setdefault((track_id, kind), deque(maxlen=max(10, round(self.p.noise_window_s * fps))))
        limit = floor
        if len(hist) >= 10:
            a = np.fromiter(hist, float)
            med = float(np.median(a))
            # k_motion sigmas (MAD_TO_SIGMA MADs) over the median
            limit = max(floor, med + self.p.k_motion * MAD_TO_SIGMA * float(np.median(np.abs(a - med))))
        hist.append(value)
        return limit

    def features(self, size: int) -> RoiFeatures:
        """The feature layout for flows of side `size` (built once per size)."""
        if size not in self._features:
            self._features[size] = RoiFeatures(size, rigid=self.p.rigid)
        return self._features[size]

    def _lid_reach(self, roi_of: np.ndarray) -> np.ndarray | None:
        """RoiFeatures.lid_reach of the layout that produced `roi_of` (features cached by calibration
        carry only roi_of: the layout is found again among the usual crop sizes)."""
        known = list(self._features.values())
        layouts = itertools.chain(known, (RoiFeatures(s) for s in (128, 96, 64, 160, 192, 256)))  # lazily
        return next((f.lid_reach for f in layouts if np.array_equal(f.roi_of, roi_of)), None)

    def note_frame(self, frame: int, track_id: int, info: FrameInfo) -> None:
        """Face-node information for (frame, track); kept for a few seconds."""
        self.info[(frame, int(track_id))] = info
        if len(self.info) > 4096:
            for k in sorted(self.info)[:1024]:
                del self.info[k]

    def end_track(self, track_id: int, reason: str = "track lost") -> list[Interval]:
        self._positions.pop(int(track_id), None)
        self._last_rigid.pop(int(track_id), None)
        for kind in ("rigid", "head"):
            self._speeds.pop((int(track_id), kind), None)
        t = self.tracks.pop(int(track_id), None)
        return t.finish(reason) if t else []

    def push(self, frame: int, t_mono_ns: int, t_wall_ns: int, track_id: int, ref_frame: int,
             flow: np.ndarray) -> list[Interval]:
        """One flow (2, S', S') crop px of `track_id` at `frame` against `ref_frame`."""
        feats, rigid = self.features(flow.shape[-1])(flow)
        return self.push_features(frame, t_mono_ns, t_wall_ns, track_id, ref_frame, feats, rigid,
                                  self.features(flow.shape[-1]).roi_of)

    def push_features(self, frame: int, t_mono_ns: int, t_wall_ns: int, track_id: int, ref_frame: int,
                      feats: np.ndarray, rigid: float, roi_of: np.ndarray) -> list[Interval]:
        """As push(), from RoiFeatures output (calibration replays cached features through this)."""
        track_id = int(track_id)
        spotter = self.tracks.get(track_id)
        if spotter is None:
            spotter = self.tracks[track_id] = TrackSpotter(track_id, self.p, roi_of, self._lid_reach(roi_of))
        lag = max(1, frame - ref_frame)
        fps = spotter.fps()
        info = self.info.pop((frame, track_id), None)
        flag = ""
        sustained = 0.0  # head speed, crop px/s (unknown without face-node info)
        rigid_speed = rigid / lag * fps
        rigid_limit = self._limit(track_id, "rigid", rigid_speed, self.p.rigid_speed_max, fps)
        # Rigid motion of the crop shows in every lagged flow that spans it (lag frames in a row), while the
        # affine fit's noise is independent frame to frame: with lag >= 2, over the limit in two flows
        # running, not one.
        sustained_rigid = min(rigid_speed, self._last_rigid.get(track_id, 0.0)) if lag >= 2 else rigid_speed
        self._last_rigid[track_id] = rigid_speed
        if sustained_rigid > rigid_limit:
            flag = f"rigid motion {sustained_rigid:.0f} crop px/s > {rigid_limit:.0f}"
        if info is not None:
            # Head speed is the displacement of the face (crop centre, frame px) over the last ~0.1 s:
            # per-frame alignment jitter (a webcam's shaky detections, removed by the stabiliser) is
            # independent frame to frame and averages out over the window, while a head movement does
            # not. A single jump far above any jitter (a re-lock of the alignment) counts at once.
            speed = info.head_motion * info.scale * fps
            sustained = speed
            if info.position is not None:
                hist = self._positions.setdefault(track_id, deque(maxlen=max(2, round(0.1 * fps) + 1)))
                hist.append((frame, info.position))
                (first, (x0, y0)), (last, (x1, y1)) = hist[0], hist[-1]
                if last > first:
                    sustained = float(np.hypot(x1 - x0, y1 - y0)) / ((last - first) / fps) * info.scale
            spotter.head_limit = self._limit(track_id, "head", sustained, self.p.bump_head_speed_max, fps)
            if sustained > self.p.head_speed_max or speed > JUMP * self.p.head_speed_max:
                flag = f"head motion {max(sustained, speed):.0f} crop px/s > {self.p.head_speed_max}"
            elif info.residual > self.p.residual_max:
                flag = f"stabilisation residual {info.residual:.2f} px > {self.p.residual_max}"
        return spotter.push(frame, t_mono_ns, t_wall_ns, ref_frame, feats, flag, speed=sustained, info=info)

    def finish(self) -> list[Interval]:
        """End of stream: close open events (an event cut by the end is closed as it stands)."""
        out = []
        for tid in list(self.tracks):
            out += self.tracks.pop(tid).finish()
        return out
