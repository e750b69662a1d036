"""The event log as CSV or JSON lines (`facesleuth events export`), for spreadsheets, pandas and jq.

Each record starts with the log's summary columns (seq, stream, track, kind, label, confidence, the source
frame index and the capture time in seconds of onset / apex / offset, duration_s, t_wall_ns), computed by
the same code that writes them (edge/events/rows.py), so a first-layout (msgpack) log exports exactly like
a migrated one. Then every field of the event:
- JSON lines: the whole event merged in (nested objects kept), one object per line;
- CSV: nested fields flattened to dotted columns (`onset.t_mono_ns`, `scores.surprise`, `box.0`), the
  union over all events in first-seen order, empty where an event lacks one.
Bytes fields (the opt-in apex crop PNG) are null / empty: they stay in the log, for replay.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from typing import IO, Any

from edge.events.rows import COLUMNS, SUMMARY_COLUMNS, to_row

FORMATS = ("csv", "jsonl")


def records(events: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """(summary columns, then the event's own fields) per event; bytes and non-finite floats as None."""
    for event in events:
        row = dict(zip(COLUMNS, to_row(event), strict=True))
        body = json.loads(row["event"])  # the JSON form: bytes already left out
        yield {**{k: row[k] for k in SUMMARY_COLUMNS}, **{k: v for k, v in body.items() if k not in row}}


def _flatten(value: Any, prefix: str, out: dict[str, Any]) -> None:
    if isinstance(value, dict) and value:
        for k, v in value.items():
            _flatten(v, f"{prefix}.{k}" if prefix else str(k), out)
    elif isinstance(value, list) and value:
        for i, v in enumerate(value):
            _flatten(v, f"{prefix}.{i}", out)
    else:  # scalars, and empty containers as their JSON text so "no occlusion" differs from "no field"
        out[prefix] = json.dumps(value) if isinstance(value, list | dict) else value


def write_jsonl(events: Iterable[dict[str, Any]], out: IO[str]) -> int:
    """Write one JSON object per event; returns how many."""
    n = 0
    for rec in records(events):
        out.write(json.dumps(rec, ensure_ascii=False, allow_nan=False) + "\n")
        n += 1
    return n


def write_csv(events: Iterable[dict[str, Any]], out: IO[str]) -> int:
    """Write a header and one row per event; returns how many. Reads all events first (for the columns)."""
    rows: list[dict[str, Any]] = []
    names: dict[str, None] = dict.fromkeys(SUMMARY_COLUMNS)  # an ordered set
    for rec in records(events):
        flat: dict[str, Any] = {}
        for k, v in rec.items():
            if k in SUMMARY_COLUMNS:
                flat[k] = v
            else:
                _flatten(v, k, flat)
        names.update(dict.fromkeys(flat))
        rows.append(flat)
    w = csv.DictWriter(out, fieldnames=list(names), lineterminator="\n")
    w.writeheader()
    for flat in rows:
        w.writerow({k: ("" if v is None else str(v).lower() if isinstance(v, bool) else v) for k, v in flat.items()})
    return len(rows)
