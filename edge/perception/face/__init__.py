"""Face detection, tracking, alignment and rigid stabilisation (the library behind the face node).

    from edge.perception.face import FaceTracker, FaceTrackerConfig
    tracker = FaceTracker(FaceTrackerConfig(landmarks="auto", detect_every=5))   # or the fields as keywords
    faces = tracker.update(frame)   # TrackedFaces: crops (N, 128, 128), track_ids, boxes, points, ...,
    # and each face's state: eye_open, mouth_open, head_pose, speech (edge.perception.face.state)
"""

from edge.perception.face.config import FaceTrackerConfig
from edge.perception.face.state import FaceState
from edge.perception.face.track import FaceTracker, TrackedFaces

__all__ = ["FaceState", "FaceTracker", "FaceTrackerConfig", "TrackedFaces"]
