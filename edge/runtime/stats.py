"""`facesleuth stats`: a live per-node table of a running graph.

The supervisor (edge.runtime.supervisor) publishes one snapshot a second on the `stats` endpoint listed in
RUN_DIR/endpoints.json (the snapshot and its per-node record, NodeRecord, are defined in edge.runtime.control).
Without --run-dir the newest run is used (/tmp/facesleuth-UID/latest, made by the supervisor).

    facesleuth stats              # redraw the table every second until the graph stops (Ctrl-C to leave)
    facesleuth stats --once       # one table
    facesleuth stats --once --json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import msgpack
import zmq

from edge.errors import FacesleuthError, UserError
from edge.jsonout import JsonOut, add_json_argument
from edge.runtime.control import STATS_TOPIC, NodeRecord
from edge.table import format_table

COLUMNS = ("node", "state", "pid", "restarts", "in", "out", "fps", "p50_ms", "p99_ms",
           "drop_in", "drop_out", "foreign", "errors", "outbox", "resent")


def find_run_dir(run_dir: str | Path | None = None) -> Path:
    """The run directory of a running graph: `run_dir`, or the newest run. UserError if there is none, or
    if its runner is gone (a directory left by a killed runner)."""
    from edge.runtime.supervisor import runs_root, supervisor_alive

    d = Path(run_dir) if run_dir else runs_root() / "latest"
    if not (d / "endpoints.json").is_file():
        where = d if run_dir else runs_root()
        raise UserError(f"no running graph in {where}: start one with `facesleuth run GRAPH` or pass --run-dir")
    info = read_endpoints(d)
    if not supervisor_alive(info):
        raise UserError(f"graph {info.get('graph')} in {d.resolve()} is not running (its runner, pid "
                        f"{info.get('pid')}, is gone); the next `facesleuth run` removes the directory")
    return d.resolve()


def read_endpoints(run_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((run_dir / "endpoints.json").read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"{run_dir / 'endpoints.json'} unreadable ({e}); has the graph stopped?") from None


class StatsSubscriber:
    """SUB socket on a supervisor's stats endpoint (RUN_DIR/endpoints.json's "stats"): `next(timeout_s)`
    waits for the next snapshot, `latest()` returns the newest one without waiting. One thread at a time."""

    def __init__(self, endpoint: str) -> None:
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.SUB)
        self.sock.linger = 0
        self.sock.setsockopt(zmq.SUBSCRIBE, STATS_TOPIC)
        self.sock.connect(endpoint)
        self._latest: dict[str, Any] | None = None

    def next(self, timeout_s: float) -> dict[str, Any] | None:
        """The next snapshot dict, or None if none came within `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            if not self.sock.poll(int(left * 1000) + 1):
                return None
            snap = self._decode(self.sock.recv_multipart())
            if snap is not None:
                return snap
        return None

    def latest(self) -> dict[str, Any] | None:
        """The newest snapshot received so far (None before the first). Call it at least every few minutes:
        the socket queues 1000 snapshots (about 16 min) and drops newer ones while full."""
        while self.sock.poll(0):
            self._latest = self._decode(self.sock.recv_multipart()) or self._latest
        return self._latest

    @staticmethod
    def _decode(parts: list[bytes]) -> dict[str, Any] | None:
        try:
            snap = msgpack.unpackb(parts[1], raw=False)
        except Exception:  # not the supervisor's: ignored
            return None
        return snap if isinstance(snap, dict) and isinstance(snap.get("nodes"), dict) else None

    def close(self) -> None:
        self.sock.close(0)
        self.ctx.term()


def snapshot(run_dir: str | Path | None = None, timeout_s: float = 3.0) -> dict[str, Any]:
    """One stats snapshot of a running graph (raises FacesleuthError if none arrives in `timeout_s`)."""
    d = find_run_dir(run_dir)
    sub = StatsSubscriber(read_endpoints(d)["stats"])
    try:
        snap = sub.next(timeout_s)
    finally:
        sub.close()
    if snap is None:
        raise FacesleuthError(f"no stats from {d} within {timeout_s:g} s: is the graph still running?")
    return snap


def rows(snap: dict[str, Any], prev: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Table rows. fps is the rate over the interval since `prev` (messages processed, or sent by a
    source); for the first snapshot, the node's own average since it started."""
    dt = (snap["t_wall_ns"] - prev["t_wall_ns"]) / 1e9 if prev else 0.0
    out = []
    for name, raw in snap["nodes"].items():
        s = NodeRecord.from_dict(raw)
        fps = s.fps
        prev_raw = (prev or {}).get("nodes", {}).get(name)
        if prev_raw is not None and dt > 0:
            p = NodeRecord.from_dict(prev_raw)
            if p.pid == s.pid:
                fps = max(0.0, (s.messages_in - p.messages_in if s.messages_in
                                else s.messages_out - p.messages_out) / dt)
        out.append({
            "node": name, "state": s.state or "?", "pid": s.pid, "restarts": s.restarts,
            "in": s.messages_in, "out": s.messages_out, "fps": float(fps),
            "p50_ms": float(s.p50_ms), "p99_ms": float(s.p99_ms),
            "drop_in": s.dropped_in, "drop_out": s.dropped_out, "foreign": s.foreign, "errors": s.errors,
            "outbox": s.outbox, "resent": s.resent,
        })
    return out


# ------------------------------------------------------------------------------------------ command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run-dir", metavar="DIR", help="run directory (default: the newest running graph)")
    parser.add_argument("--once", action="store_true", help="print one snapshot and exit")
    add_json_argument(parser, "one JSON line per snapshot")
    parser.add_argument("--timeout", type=float, default=5.0, metavar="S",
                        help="give up when no stats arrive for S seconds (default 5)")


def _show(snap: dict[str, Any], table: list[dict[str, Any]], out: JsonOut, redraw: bool) -> None:
    out.line({"graph": snap.get("graph"), "t_wall_ns": snap["t_wall_ns"], "nodes": table,
              "control_dropped": snap.get("control_dropped", 0)})
    if not out.text:
        return
    stamp = time.strftime("%H:%M:%S", time.localtime(snap["t_wall_ns"] / 1e9))
    text = f"graph {snap.get('graph')}  {stamp}\n{format_table(table, COLUMNS)}\n"
    sys.stdout.write(("\x1b[H\x1b[2J" if redraw else "") + text + ("" if redraw else "\n"))
    sys.stdout.flush()


def main(args: argparse.Namespace) -> int:
    out = JsonOut(args.json)
    run_dir = find_run_dir(args.run_dir)
    sub = StatsSubscriber(read_endpoints(run_dir)["stats"])
    redraw = sys.stdout.isatty() and out.text and not args.once
    prev = None
    try:
        while True:
            snap = sub.next(args.timeout)
            if snap is None:
                from edge.runtime.supervisor import supervisor_alive

                if (run_dir / "endpoints.json").exists() and not supervisor_alive(read_endpoints(run_dir)):
                    raise FacesleuthError(f"graph {(prev or {}).get('graph', '')} in {run_dir} stopped: "
                                          "its runner is gone")
                if not (run_dir / "endpoints.json").exists() and prev is not None:
                    print(f"graph {prev.get('graph')} stopped", file=sys.stderr)
                    return 0
                raise FacesleuthError(f"no stats from {run_dir} for {args.timeout:g} s: "
                                      "is the graph still running?")
            _show(snap, rows(snap, prev), out, redraw)
            if args.once:
                return 0
            prev = snap
    finally:
        sub.close()
        out.close()
