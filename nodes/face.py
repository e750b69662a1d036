"""`face`: detect, track, align and stabilise faces; frames in, aligned grey crops out (edge.face)."""

from __future__ import annotations

from edge.face import FaceTracker
from edge.face.detect import DETECTORS
from edge.messages import Message
from edge.node import Node, Param, Port, register_node


@register_node("face")
class FaceNode(Node):
    """Face detection + tracking + locked, rigidly stabilised aligned crops per track."""

    inputs = {"frames": Port("frame", "BGR or grey frames")}
    outputs = {"crops": Port("crops", "aligned grey crops, one per confirmed track (N may be 0)")}
    params = {
        "detector": Param(str, "haar", "face detector", choices=DETECTORS),
        "model": Param(str, "", "detector model file (YuNet ONNX), needed by detector=yunet"),
        "landmarks": Param(str, "auto", "alignment landmarks: dlib68 when installed (auto), or eyes",
                           choices=("auto", "eyes", "dlib68")),
        "landmark_model": Param(str, "", "dlib 68-point model file (default: found automatically)"),
        "detect_every": Param(int, 5, "run the detector every N frames, track in between", min=1),
        "crop_size": Param(int, 128, "aligned crop side, px", min=32),
        "min_hits": Param(int, 2, "detections before a track is output (birth)", min=1),
        "max_missed": Param(int, 3, "detection rounds without a match before a track ends", min=1),
        "max_faces": Param(int, 8, "most faces tracked at once", min=1),
        "det_width": Param(int, 320, "detection runs on frames downscaled to this width, px", min=64),
        "min_face": Param(int, 48, "smallest face side to detect, frame px", min=16),
        "max_age": Param(int, 300, "frames before a track's stabilisation template is refreshed", min=1),
    }

    def setup(self) -> None:
        self.trackers: dict[str, FaceTracker] = {}  # one per stream: ids and templates never mix cameras
        self.last: dict[str, Message] = {}
        # Built now so that a bad detector or model fails at start-up, not on the first frame.
        self._first: FaceTracker | None = self._tracker()

    def _tracker(self) -> FaceTracker:
        p = self.p
        return FaceTracker(detector=p.detector, landmarks=p.landmarks, detect_every=p.detect_every,
                           crop_size=p.crop_size, min_hits=p.min_hits, max_missed=p.max_missed,
                           max_faces=p.max_faces, det_width=p.det_width, min_face=p.min_face,
                           model_path=p.model or None, landmark_model=p.landmark_model or None,
                           max_age=p.max_age)

    def process(self, port: str, msg: Message) -> None:
        tracker = self.trackers.get(msg.stream)
        if tracker is None:
            tracker = self.trackers[msg.stream] = self._first or self._tracker()
            self._first = None
        faces = tracker.track(msg.arrays["image"])
        self.last[msg.stream] = msg
        self.emit("crops", msg.derive("crops", self._meta(tracker, faces.head_motion, faces.ended), faces.arrays()))
        tracker.detect(background=True)  # after the crops are sent, and in a thread: detection stays out
        # of this frame's latency and of the next one's

    def _meta(self, tracker: FaceTracker, head_motion: list[float], ended: list[int]) -> dict:
        return {"crop_size": tracker.size, "landmarks": tracker.landmarks, "ended": ended,
                "head_motion": head_motion}

    def end_of_stream(self) -> None:
        """Close every track: one last empty `crops` message per stream lists the ids that ended."""
        for stream, tracker in self.trackers.items():
            faces = tracker.close()
            self.emit("crops", self.last[stream].derive("crops", self._meta(tracker, [], faces.ended),
                                                        faces.arrays()))
