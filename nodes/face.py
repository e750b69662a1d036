"""`face`: detect, track, align and stabilise faces; frames in, aligned grey crops and each face's state
(eye and mouth opening, speech activity, head pose: edge.perception.face.state) out (edge.perception.face)."""

from __future__ import annotations

import numpy as np

from edge.perception.face import FaceTracker, FaceTrackerConfig
from edge.perception.face.track import TrackedFaces
from edge.runtime.messages import Message
from edge.runtime.node import Node, Port, register_node
from edge.runtime.params import node_params

# Track ids are unique within a run: process life k of the node (k restarts before it) numbers its tracks
# from k * TRACK_ID_LIFE, so a restarted tracker's 0, 1, ... never reuse a downstream node's open track.
# int32 ids: 128 lives of 16.7 M tracks each, then the numbering wraps.
TRACK_ID_LIFE = 1 << 24


@register_node("face")
class FaceNode(Node):
    """Face detection + tracking + locked, rigidly stabilised aligned crops per track."""

    inputs = {"frames": Port("frame", "BGR or grey frames")}
    outputs = {"crops": Port("crops", "aligned grey crops, one per confirmed track (N may be 0)")}
    params = node_params(FaceTrackerConfig)

    def setup(self) -> None:
        self.id_base = (int(self.run_info.get("restarts", 0)) % 128) * TRACK_ID_LIFE
        self.trackers: dict[str, FaceTracker] = {}  # one per stream: ids and templates never mix cameras
        self.last: dict[str, Message] = {}
        # Built now so that a bad detector or model fails at start-up, not on the first frame.
        self._first: FaceTracker | None = self._tracker()

    def _tracker(self) -> FaceTracker:
        return FaceTracker(FaceTrackerConfig(**{name: getattr(self.p, name) for name in self.params}))

    def process(self, port: str, msg: Message) -> None:
        tracker = self.trackers.get(msg.stream)
        if tracker is None:
            tracker = self.trackers[msg.stream] = self._first or self._tracker()
            self._first = None
            tracker.fps = float(msg.meta.get("fps") or tracker.fps)  # times the facial state's filters
        faces = tracker.track(msg.arrays["image"])
        self.last[msg.stream] = msg
        self.emit("crops", msg.derive("crops", self._meta(tracker, faces.head_motion, faces.ended), self._arrays(faces)))
        tracker.detect(background=True)  # after the crops are sent, and in a thread: detection stays out
        # of this frame's latency and of the next one's

    def _arrays(self, faces: TrackedFaces) -> dict:
        arrays = faces.arrays()
        arrays["track_ids"] = (faces.track_ids.astype(np.int64) + self.id_base).astype(np.int32)
        return arrays

    def _meta(self, tracker: FaceTracker, head_motion: list[float], ended: list[int]) -> dict:
        return {"crop_size": tracker.size, "landmarks": tracker.landmarks, "ended": [i + self.id_base for i in ended],
                "head_motion": head_motion, "pose_source": tracker.pose_source}

    def end_of_stream(self) -> None:
        """Close every track: one last empty `crops` message per stream lists the ids that ended."""
        for stream, tracker in self.trackers.items():
            faces = tracker.close()
            self.emit("crops", self.last[stream].derive("crops", self._meta(tracker, [], faces.ended),
                                                        self._arrays(faces)))
