"""`events`: the event sink. Every mer.event is written to the durable SQLite log (which assigns its
gap-free sequence number), then published on the public PUB socket; a replay endpoint serves
"events since N"; optionally appended to a JSONL file and printed live.

A failing write (disk full, the file system gone read-only) holds the stream: the event is retried with
backoff for up to `write_retry_s`, which stalls the lossless link, so the producers wait (bounded
queues) instead of events being dropped. It says so in one line, and once more when writes work again;
if they never do, the node fails (exit 1: the restart policy, then the run's exit code, say so).

Exactly once in the log: the link from classify is acknowledged (edge.runtime.delivery), and this node
acknowledges an event only after its SQLite commit, so classify keeps and resends whatever a dead events
process never stored. Each event is stored with the delivery id that brought it (the log's `receipts`,
in the same transaction), so a resend of an event already stored is acknowledged and dropped."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

from edge.errors import NodeFailed, UserError
from edge.events.format import format_event
from edge.events.log import EventLog, ReadOnlyLog
from edge.runtime.messages import EVENT_SCHEMA_VERSION, Message
from edge.runtime.node import Node, Param, Port, register_node
from edge.runtime.transport import EventServer, context, is_loopback


@register_node("events")
class EventsSink(Node):
    """Durable event log (SQLite WAL) + public mer.event PUB + replay endpoint (+ JSONL, live print)."""

    inputs = {"events": Port("event")}
    # Acknowledged once process() returned, i.e. after the SQLite commit: the log is what must not lose
    # an event (the `stored` output is a notice; the mqtt bridge reads the log itself).
    ack_after = "handled"
    # Each event again once it is durable, with its `seq` (e.g. for the mqtt bridge to wake on).
    outputs = {"stored": Port("event")}
    params = {
        "db": Param(Path, "events.db", "SQLite event log (relative to the graph file)"),
        "pub": Param(str, "tcp://127.0.0.1:5571", "public mer.event PUB endpoint"),
        "replay": Param(str, "tcp://127.0.0.1:5572", "replay endpoint (events since N)"),
        "jsonl": Param(Path, None, "also append every event to this JSON-lines file"),
        "print": Param(bool, True, "print each event as one line on stdout"),
        "keys": Param(Path, None, "CURVE key dir: the endpoints take only its allowed clients (client.key, "
                                  "allowed/*.key: facesleuth keys allow); required to bind a non-loopback address"),
        "write_retry_s": Param(float, 60.0, "retry a failing log write (disk full, read-only) this long, s, "
                                            "holding the stream, then fail", min=0),
    }

    @classmethod
    def check_params(cls, params: dict[str, Any]) -> None:
        for key in ("pub", "replay"):
            if not is_loopback(params[key]) and not params["keys"]:
                raise UserError(f"param {key!r}: {params[key]} is not loopback: set the `keys` param "
                                "(facesleuth keys generate DIR)")

    @classmethod
    def bound_endpoints(cls, params: dict[str, Any]) -> dict[str, str]:
        return {"pub": params["pub"], "replay": params["replay"]}

    def setup(self) -> None:
        self.check_params(vars(self.p))
        curve, allowed = None, None
        if self.p.keys:
            from edge.runtime.keys import AllowList, load_curve

            curve, allowed = load_curve(self.p.keys), AllowList(self.p.keys)
            if curve.server_secret is None:
                raise UserError(f"param 'keys': {self.p.keys} has no server.key_secret (a subscriber's copy?): "
                                "the events node serves, it needs the full directory from `keys generate`")
        self.log_db = self._open_log()
        self.duplicates = 0  # events received again that the log already held (by delivery id)
        self.ctx = context()
        self.zap = None
        if curve is not None:  # only the key directory's clients (client.key, allowed/*.key) get events;
            # `keys allow` while running takes effect for the next connection
            from edge.runtime.zap import ZapHandler

            self.zap = ZapHandler(self.ctx, allowed)
        self.server = EventServer(self.ctx, self.p.pub, self.p.replay, self.log_db.since,
                                  lambda: self.log_db.last_seq, curve)
        self.jsonl = None
        if self.p.jsonl:
            try:
                Path(self.p.jsonl).parent.mkdir(parents=True, exist_ok=True)
                self.jsonl = open(self.p.jsonl, "a", buffering=1)  # noqa: SIM115
            except OSError as e:
                raise UserError(f"jsonl sink {self.p.jsonl}: {e.strerror}") from None
        self.log.info("event log %s (last seq %d), publishing on %s, replay on %s",
                      self.p.db, self.log_db.last_seq, self.p.pub, self.p.replay)

    def _open_log(self) -> EventLog:
        """The log, for writing. When the run starts, a read-only log is bad input (exit 2, not retried). A
        restarted events node found it writable before, in this run: read-only now is a durable-write
        failure like a full disk, so it retries for write_retry_s (classify keeps the events meanwhile),
        then fails (exit 1)."""
        if not self.run_info.get("restarts"):
            return EventLog(self.p.db)
        t0, delay, failures = time.monotonic(), 0.05, 0
        while True:
            try:
                log_db = EventLog(self.p.db)
                break
            except ReadOnlyLog as e:
                failures += 1
                waited = time.monotonic() - t0
                if failures == 1:
                    self.log.error("%s: retrying for up to %g s", e, self.p.write_retry_s)
                if waited >= self.p.write_retry_s or self.stopping:
                    raise NodeFailed(f"event log {self.p.db} stayed read-only for {waited:.1f} s") from None
                time.sleep(min(delay, max(0.0, self.p.write_retry_s - waited)))
                delay = min(2 * delay, 2.0)
        if failures:
            self.log.warning("event log %s: writable again after %.1f s", self.p.db, time.monotonic() - t0)
        return log_db

    def process(self, port: str, msg: Message) -> None:
        ev = dict(msg.meta)
        ev.setdefault("schema", EVENT_SCHEMA_VERSION)
        ev.setdefault("stream", msg.stream)
        ev.setdefault("clock", "live")
        if "latency_ms" not in ev:
            ev["latency_ms"] = msg.latency_ms()  # null on the media clock
            stages = ev.setdefault("stages_ms", None)
            if stages and ev["latency_ms"] is not None:
                ev["stages_ms"] = {**stages, "events": round(ev["latency_ms"] - sum(stages.values()), 2)}
        if not self._append_durably(ev, msg.id):  # durable first: assigns ev["seq"]
            self.duplicates += 1  # a resend of an event stored before this process's predecessor died
            return
        self.server.publish(ev)
        self.emit("stored", msg.derive("event", ev))
        if self.jsonl:
            self.jsonl.write(json.dumps(ev, default=str) + "\n")
        if self.p.print:
            print(format_event(ev), flush=True)

    def _append_durably(self, ev: dict[str, Any], receipt: str = "") -> bool:
        """Store `ev` (False: it was stored already under `receipt`, its delivery id)."""
        t0, delay, failures = time.monotonic(), 0.05, 0
        while True:
            try:
                stored = self.log_db.append(ev, receipt) > 0
                break
            except sqlite3.Error as e:
                failures += 1
                waited = time.monotonic() - t0
                if failures == 1:
                    self.log.error("event log %s: write failed (%s): holding the stream, retrying for up to "
                                   "%g s", self.p.db, e, self.p.write_retry_s)
                if waited >= self.p.write_retry_s:
                    raise NodeFailed(f"event log {self.p.db}: writes failed for {waited:.1f} s ({e}); "
                                     "the event in hand is not stored") from None
                if self.stopping:
                    raise NodeFailed(f"event log {self.p.db}: stopped while writes failed ({e}); the event "
                                     "in hand is not stored") from None
                time.sleep(min(delay, max(0.0, self.p.write_retry_s - waited)))
                delay = min(2 * delay, 2.0)
        if failures:
            self.log.warning("event log %s: writes work again after %.1f s (%d failed attempts); nothing lost",
                             self.p.db, time.monotonic() - t0, failures)
        return stored

    def rejected(self) -> int:
        refused = self.zap.denied if getattr(self, "zap", None) is not None else 0  # keys not on the allow-list
        return (self.server.bad_requests if hasattr(self, "server") else 0) + refused

    def teardown(self) -> None:
        if hasattr(self, "server"):
            self.server.close()
        if getattr(self, "zap", None) is not None:  # also when the endpoints failed to bind
            self.zap.close()
        if hasattr(self, "ctx"):
            self.ctx.term()
        if getattr(self, "jsonl", None):
            self.jsonl.close()
        if hasattr(self, "log_db"):
            self.log_db.close()
