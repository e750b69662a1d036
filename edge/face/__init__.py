"""Face detection, tracking, alignment and rigid stabilisation (the library behind the face node).

    from edge.face import FaceTracker
    tracker = FaceTracker(detector="haar", landmarks="auto", detect_every=5)
    faces = tracker.update(frame)   # TrackedFaces: crops (N, 128, 128), track_ids, boxes, points, ...
"""

from edge.face.track import FaceTracker, TrackedFaces

__all__ = ["FaceTracker", "TrackedFaces"]
