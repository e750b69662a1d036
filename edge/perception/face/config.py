"""The face tracker's settings, declared once: FaceTracker takes them, the face node's params are made
from them (edge.runtime.params.node_params)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from edge.errors import UserError
from edge.perception.face.detect import DETECTORS
from edge.perception.geometry import CROP_SIZE
from edge.runtime.params import knob

LANDMARKS = ("auto", "eyes", "dlib68", "mesh")


@dataclass(frozen=True)
class FaceTrackerConfig:
    """Detector, landmarks, crop and the track birth/death rules (counted in detection rounds)."""

    detector: str = knob("haar", "face detector", choices=DETECTORS)
    model: str = knob("", "detector model file (YuNet ONNX), needed by detector=yunet")
    landmarks: str = knob("auto", "landmarks: auto = dlib68 when installed (not for commercial use), else eyes; "
                          "mesh = MediaPipe's face mesh (Apache-2.0)", choices=LANDMARKS)
    landmark_model: str = knob("", "the landmarks' model file: dlib 68-point or face mesh .tflite (default: found "
                               "automatically)")
    detect_every: int = knob(5, "run the detector every N frames, track in between", min=1)
    crop_size: int = knob(CROP_SIZE, "aligned crop side", "px", min=32, max=512)
    min_hits: int = knob(2, "detections before a track is output (birth)", min=1)
    max_missed: int = knob(3, "detection rounds without a match before a track ends", min=1)
    max_missed_locked: int = knob(12, "... for an established track that still holds its lock (a hand over an eye "
                                  "or a rolled head defeats the detector, not the tracker)", min=1)
    max_faces: int = knob(8, "most faces tracked at once", min=1)
    det_width: int = knob(320, "detection runs on frames downscaled to this width", "px", min=64)
    min_face: int = knob(48, "smallest face side to detect", "frame px", min=16)
    max_age: int = knob(300, "frames before a track's stabilisation template is refreshed", min=1)

    def check(self) -> FaceTrackerConfig:
        """Self, or a UserError naming every value outside its field's bounds (detector and landmark
        names are checked where they are made, edge.perception.face.detect and edge.perception.face.landmarks)."""
        bad = [f"{f.name} must be >= {f.metadata['min']} (got {getattr(self, f.name)})"
               for f in dataclasses.fields(self)
               if f.metadata["min"] is not None and getattr(self, f.name) < f.metadata["min"]]
        bad += [f"{f.name} must be <= {f.metadata['max']} (got {getattr(self, f.name)})"
                for f in dataclasses.fields(self)
                if f.metadata["max"] is not None and getattr(self, f.name) > f.metadata["max"]]
        if bad:
            raise UserError("face tracker: " + "; ".join(bad))
        return self
