"""`facesleuth events tail|query|export`: follow the live event stream (with gap repair), query the event log,
or export it as CSV / JSON lines."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edge.errors import UserError
from edge.events.log import EventLog
from edge.jsonout import JsonOut, add_json_argument


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from nodes.events import EventsSink

    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    t = sub.add_parser("tail", help="print live events; gaps are repaired through the replay endpoint")
    t.add_argument("endpoint", nargs="?", help="mer.event PUB endpoint (default: the events node of the newest "
                                                "running graph, with its --set endpoints; else "
                                                f"{EventsSink.params['pub'].default})")
    t.add_argument("--replay", help="replay endpoint (default: with no endpoint given, the running graph's; else "
                                    f"{EventsSink.params['replay'].default})")
    t.add_argument("--since", type=int, help="first replay every event after this sequence number")
    t.add_argument("--count", type=int, help="exit after this many events")
    t.add_argument("--timeout", type=float, help="exit after this many seconds without an event")
    add_json_argument(t, "one JSON object per event")
    t.add_argument("--keys", help="CURVE key dir: the events node's server.key and a client pair it allows "
                                  "(facesleuth keys allow)")
    q = sub.add_parser("query", help="query the SQLite event log")
    q.add_argument("db", help="event log file (the events node's `db`)")
    q.add_argument("--since", type=int, default=0, help="events after this sequence number")
    q.add_argument("--track", type=int, help="only this track id")
    q.add_argument("--label", help="only this label")
    q.add_argument("--stream", help="only this stream id")
    q.add_argument("--limit", type=int, help="at most this many events")
    add_json_argument(q, "one JSON object per event")
    x = sub.add_parser("export", help="the whole log as CSV or JSON lines (times in seconds and frames, every field)")
    x.add_argument("db", help="event log file (read-only is fine; old logs too)")
    fmt = x.add_mutually_exclusive_group(required=True)
    fmt.add_argument("--csv", dest="format", action="store_const", const="csv", help="CSV, nested fields as a.b columns")
    fmt.add_argument("--jsonl", dest="format", action="store_const", const="jsonl", help="one JSON object per event")
    x.add_argument("-o", "--output", type=Path, help="file to write (default: stdout)")


def running_events_node() -> tuple[str, dict] | None:
    """(graph name, params) of the events node of the newest graph that still runs (its runner's
    `latest` run folder), or None."""
    import json

    from edge.runtime.supervisor import runs_root, supervisor_alive

    run = runs_root() / "latest"
    try:
        info = json.loads((run / "endpoints.json").read_text())
        if not isinstance(info, dict) or not supervisor_alive(info):
            return None
        for spec_path in sorted(run.glob("*.json")):
            spec = json.loads(spec_path.read_text())
            if isinstance(spec, dict) and spec.get("type") == "events" and isinstance(spec.get("params"), dict):
                return str(info.get("graph", "")), spec["params"]
    except (OSError, ValueError):
        return None
    return None


def _endpoints(endpoint: str | None, replay: str | None) -> tuple[str, str]:
    """The PUB and replay endpoints to follow: those given, else the running graph's events node's (a
    `--set events.pub=...` moves them), else the node's defaults."""
    if endpoint is not None and replay is not None:
        return endpoint, replay
    from nodes.events import EventsSink

    found = running_events_node() if endpoint is None else None
    params = found[1] if found else {}
    pub = endpoint or params.get("pub") or EventsSink.params["pub"].default
    rep = replay or params.get("replay") or EventsSink.params["replay"].default
    if found:
        print(f"following the events node of the running graph {found[0]}: {pub}, replay {rep}", file=sys.stderr)
    return pub, rep


def _show(ev: dict, out: JsonOut) -> None:
    from edge.events.format import format_event

    out.line(ev)
    if out.text:
        print(format_event(ev), flush=True)


def _export(args: argparse.Namespace) -> int:
    from edge.events.export import write_csv, write_jsonl

    write = write_csv if args.format == "csv" else write_jsonl
    out_path: Path | None = args.output
    if out_path is not None and (out_path.is_dir() or not out_path.parent.is_dir()):
        raise UserError(f"-o {out_path}: " + ("is a directory" if out_path.is_dir() else "its directory does not exist"))
    with EventLog(args.db, readonly=True) as log:
        if out_path is None:
            n = write(log.query(), sys.stdout)
        else:
            # Written beside and renamed: an interrupted export never leaves a half file under the name.
            tmp = out_path.with_name(out_path.name + ".part")
            with open(tmp, "w", encoding="utf-8", newline="") as f:
                n = write(log.query(), f)
            tmp.replace(out_path)
    print(f"{n} event(s)" + (f" -> {out_path}" if out_path else ""), file=sys.stderr)
    return 0


def main(args: argparse.Namespace) -> int:
    if args.action == "export":
        return _export(args)
    out = JsonOut(args.json)
    if args.action == "query":
        with EventLog(args.db, readonly=True) as log, out:
            n = 0
            for ev in log.query(args.since, args.track, args.label, args.stream, args.limit):
                _show(ev, out)
                n += 1
        if out.text:
            print(f"{n} event(s)")
        return 0

    from edge.runtime.transport import EventClient, context

    curve = None
    if args.keys:
        from edge.runtime.keys import load_curve

        curve = load_curve(args.keys)
    endpoint, replay = _endpoints(args.endpoint, args.replay)
    ctx = context()
    client = EventClient(ctx, endpoint, replay, since=args.since, curve=curve)
    n = 0
    try:
        for ev in client.events(timeout_s=args.timeout):
            _show(ev, out)
            n += 1
            if args.count and n >= args.count:
                break
    except TimeoutError as e:
        raise UserError(str(e)) from None
    finally:
        client.close()
        ctx.term()
        out.close()
    return 0
