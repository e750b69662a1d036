"""The durable event log: every mer.event is written here (SQLite, WAL) before or as it is published.

Sequence numbers are assigned by the log, so they are gap-free and survive restarts of any node:
a subscriber that sees a gap in `seq` asks the replay endpoint for `since(seq)` and gets exactly the
missing events. Events are stored as their msgpack map (the wire form) plus a few indexed columns.

Durability: WAL with synchronous=FULL, so an event is on disk when `append()` returns, even if the
process or the device dies right after (event rates are low; the fsync cost is irrelevant here).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack

from edge.errors import UserError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq        INTEGER PRIMARY KEY,
    stream     TEXT NOT NULL,
    track_id   INTEGER,
    kind       TEXT,
    label      TEXT,
    t_wall_ns  INTEGER,
    payload    BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS events_track ON events (stream, track_id);
CREATE INDEX IF NOT EXISTS events_label ON events (label);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
"""


class EventLog:
    """Append-only SQLite event log (thread-safe; one writer process per database).

    Args:
        path: database file; parent directories are created.
        readonly: open an existing log for queries only (no writes, no creation).
    """

    def __init__(self, path: str | Path, readonly: bool = False) -> None:
        self.path = Path(path)
        try:
            if readonly:
                if not self.path.is_file():
                    raise UserError(f"event log not found: {self.path}")
                uri = f"file:{self.path.resolve()}?mode=ro"
                self._db = sqlite3.connect(uri, uri=True, check_same_thread=False)
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=FULL")
                self._db.executescript(_SCHEMA)
            self._db.execute("SELECT 1 FROM events LIMIT 1")
        except sqlite3.DatabaseError as e:
            raise UserError(f"{self.path} is not a FaceSleuth event log ({e})") from None
        self._lock = threading.Lock()

    def append(self, event: dict[str, Any]) -> int:
        """Store `event` with the next sequence number; sets and returns event["seq"]."""
        with self._lock:
            cur = self._db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM events")
            seq = int(cur.fetchone()[0])
            event["seq"] = seq
            self._db.execute(
                "INSERT INTO events (seq, stream, track_id, kind, label, t_wall_ns, payload)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (seq, str(event.get("stream", "")), event.get("track_id"), event.get("kind"),
                 event.get("label"), event.get("t_wall_ns"), msgpack.packb(event, use_bin_type=True)),
            )
            return seq

    @property
    def last_seq(self) -> int:
        """Highest sequence number stored (0 when empty)."""
        with self._lock:
            return int(self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0])

    def since(self, seq: int, limit: int = 1000) -> list[dict[str, Any]]:
        """Events with sequence number > seq, oldest first, at most `limit`."""
        return list(self.query(since=seq, limit=limit))

    def query(self, since: int = 0, track_id: int | None = None, label: str | None = None,
              stream: str | None = None, limit: int | None = None) -> Iterator[dict[str, Any]]:
        """Events matching every given filter, oldest first."""
        sql, args = "SELECT payload FROM events WHERE seq > ?", [since]
        for col, val in (("track_id", track_id), ("label", label), ("stream", stream)):
            if val is not None:
                sql += f" AND {col} = ?"
                args.append(val)
        sql += " ORDER BY seq"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(int(limit))
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        for (payload,) in rows:
            yield msgpack.unpackb(payload, raw=False)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> EventLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
