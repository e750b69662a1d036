"""What crosses a process boundary: the message record, the message types, and the mer.event schema.

A message on the wire is a ZeroMQ multipart `[topic, header, *buffers]` (see edge.runtime.transport):

    header = {"v": SCHEMA_VERSION, "type": "crops", "stream": "cam0", "seq": 41, "frame": 1234,
              "t_mono_ns": 81234567890123, "t_wall_ns": 1795000000000000000,
              "meta": {...}, "bufs": [["crops", "|u1", [1, 128, 128]], ["track_ids", "<i4", [1]], ...]}

`t_mono_ns` / `t_wall_ns` are the capture time of the source frame (time.monotonic_ns(), time.time_ns());
`frame` is the source frame index; `id` (lossless links only) names the message for acknowledgements and
duplicate drops (edge.runtime.delivery); `seq` counts the messages of one output port, per stream, from 0, so a
receiver sees drops as gaps. Each buffer is the raw C-order bytes of an ndarray with the dtype (numpy
`dtype.str`, explicit byte order) and shape given in `bufs`.

Message types (arrays and meta) are listed in `TYPES` below and in docs/contracts.md.

The product's public interface is the `event` message on topic `mer.event` (schema `EVENT_FIELDS`).
Example, as any msgpack reader sees the header's `meta`:

    {"schema": 2, "seq": 17, "stream": "cam0", "track_id": 2, "kind": "micro",
     "onset": {"frame": 4510, "t_mono_ns": ..., "t_wall_ns": ...}, "apex": {...}, "offset": {...},
     "duration_s": 0.30, "label": "surprise", "scores": {"negative": 0.08, "positive": 0.05,
     "surprise": 0.87}, "confidence": 0.87, "intensity": 1.4, "box": [212.0, 96.0, 180.0, 180.0],
     "model": {"id": "soa-3c-synthetic-3f2a9c1b", "angles_deg": [88.1, 87.4, 90.6, 89.9],
     "runtime": "onnxruntime"}, "latency_ms": 131.4, "stages_ms": {"confirm": 100.1, "perception": 14.2,
     "classify": 15.8, "events": 1.3}, "clock": "live", "rois": ["brow_left", "brow_right"],
     "context": {"talking": false, "blink_near": false, "occluded": [], "muted": [], "head_pose": [2.1, -4.0, 0.5]}}
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

SCHEMA_VERSION = 1  # of the wire header and the message types; bump on any incompatible change
EVENT_SCHEMA_VERSION = 2  # of the mer.event fields (2: kind "blink"; micro no longer covers talking, blinks,
# occluders or motion over micro_max_px; `context`); bump when a field changes meaning or goes (readers
# ignore keys they do not know, so an added field keeps the version)

EVENT_TOPIC = "mer.event"

# Meta keys that describe the stream rather than one message: every derived message carries them on.
# "clock": "live" (capture times are when the frame was taken) or "media" (a stored file read unpaced:
# capture times are file time, start + index / fps, so durations are true but latency is unknowable).
STREAM_META = ("clock",)


@dataclass
class Message:
    """One message of any type. `arrays` hold read-only views when received (copy before writing)."""

    type: str
    stream: str = "cam0"
    seq: int = -1
    frame: int = -1
    t_mono_ns: int = 0
    t_wall_ns: int = 0
    meta: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    # Delivery id on lossless links (edge.runtime.delivery; "" elsewhere), and the id of the message this
    # one was derived from: a node that handles a resent message again derives the same ids from it, so
    # the consumer downstream drops the repeats.
    id: str = ""
    cause: str = ""

    def derive(self, type: str, meta: dict[str, Any] | None = None,
               arrays: dict[str, np.ndarray] | None = None) -> Message:
        """A new message of `type` carrying this one's stream, frame index and capture timestamps, and
        the stream-level meta keys (STREAM_META) unless `meta` sets them (added to `meta` itself)."""
        meta = {} if meta is None else meta
        for k in STREAM_META:
            if k in self.meta:
                meta.setdefault(k, self.meta[k])
        return Message(type, self.stream, -1, self.frame, self.t_mono_ns, self.t_wall_ns, meta, arrays or {},
                       cause=self.id)

    def latency_ms(self) -> float | None:
        """Now minus the capture time, ms (same host only); None on the media clock, where capture times
        are file time and the difference means nothing, or when there is no capture time."""
        if not self.t_mono_ns or self.meta.get("clock", "live") != "live":
            return None
        return (time.monotonic_ns() - self.t_mono_ns) / 1e6

    def __repr__(self) -> str:  # never the payload, like a pyzmq Frame
        arrs = ", ".join(f"{k}:{v.dtype}{list(v.shape)}" for k, v in self.arrays.items())
        return (f"Message({self.type!r}, stream={self.stream!r}, seq={self.seq}, frame={self.frame}, "
                f"meta_keys={sorted(self.meta)}, arrays=[{arrs}])")


@dataclass(frozen=True)
class ArraySpec:
    """Expected dtype and rank of one array of a message type (None: any)."""

    dtype: str | None
    ndim: int | None
    description: str = ""
    optional: bool = False


# Message types: name -> (arrays, documented meta keys). `validate()` checks a message against them; the
# contract tests call it, receivers do not (it would cost every message on the hot path).
TYPES: dict[str, tuple[dict[str, ArraySpec], dict[str, str]]] = {
    "frame": (
        {"image": ArraySpec("|u1", None, "(H, W, 3) BGR or (H, W) grey")},
        {"source": "source description", "fps": "nominal frame rate (Hz)"},
    ),
    "crops": (
        {
            "crops": ArraySpec("|u1", 3, "(N, S, S) aligned grey crops"),
            "track_ids": ArraySpec("<i4", 1, "(N,) track ids"),
            "boxes": ArraySpec("<f4", 2, "(N, 4) x, y, w, h in frame px"),
            "points": ArraySpec("<f4", 3, "(N, K, 2) landmarks in crop px (dlib68: as of the last detection round)"),
            "residual": ArraySpec("<f4", 1, "(N,) rigid stabilisation residual, px"),
            "transforms": ArraySpec("<f4", 3, "(N, 2, 3) frame -> crop affine"),
            # The facial state per face (edge.perception.face.state.FaceState); optional: a producer may
            # leave it out and no consumer may need it.
            "eye_open": ArraySpec("<f4", 2, "(N, 2) image-left, image-right eye openness, 1 = the track's usual "
                                  "open level, ~0 shut", optional=True),
            "mouth_open": ArraySpec("<f4", 1, "(N,) dlib68: inner-lip gap / inter-ocular distance; eyes: mouth "
                                    "appearance relative to the track's usual level", optional=True),
            "head_pose": ArraySpec("<f4", 2, "(N, 3) yaw, pitch, roll deg (yaw > 0 towards image right, pitch > 0 "
                                   "up, roll > 0 clockwise); nan where not estimated", optional=True),
            "speech": ArraySpec("<f4", 1, "(N,) 0..1 speech activity: mouth_open energy at 2-8 Hz over ~1 s",
                                optional=True),
        },
        {"crop_size": "S, px", "landmarks": "'eyes' or 'dlib68'", "ended": "track ids ended here",
         "head_motion": "per track, px/frame",
         "pose_source": "'pnp68' (solvePnP on dlib points) or 'eye_line' (roll only; yaw, pitch nan)"},
    ),
    "flows": (
        {
            "flows": ArraySpec("<f4", 4, "(N, 2, S', S') u, v in crop px"),
            "track_ids": ArraySpec("<i4", 1, "(N,) track ids"),
            "ref_frames": ArraySpec("<i8", 1, "(N,) reference frame index per track"),
        },
        {"backend": "flow backend", "lag": "frames", "scale": "S'/S"},
    ),
    "intervals": (
        {
            "onset": ArraySpec("|u1", 2, "(S, S) aligned grey crop at onset"),
            "apex": ArraySpec("|u1", 2, "(S, S) aligned grey crop at apex"),
            "apex_near": ArraySpec("|u1", 3, "(K, S, S) crops of the frames next to the apex, K <= 2 (classify "
                                   "averages its scores over apex and these)", optional=True),
        },
        {"track_id": "track", "kind": "micro / macro / blink", "onset": "frame idx", "apex": "frame idx",
         "offset": "frame idx", "t_onset_ns": "monotonic", "t_apex_ns": "monotonic",
         "t_offset_ns": "monotonic", "score": "peak / noise", "rois": "ROIs that moved",
         "box": "x, y, w, h frame px", "t_close_ns": "capture time of the frame that closed it (monotonic)",
         "t_sent_ns": "when spot emitted it (monotonic)"},
    ),
    "event": ({}, {"...": "EVENT_FIELDS"}),
    "eos": ({}, {"reason": "why the stream ended (e.g. 'end of file')"}),
    "any": ({}, {}),  # a port that accepts every type (inspection sinks)
}

# The mer.event fields (the public interface; README documents each).
EVENT_FIELDS: dict[str, str] = {
    "schema": "event schema version (int)",
    "seq": "gap-free sequence number assigned by the event log (int)",
    "stream": "camera / stream id (str)",
    "track_id": "anonymous per-session face track id (int)",
    "kind": "micro | macro | blink (only with classify kinds including it) | other (str)",
    "onset": "{frame, t_mono_ns, t_wall_ns}",
    "apex": "{frame, t_mono_ns, t_wall_ns}",
    "offset": "{frame, t_mono_ns, t_wall_ns}",
    "duration_s": "offset - onset in seconds (float)",
    "label": "predicted class (str; \"blink\" for a blink)",
    "scores": "{class: probability} (empty for a blink)",
    "confidence": "probability of the label (float; 1.0 for a blink)",
    "intensity": "peak motion at apex, aligned-crop px (float)",
    "box": "[x, y, w, h] face box in frame px at apex",
    "model": "{id, angles_deg, runtime}",
    "latency_ms": "arrival at the events node (then stored, then published: ~1 ms) minus capture time of the "
                  "offset frame (float; null on the media clock)",
    "stages_ms": "latency_ms by stage: {confirm, perception, classify, events} (null on the media clock)",
    "clock": "live | media: media = a stored file read unpaced, times are file time (str)",
    "rois": "regions that moved (list of str)",
    "context": "{talking, blink_near, occluded, muted, speech?, head_pose?}: what went on around it (dict)",
}
EVENT_DEBUG_FIELDS = {"debug_apex_crop": "OPT-IN ONLY (off by default): aligned apex crop, PNG bytes"}


class SchemaError(ValueError):
    """A message does not match its declared type."""


def validate(msg: Message) -> None:
    """Check a message against `TYPES`; raise SchemaError naming what is wrong."""
    spec = TYPES.get(msg.type)
    if spec is None:
        raise SchemaError(f"unknown message type {msg.type!r}")
    for name, a in spec[0].items():
        arr = msg.arrays.get(name)
        if arr is None:
            if a.optional:
                continue
            raise SchemaError(f"{msg.type}: missing array {name!r}")
        if a.dtype is not None and arr.dtype.str != a.dtype:
            raise SchemaError(f"{msg.type}.{name}: dtype {arr.dtype.str}, expected {a.dtype}")
        if a.ndim is not None and arr.ndim != a.ndim:
            raise SchemaError(f"{msg.type}.{name}: shape {arr.shape}, expected {a.ndim} dims")
