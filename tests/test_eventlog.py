"""The durable event log: gap-free sequence numbers, survives a killed writer, filters, clear errors."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import msgpack
import pytest

from edge.errors import UserError
from edge.events.log import EventLog


def test_append_assigns_gap_free_seq_and_persists(tmp_path):
    db = tmp_path / "events.db"
    with EventLog(db) as log:
        seqs = [log.append({"stream": "cam0", "track_id": i % 2, "label": "surprise"}) for i in range(5)]
    assert seqs == [1, 2, 3, 4, 5]
    with EventLog(db) as log:  # reopened: numbering continues, nothing lost
        assert log.append({"stream": "cam0", "track_id": 0, "label": "negative"}) == 6
        assert [e["seq"] for e in log.since(3)] == [4, 5, 6]
        assert [e["seq"] for e in log.query(track_id=1)] == [2, 4]
        assert [e["seq"] for e in log.query(label="negative")] == [6]
        assert log.last_seq == 6


def test_events_survive_sigkill_of_writer(tmp_path):
    db = tmp_path / "events.db"
    code = (
        "import sys, time\n"
        "from edge.events.log import EventLog\n"
        f"log = EventLog({str(db)!r})\n"
        "for i in range(1000000):\n"
        "    log.append({'stream': 'cam0', 'track_id': 1, 'i': i})\n"
        "    print(i, flush=True)\n"
    )
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    acknowledged = -1
    deadline = time.monotonic() + 30
    while acknowledged < 20 and time.monotonic() < deadline:
        acknowledged = int(p.stdout.readline())
    os.kill(p.pid, signal.SIGKILL)
    p.wait(timeout=10)
    with EventLog(db, readonly=True) as log:
        stored = [e["i"] for e in log.query()]
    # Every event whose append() returned is on disk, in order, without gaps.
    assert stored[: acknowledged + 1] == list(range(acknowledged + 1))
    assert stored == list(range(len(stored)))


def test_payload_is_plain_msgpack(tmp_path):
    import sqlite3

    with EventLog(tmp_path / "e.db") as log:
        log.append({"stream": "cam1", "track_id": 3, "scores": [0.1, 0.9]})
    raw = sqlite3.connect(tmp_path / "e.db").execute("SELECT payload FROM events").fetchone()[0]
    assert msgpack.unpackb(raw) == {"stream": "cam1", "track_id": 3, "scores": [0.1, 0.9], "seq": 1}


def test_missing_or_foreign_file_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="not found"):
        EventLog(tmp_path / "nope.db", readonly=True)
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(UserError, match="not a FaceSleuth event log"):
        EventLog(bad)
