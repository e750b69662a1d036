"""The durable event log: every mer.event is written here (SQLite, WAL) before or as it is published.

Sequence numbers are assigned by the log, so they are gap-free and survive restarts of any node:
a subscriber that sees a gap in `seq` asks the replay endpoint for `since(seq)` and gets exactly the
missing events. Each event is stored as JSON text beside columns for seq, stream, track, kind, label and
times (edge/events/rows.py has the layout), so `sqlite3`, its JSON functions and pandas read the log.

Logs of the first layout (each event one msgpack blob, column `payload`) are read as they are, and
migrated to JSON in one transaction when opened for writing (a crash midway leaves the old table whole).

Durability: WAL with synchronous=FULL, so an event is on disk when `append()` returns, even if the
process or the device dies right after (event rates are low; the fsync cost is irrelevant here).
The next seq is read and written inside one write transaction (BEGIN IMMEDIATE), so several processes
may append to one log (they queue on SQLite's lock, for up to LOCK_TIMEOUT_S).

Opening: a file that is not SQLite is "not a FaceSleuth event log"; a valid log that cannot be written
(read-only file, directory or file system) is said to be read-only, for writing; for queries
(`readonly=True`) it is opened read-only, and on read-only media, where SQLite cannot make the WAL's
shared-memory file, as an immutable file.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edge.errors import UserError
from edge.events.rows import COLUMNS, CREATE_EVENTS, from_json, from_msgpack, to_row

_SCHEMA = (*CREATE_EVENTS, "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)",
           # delivery ids of what the events node stored: a resent event is stored once (edge.runtime.delivery)
           "CREATE TABLE IF NOT EXISTS receipts (id TEXT PRIMARY KEY, seq INTEGER NOT NULL)")
_INSERT = f"INSERT INTO events ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
_SQLITE_MAGIC = b"SQLite format 3\x00"
LOCK_TIMEOUT_S = 10.0  # waiting for another writer's transaction


class ReadOnlyLog(UserError):
    """A valid event log that cannot be written (read-only file, directory or file system). Bad input when
    a run starts; the events node retries it when the log turned read-only under a running graph."""


def _is_readonly_error(e: sqlite3.Error) -> bool:
    text = str(e).lower()
    return "readonly" in text or "read-only" in text or "unable to open" in text


def _check_header(path: Path) -> None:
    """UserError unless `path` is empty or starts like an SQLite database."""
    try:
        with open(path, "rb") as f:
            head = f.read(len(_SQLITE_MAGIC))
    except OSError as e:
        raise UserError(f"event log {path}: {e.strerror}") from None
    if head and head != _SQLITE_MAGIC:
        raise UserError(f"{path} is not a FaceSleuth event log (not an SQLite database)")


def _has_events_table(db: sqlite3.Connection) -> bool:
    return db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'events'").fetchone() is not None


def _layout(db: sqlite3.Connection) -> str | None:
    """"json" (this layout), "msgpack" (the first: one blob per event) or None (no such log)."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(events)")}
    return "json" if "event" in columns else "msgpack" if "payload" in columns else None


def _migrate(db: sqlite3.Connection, path: Path) -> None:
    """Rewrite a first-layout log (msgpack blobs) as JSON rows, keeping every seq, in one transaction."""
    db.execute("BEGIN IMMEDIATE")
    try:
        if _layout(db) == "msgpack":  # another writer may have migrated it while this one waited
            db.execute("ALTER TABLE events RENAME TO events_msgpack")
            # The old indexes keep their names on the renamed table: drop them so the new ones can be made.
            db.execute("DROP INDEX IF EXISTS events_track")
            db.execute("DROP INDEX IF EXISTS events_label")
            for statement in CREATE_EVENTS:
                db.execute(statement)
            for seq, payload in db.execute("SELECT seq, payload FROM events_msgpack ORDER BY seq").fetchall():
                try:
                    event = from_msgpack(payload)
                    if not isinstance(event, dict):
                        raise ValueError(f"a {type(event).__name__}")
                except Exception as e:  # noqa: BLE001 - any decoding failure means the same: a damaged row
                    raise UserError(f"event log {path}: event #{seq} is not a msgpack map ({e}); "
                                    "nothing was migrated") from None
                db.execute(_INSERT, to_row({**event, "seq": seq}))
            db.execute("DROP TABLE events_msgpack")
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


class EventLog:
    """Append-only SQLite event log (thread-safe; one writer process per database).

    Args:
        path: database file; parent directories are created.
        readonly: open an existing log for queries only (no writes, no creation).
    """

    def __init__(self, path: str | Path, readonly: bool = False) -> None:
        self.path = Path(path)
        self.readonly = readonly
        if self.path.is_dir():
            raise UserError(f"event log {self.path} is a directory")
        if readonly and not self.path.is_file():
            raise UserError(f"event log not found: {self.path}")
        if self.path.is_file():
            _check_header(self.path)
        try:
            self._db = self._open_readonly() if readonly else self._open_writable()
            self._check_layout(readonly)
        except sqlite3.DatabaseError as e:
            if not readonly and _is_readonly_error(e):
                raise ReadOnlyLog(f"event log {self.path} is read-only ({e}): the events node needs to write it; "
                                "`facesleuth events query` reads it") from None
            raise UserError(f"{self.path} is not a FaceSleuth event log ({e})") from None
        self._lock = threading.Lock()

    def _check_layout(self, readonly: bool) -> None:
        """UserError unless the open database holds an event log; migrates a first-layout one for writing."""
        layout = _layout(self._db)
        try:
            if layout is None:
                why = ("its events table has neither an `event` nor a `payload` column"
                       if _has_events_table(self._db) else "no events table")
                raise UserError(f"{self.path} is not a FaceSleuth event log ({why})")
            if layout == "msgpack" and not readonly:
                _migrate(self._db, self.path)
        except UserError:
            self._db.close()
            raise

    def _open_writable(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"event log {self.path}: cannot create {self.path.parent}: {e.strerror}") from None
        if self.path.exists() and not os.access(self.path, os.W_OK):
            raise sqlite3.OperationalError("attempt to write a readonly database")
        db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=LOCK_TIMEOUT_S)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            if not _has_events_table(db):
                for statement in _SCHEMA:
                    db.execute(statement)
        except sqlite3.Error:
            db.close()
            raise
        return db

    def _open_readonly(self) -> sqlite3.Connection:
        uri = f"file:{self.path.resolve()}?mode=ro"
        db = sqlite3.connect(uri, uri=True, check_same_thread=False)
        try:
            db.execute("SELECT 1 FROM events LIMIT 1")
            return db
        except sqlite3.OperationalError as e:
            db.close()
            if not _is_readonly_error(e):
                raise
        # Read-only media: no -shm file can be made next to the log. A log closed cleanly holds
        # everything in the main file (its WAL was checkpointed), which `immutable` reads without locks.
        return sqlite3.connect(f"{uri}&immutable=1", uri=True, check_same_thread=False)

    def append(self, event: dict[str, Any], receipt: str = "") -> int:
        """Store `event` with the next sequence number; sets and returns event["seq"]. With a `receipt` (the
        delivery id of the message that brought it), an event already stored under it is not stored again:
        returns 0 (exactly once in the log across resends)."""
        with self._lock:
            # IMMEDIATE: the write lock is taken before the read, so no other writer can take this seq.
            self._db.execute("BEGIN IMMEDIATE")
            try:
                if receipt and self._db.execute("SELECT 1 FROM receipts WHERE id = ?", (receipt,)).fetchone():
                    self._db.execute("COMMIT")
                    return 0
                seq = int(self._db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM events").fetchone()[0])
                event["seq"] = seq
                self._db.execute(_INSERT, to_row(event))
                if receipt:
                    self._db.execute("INSERT INTO receipts (id, seq) VALUES (?, ?)", (receipt, seq))
                self._db.execute("COMMIT")
            except BaseException:
                event.pop("seq", None)
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
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
        # SELECT *: the layout is read from the result's columns, so a reader whose log is migrated by
        # the writer meanwhile (the mqtt bridge beside the events node) reads on without reopening.
        sql, args = "SELECT * FROM events WHERE seq > ?", [since]
        for col, val in (("track_id", track_id), ("label", label), ("stream", stream)):
            if val is not None:
                sql += f" AND {col} = ?"
                args.append(val)
        sql += " ORDER BY seq"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(int(limit))
        with self._lock:
            cur = self._db.execute(sql, args)
            rows, names = cur.fetchall(), [d[0] for d in cur.description]
        if "event" in names:
            i, j = names.index("event"), names.index("attachments")
            for row in rows:
                yield from_json(row[i], row[j])
        else:
            i, k = names.index("payload"), names.index("seq")
            for row in rows:
                yield {**from_msgpack(row[i]), "seq": row[k]}

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> EventLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
