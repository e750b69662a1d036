"""How one mer.event maps to a row of the event log, and back.

A row is the event as JSON text (column `event`, which SQLite's JSON functions and pandas read) beside
columns copied out of it for filters and plain SQL: seq, stream, track_id, kind, label, confidence, the
source frame index of onset / apex / offset, their capture times in seconds, duration_s and the time of
classification. The JSON is the whole event, so the columns are a convenience, never the only copy.

JSON holds neither bytes nor non-finite floats, which the wire form (msgpack) may carry:
- bytes (the opt-in `debug_apex_crop` PNG) are left out of the JSON (null in their place) and kept
  exactly in the `attachments` column, msgpack `[[path, bytes], ...]`, so replay returns them as sent;
- NaN and ±inf become null, because SQLite's JSON functions reject the `NaN` token Python would write.
"""

from __future__ import annotations

import json
import math
from typing import Any

import msgpack

# The log's table and indexes, one statement each (a migration runs them inside its transaction, where
# executescript would commit first). Column comments give units; `event` is the authority.
CREATE_EVENTS: tuple[str, ...] = ("""
CREATE TABLE IF NOT EXISTS events (
    seq          INTEGER PRIMARY KEY,   -- gap-free, assigned by the log
    stream       TEXT NOT NULL,
    track_id     INTEGER,
    kind         TEXT,                  -- micro | macro | blink | other
    label        TEXT,
    confidence   REAL,
    onset_frame  INTEGER,               -- source frame index
    apex_frame   INTEGER,
    offset_frame INTEGER,
    onset_s      REAL,                  -- capture time, Unix seconds (wall clock, see README "clock")
    apex_s       REAL,
    offset_s     REAL,
    duration_s   REAL,                  -- offset - onset, s
    t_wall_ns    INTEGER,               -- classification time, Unix ns
    event        TEXT NOT NULL,         -- the whole event, JSON
    attachments  BLOB                   -- bytes fields, msgpack [[path, bytes], ...], NULL when none
)""",
    "CREATE INDEX IF NOT EXISTS events_track ON events (stream, track_id)",
    "CREATE INDEX IF NOT EXISTS events_label ON events (label)",
)

POINTS = ("onset", "apex", "offset")
# Columns in table order (seq first); INSERT and export use this one list.
COLUMNS: tuple[str, ...] = (
    "seq", "stream", "track_id", "kind", "label", "confidence",
    *(f"{p}_frame" for p in POINTS), *(f"{p}_s" for p in POINTS),
    "duration_s", "t_wall_ns", "event", "attachments",
)
# The columns that describe the event (what export puts first); `event` and `attachments` hold it whole.
SUMMARY_COLUMNS: tuple[str, ...] = COLUMNS[:-2]

_Where = list[str | int]  # keys and list indices from the event down to a value


def _jsonable(value: Any, path: _Where, blobs: list[list[Any]]) -> Any:
    """`value` with bytes moved to `blobs` (as [path, bytes]) and non-finite floats as None."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v, [*path, str(k)], blobs) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v, [*path, i], blobs) for i, v in enumerate(value)]
    if isinstance(value, bytes | bytearray | memoryview):
        blobs.append([path, bytes(value)])
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else None


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def to_row(event: dict[str, Any]) -> tuple[Any, ...]:
    """The row for `event` (which must hold its `seq`), in COLUMNS order."""
    blobs: list[list[Any]] = []
    body = _jsonable(event, [], blobs)
    points = [event.get(p) if isinstance(event.get(p), dict) else {} for p in POINTS]
    wall = [_number(p.get("t_wall_ns")) for p in points]
    return (
        int(event["seq"]), str(event.get("stream", "")), _int(event.get("track_id")), _text(event.get("kind")),
        _text(event.get("label")), _number(event.get("confidence")),
        *(_int(p.get("frame")) for p in points),
        *(None if w is None else w / 1e9 for w in wall),
        _number(event.get("duration_s")), _int(event.get("t_wall_ns")),
        json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False),
        msgpack.packb(blobs, use_bin_type=True) if blobs else None,
    )


def from_json(text: str, attachments: bytes | None) -> dict[str, Any]:
    """The event stored as `text` (JSON) with its bytes fields put back from `attachments`."""
    event = json.loads(text)
    for path, blob in msgpack.unpackb(attachments, raw=False) if attachments else ():
        node = event
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = blob
    return event


def from_msgpack(payload: bytes) -> dict[str, Any]:
    """An event stored by the first log layout (one msgpack map in column `payload`)."""
    return msgpack.unpackb(payload, raw=False)
