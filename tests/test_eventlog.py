"""The durable event log: gap-free sequence numbers, survives a killed writer, filters, clear errors."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import msgpack
import pytest
from conftest import REPO, need

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


EVENT = {"schema": 2, "stream": "cam1", "track_id": 3, "kind": "micro", "label": "surprise",
         "onset": {"frame": 30, "t_mono_ns": 1_000_000_000, "t_wall_ns": 1_795_000_001_000_000_000},
         "apex": {"frame": 33, "t_mono_ns": 1_100_000_000, "t_wall_ns": 1_795_000_001_100_000_000},
         "offset": {"frame": 36, "t_mono_ns": 1_200_000_000, "t_wall_ns": 1_795_000_001_200_000_000},
         "duration_s": 0.2, "scores": {"negative": 0.1, "surprise": 0.9}, "confidence": 0.9,
         "box": [1.0, 2.0, 3.0, 4.0], "latency_ms": None, "clock": "media", "t_wall_ns": 1_795_000_002_000_000_000,
         "context": {"talking": False, "occluded": [], "head_pose": [2.5, -1.0, 0.5]}}


def test_each_event_is_json_text_that_sqlite_reads_beside_its_columns(tmp_path):
    with EventLog(tmp_path / "e.db") as log:
        log.append(dict(EVENT))
    db = sqlite3.connect(tmp_path / "e.db")
    db.row_factory = sqlite3.Row
    row = db.execute("SELECT *, json_extract(event, '$.scores.surprise') AS surprise,"
                     " json_extract(event, '$.context.head_pose[0]') AS yaw FROM events").fetchone()
    assert json.loads(row["event"]) == {**EVENT, "seq": 1}
    assert (row["surprise"], row["yaw"]) == (0.9, 2.5)
    assert (row["seq"], row["stream"], row["track_id"], row["kind"], row["label"]) == (1, "cam1", 3, "micro", "surprise")
    assert (row["onset_frame"], row["apex_frame"], row["offset_frame"]) == (30, 33, 36)
    assert row["onset_s"] == pytest.approx(1_795_000_001.0) and row["offset_s"] == pytest.approx(1_795_000_001.2)
    assert (row["duration_s"], row["confidence"], row["attachments"]) == (0.2, 0.9, None)


def test_bytes_come_back_from_replay_exactly_and_non_finite_floats_as_null(tmp_path):
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
    with EventLog(tmp_path / "e.db") as log:
        log.append({**EVENT, "debug_apex_crop": png, "intensity": float("nan"), "extra": [{"raw": b"\x00"}]})
        (ev,) = log.since(0)
    assert ev["debug_apex_crop"] == png and ev["extra"] == [{"raw": b"\x00"}] and ev["intensity"] is None
    # The JSON stays valid for SQLite (no NaN token); the bytes are null there and kept beside it.
    text = sqlite3.connect(tmp_path / "e.db").execute("SELECT json_valid(event), event FROM events").fetchone()
    assert text[0] == 1 and json.loads(text[1])["debug_apex_crop"] is None


def test_pandas_reads_the_log_with_plain_sql(tmp_path):
    pd = pytest.importorskip("pandas")
    with EventLog(tmp_path / "e.db") as log:
        for label in ("surprise", "negative"):
            log.append({**EVENT, "label": label})
    with sqlite3.connect(tmp_path / "e.db") as db:
        df = pd.read_sql("SELECT seq, label, onset_s, json_extract(event, '$.box[2]') AS w FROM events", db)
    assert df["label"].tolist() == ["surprise", "negative"] and df["w"].tolist() == [3.0, 3.0]


# The first layout, as the code before JSON rows made it (hard-coded: the log must go on reading these).
OLD_SCHEMA = """
CREATE TABLE events (
    seq        INTEGER PRIMARY KEY,
    stream     TEXT NOT NULL,
    track_id   INTEGER,
    kind       TEXT,
    label      TEXT,
    t_wall_ns  INTEGER,
    payload    BLOB NOT NULL
);
CREATE INDEX events_track ON events (stream, track_id);
CREATE INDEX events_label ON events (label);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);
"""


def _old_log(path: Path, count: int = 3) -> list[dict]:
    """A first-layout log with `count` events (msgpack blobs, one with PNG bytes), as it was written."""
    events = [{**EVENT, "seq": i + 1, "track_id": i, "debug_apex_crop": b"\x89PNG" * (i == 1)} for i in range(count)]
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(OLD_SCHEMA)
    for ev in events:
        db.execute("INSERT INTO events (seq, stream, track_id, kind, label, t_wall_ns, payload) VALUES (?, ?, ?, ?, ?, ?, ?)",
                   (ev["seq"], ev["stream"], ev["track_id"], ev["kind"], ev["label"], ev["t_wall_ns"],
                    msgpack.packb(ev, use_bin_type=True)))
    db.commit()
    db.close()
    return events


def test_an_old_msgpack_log_is_read_as_it_is_and_migrated_when_opened_for_writing(tmp_path):
    db = tmp_path / "old.db"
    events = _old_log(db)
    with EventLog(db, readonly=True) as log:  # a reader leaves it as it is
        assert list(log.query()) == events and [e["seq"] for e in log.query(track_id=2)] == [3]
    assert "payload" in {r[1] for r in sqlite3.connect(db).execute("PRAGMA table_info(events)")}
    with EventLog(db) as log:  # the writer migrates it, then numbering goes on
        assert log.last_seq == 3 and log.append({**EVENT, "track_id": 9}) == 4
        assert list(log.query())[:3] == events
    raw = sqlite3.connect(db)
    assert {r[1] for r in raw.execute("PRAGMA table_info(events)")} >= {"event", "onset_frame", "attachments"}
    assert raw.execute("SELECT group_concat(json_extract(event, '$.track_id')) FROM events").fetchone() == ("0,1,2,9",)
    assert raw.execute("SELECT name FROM sqlite_master WHERE name LIKE 'events%' ORDER BY name").fetchall() == [
        ("events",), ("events_label",), ("events_track",)]


def test_a_damaged_old_log_is_named_and_left_whole(tmp_path):
    db = tmp_path / "old.db"
    _old_log(db)
    with sqlite3.connect(db) as raw:
        raw.execute("UPDATE events SET payload = x'c1' WHERE seq = 2")  # 0xc1: never used in msgpack
    with pytest.raises(UserError, match="event #2 is not a msgpack map"):
        EventLog(db)
    with sqlite3.connect(db) as raw:
        assert raw.execute("SELECT count(*) FROM events WHERE payload IS NOT NULL").fetchone() == (3,)


def test_missing_or_foreign_file_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="not found"):
        EventLog(tmp_path / "nope.db", readonly=True)
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(UserError, match="not a FaceSleuth event log"):
        EventLog(bad)


def _writer(db, count: int, tag: str) -> subprocess.Popen:
    """A second process appending `count` events to `db`; prints "open" once the log is open, then each seq."""
    code = (
        "import sys\n"
        "from edge.events.log import EventLog\n"
        f"log = EventLog({str(db)!r})\n"
        "print('open', flush=True)\n"
        f"for i in range({count}):\n"
        f"    print(log.append({{'stream': {tag!r}, 'i': i}}), flush=True)\n"
    )
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_seq_is_taken_inside_the_write_transaction_of_another_process(tmp_path):
    """Another process holds the write lock with seq 2 pending when the writer appends: the writer waits
    and takes 3 (reading the seq before the lock would take 2 again: UNIQUE constraint failed)."""
    db = tmp_path / "events.db"
    with EventLog(db) as log:
        log.append({"stream": "cam0"})
    other = sqlite3.connect(db, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO events (seq, stream, event) VALUES (2, 'other', ?)", (json.dumps({"seq": 2}),))
    writer = _writer(db, 1, "cam0")
    try:
        assert writer.stdout.readline().strip() == "open"
        time.sleep(0.3)  # the writer is in append(), waiting for the lock
        assert writer.poll() is None, writer.stderr.read()
        other.execute("COMMIT")
        out, err = writer.communicate(timeout=30)
    finally:
        writer.kill()
        other.close()
    assert writer.returncode == 0 and out.split() == ["3"], err
    with EventLog(db, readonly=True) as log:
        assert [e["seq"] for e in log.query()] == [1, 2, 3]


def test_two_processes_appending_at_once_get_distinct_gap_free_seqs(tmp_path):
    db = tmp_path / "events.db"
    EventLog(db).close()
    writers = [_writer(db, 150, f"cam{k}") for k in range(2)]
    seqs = []
    for w in writers:
        out, err = w.communicate(timeout=60)
        assert w.returncode == 0 and "UNIQUE" not in err, err
        seqs += [int(s) for s in out.split()[1:]]
    assert sorted(seqs) == list(range(1, 301))
    with EventLog(db, readonly=True) as log:
        events = list(log.query())
    assert [e["seq"] for e in events] == list(range(1, 301))
    for k in range(2):  # each writer's events in its own order
        assert [e["i"] for e in events if e["stream"] == f"cam{k}"] == list(range(150))


def _as_other_user(short_tmp: Path) -> list[str]:
    """Command prefix that runs without the rights to write short_tmp's files: as root, uid nobody (root
    writes through any mode bits)."""
    short_tmp.chmod(0o755)
    if os.geteuid() != 0:
        return []
    need("setpriv", shutil.which("setpriv") is not None, "setpriv not installed (util-linux)")
    return ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def test_read_only_log_is_read_only_not_foreign_and_events_query_reads_it(short_tmp):
    """A valid log on read-only media (file 0444 in a 0555 directory, no -wal/-shm files): the writer is told
    it is read-only, `events query` lists its events; a file that is not SQLite is named as such."""
    ro = short_tmp / "ro"
    ro.mkdir()
    with EventLog(ro / "events.db") as log:
        for i in range(3):
            log.append({"stream": "cam0", "track_id": i, "label": "surprise"})
    (ro / "events.db").chmod(0o444)
    ro.chmod(0o555)
    (short_tmp / "junk.db").write_bytes(b"PK\x03\x04 not a database" * 10)
    (short_tmp / "junk.db").chmod(0o644)
    prefix = _as_other_user(short_tmp)
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*prefix, sys.executable, "-m", "edge", *args], capture_output=True, text=True,
                              env=env, cwd="/", timeout=60)

    r = cli("events", "query", str(ro / "events.db"), "--json")
    assert r.returncode == 0, r.stderr
    assert [json.loads(s)["track_id"] for s in r.stdout.splitlines()] == [0, 1, 2]
    assert not list(ro.glob("*-shm")) and not list(ro.glob("*-wal"))
    write = [*prefix, sys.executable, "-c", f"from edge.events.log import EventLog; EventLog({str(ro / 'events.db')!r})"]
    r = subprocess.run(write, capture_output=True, text=True, env=env, cwd="/", timeout=60)
    assert r.returncode != 0 and "is read-only" in r.stderr and "not a FaceSleuth" not in r.stderr, r.stderr
    r = cli("events", "export", str(ro / "events.db"), "--csv")
    assert r.returncode == 0 and [row.split(",")[2] for row in r.stdout.splitlines()] == ["track_id", "0", "1", "2"], r.stderr
    for args in (("events", "query", str(short_tmp / "junk.db")), ("events", "export", str(short_tmp / "junk.db"), "--csv")):
        r = cli(*args)
        assert r.returncode == 2 and "not a FaceSleuth event log (not an SQLite database)" in r.stderr, r.stderr
        assert "Traceback" not in r.stderr
    with pytest.raises(UserError, match="not an SQLite database"):
        EventLog(short_tmp / "junk.db")


def _export(db: Path, fmt: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edge", "events", "export", str(db), f"--{fmt}", *extra],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60)


def test_export_csv_and_jsonl_hold_every_field_with_times_in_seconds_and_frames(tmp_path):
    import csv
    import io

    with EventLog(tmp_path / "e.db") as log:
        log.append(dict(EVENT))
        log.append({**EVENT, "label": "negative", "debug_apex_crop": b"\x89PNG", "track_id": 4})
    r = _export(tmp_path / "e.db", "csv")
    assert r.returncode == 0 and r.stderr.strip() == "2 event(s)", r.stderr
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert [(x["seq"], x["label"], x["track_id"]) for x in rows] == [("1", "surprise", "3"), ("2", "negative", "4")]
    first = rows[0]
    assert (first["onset_frame"], first["offset_frame"], float(first["onset_s"])) == ("30", "36", 1_795_000_001.0)
    assert (first["scores.surprise"], first["context.head_pose.0"], first["onset.t_mono_ns"]) == ("0.9", "2.5", "1000000000")
    assert (first["context.talking"], first["context.occluded"], first["latency_ms"]) == ("false", "[]", "")
    assert rows[1]["debug_apex_crop"] == ""  # bytes stay in the log
    out = tmp_path / "sub" / "e.jsonl"
    assert _export(tmp_path / "e.db", "jsonl", "-o", str(out)).returncode == 2  # no such directory: one line
    out.parent.mkdir()
    r = _export(tmp_path / "e.db", "jsonl", "-o", str(out))
    assert r.returncode == 0 and r.stdout == "", r.stderr
    recs = [json.loads(s) for s in out.read_text().splitlines()]
    assert recs[0] == {**EVENT, "seq": 1, "onset_frame": 30, "apex_frame": 33, "offset_frame": 36,
                       "onset_s": pytest.approx(1_795_000_001.0), "apex_s": pytest.approx(1_795_000_001.1),
                       "offset_s": pytest.approx(1_795_000_001.2)}
    assert recs[1]["debug_apex_crop"] is None and not list(out.parent.glob("*.part"))


def test_export_of_an_old_log_reads_it_as_it_is_and_matches_the_migrated_one(tmp_path):
    db = tmp_path / "old.db"
    _old_log(db)
    before = _export(db, "jsonl")
    assert before.returncode == 0, before.stderr
    assert "payload" in {r[1] for r in sqlite3.connect(db).execute("PRAGMA table_info(events)")}  # left as it was
    EventLog(db).close()  # migrated
    after = _export(db, "jsonl")
    assert before.stdout == after.stdout and [json.loads(s)["track_id"] for s in after.stdout.splitlines()] == [0, 1, 2]
