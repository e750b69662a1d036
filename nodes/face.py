"""`face`: detect, track, align and stabilise faces; frames in, aligned grey crops and each face's state
(eye and mouth opening, speech activity, head pose: edge.perception.face.state) out (edge.perception.face)."""

from __future__ import annotations

import dataclasses

import numpy as np

from edge.perception.face import FaceTracker, FaceTrackerConfig
from edge.perception.face.track import TrackedFaces
from edge.runtime.messages import Message
from edge.runtime.node import Node, Param, Port, register_node
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
    params = {
        **node_params(FaceTrackerConfig),
        "checkpoint_every": Param(int, 6, "save the trackers every this many frames, so that a restarted process "
                                  "goes on with the same tracks (0: never; upstream queues must exceed it)", min=0),
    }

    @classmethod
    def checkpoint_every(cls, params: dict) -> int:
        # A track's templates, filters and ids come from all the frames since its birth: a restart without
        # them starts new tracks, and the spotter's seconds of history on the old ones are lost with them
        # (events near the restart lost or changed: edge.runtime.checkpoint).
        return int(params["checkpoint_every"])

    def save_state(self) -> dict:
        return {"id_base": self.id_base, "trackers": {s: t.save() for s, t in self.trackers.items()},
                "last": self.last}

    def load_state(self, state: dict) -> None:
        trackers = {stream: self._first or self._tracker() for stream in state["trackers"]}
        self._first = None
        for stream, tracker in trackers.items():
            tracker.restore(state["trackers"][stream])
        # The restored tracks keep their ids, and tracks born after them the ids they would have had.
        self.id_base, self.trackers, self.last = int(state["id_base"]), trackers, dict(state["last"])

    def setup(self) -> None:
        self.id_base = (int(self.run_info.get("restarts", 0)) % 128) * TRACK_ID_LIFE
        self.trackers: dict[str, FaceTracker] = {}  # one per stream: ids and templates never mix cameras
        self.last: dict[str, Message] = {}
        # Built now so that a bad detector or model fails at start-up, not on the first frame.
        self._first: FaceTracker | None = self._tracker()

    def _tracker(self) -> FaceTracker:
        fields = {f.name for f in dataclasses.fields(FaceTrackerConfig)}
        return FaceTracker(FaceTrackerConfig(**{name: getattr(self.p, name) for name in self.params if name in fields}))

    def process(self, port: str, msg: Message) -> None:
        tracker = self.trackers.get(msg.stream)
        if tracker is None:
            tracker = self.trackers[msg.stream] = self._first or self._tracker()
            self._first = None
            tracker.fps = float(msg.meta.get("fps") or tracker.fps)  # times the facial state's filters
        faces = tracker.track(msg.arrays["image"])
        self.last[msg.stream] = dataclasses.replace(msg, arrays={})  # what end_of_stream derives from
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
