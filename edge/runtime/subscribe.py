"""`facesleuth subscribe`: print any stream's messages (header plus array summaries), one line each.

    facesleuth subscribe camera.frames --count 3            # NODE.PORT of the newest running graph
    facesleuth subscribe ipc:///tmp/.../camera.frames.ipc --json
    facesleuth subscribe tcp://10.0.0.5:5555 --keys keys/   # a CURVE-secured endpoint

NODE.PORT resolves through RUN_DIR/endpoints.json (the newest run, or --run-dir); on a graph whose links are
CURVE-secured (tcp, or `keys:`) it uses the run's own tap key, which only this user can read (--keys
overrides it), for NODE.PORT and for an endpoint URL of that run alike. The tap is an extra latest-wins
subscriber: it never slows the graph down, and what it misses while printing is counted
(sequence gaps) and reported at the end. For a CURVE-secured endpoint, --keys names a directory with the
server's public key (server.key) and the client pair (client.key, client.key_secret).

With --json each line is {"topic", "type", "stream", "seq", "frame", "t_mono_ns", "t_wall_ns",
"latency_ms" (now minus capture time, same host only), "meta", "arrays": {name: {"dtype", "shape",
"min", "max", "mean"}}}; without it the same in a compact text form.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from edge.errors import FacesleuthError, UserError
from edge.jsonout import JsonOut, add_json_argument
from edge.runtime.messages import Message
from edge.runtime.transport import Curve, Input, context, is_loopback, new_poller, poll_inputs


def resolve(target: str, run_dir: str | None = None) -> tuple[str, str, str | None, dict[str, Any] | None]:
    """ENDPOINT or NODE.PORT -> (endpoint, default topic, the graph's CURVE key dir or None, the run's
    endpoints.json map or None). UserError naming the known ports, or when the run's runner is gone. An
    ENDPOINT that is a port of the running graph (--run-dir, or the newest) is resolved as that port, so a
    secured graph's tap key is used for it too."""
    from edge.runtime.stats import find_run_dir, read_endpoints

    if "://" in target:
        try:
            eps = read_endpoints(find_run_dir(run_dir))
        except UserError:
            if run_dir:
                raise
            return target, "", None, None  # no graph of ours runs: a raw endpoint of some other program
        port = next((p for p, ep in eps.get("ports", {}).items() if ep == target), None)
        if port is None:
            return target, "", None, None
        return target, "", eps.get("keys"), {**eps, "port": port}
    eps = read_endpoints(find_run_dir(run_dir))
    ports = eps.get("ports", {})
    if target not in ports:
        raise UserError(f"no output port {target!r} in the running graph (ports: {', '.join(sorted(ports))})")
    return ports[target], target, eps.get("keys"), {**eps, "port": target}


def tap_curve(run: dict[str, Any], port: str) -> Curve:
    """The run's tap client pair (0600 in the run directory) for the server key of output `port`."""
    try:
        tap = json.loads(Path(run["tap"]).read_text())
        return Curve(run["server_keys"][port].encode(), None, tap["public"].encode(), tap["secret"].encode())
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"the run's tap key {run.get('tap')} is unusable ({type(e).__name__}: {e})") from None


def summarize(arr: np.ndarray) -> dict[str, Any]:
    """dtype, shape and, for non-empty numeric arrays, min/max/mean."""
    out: dict[str, Any] = {"dtype": arr.dtype.str, "shape": list(arr.shape)}
    if arr.size and arr.dtype.kind in "biuf":
        out.update(min=arr.min().item(), max=arr.max().item(), mean=round(float(arr.mean(dtype=np.float64)), 4))
    return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return f"<{len(value)} bytes>"
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def record(topic: str, msg: Message) -> dict[str, Any]:
    """The printed form of one message."""
    latency = msg.latency_ms()
    return {
        "topic": topic, "type": msg.type, "stream": msg.stream, "seq": msg.seq, "frame": msg.frame,
        "t_mono_ns": msg.t_mono_ns, "t_wall_ns": msg.t_wall_ns,
        "latency_ms": None if latency is None else round(latency, 3),
        "meta": _jsonable(msg.meta), "arrays": {k: summarize(v) for k, v in msg.arrays.items()},
    }


def text_line(rec: dict[str, Any]) -> str:
    arrays = " ".join(
        f"{k}={a['dtype']}{a['shape']}" + (f"[{a['min']}..{a['max']} mean {a['mean']}]" if "mean" in a else "")
        for k, a in rec["arrays"].items())
    lat = "" if rec["latency_ms"] is None else f" latency={rec['latency_ms']:.2f}ms"
    meta = json.dumps(rec["meta"], separators=(",", ":"))
    return f"{rec['topic']} {rec['type']} seq={rec['seq']} frame={rec['frame']}{lat} {arrays} meta={meta}"


# ------------------------------------------------------------------------------------------ command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", metavar="ENDPOINT|NODE.PORT", help="an endpoint URL or an output port")
    parser.add_argument("--run-dir", metavar="DIR", help="run directory for NODE.PORT (default: newest run)")
    parser.add_argument("--topic", help="topic prefix (default: the port's topic; all for a raw endpoint)")
    parser.add_argument("--count", type=int, metavar="N", help="exit after N messages")
    add_json_argument(parser, "one JSON object per message")
    parser.add_argument("--keys", metavar="DIR", help="CURVE keys (server.key + client pair) for a secured endpoint")
    parser.add_argument("--timeout", type=float, metavar="S", help="fail if no message arrives for S seconds")


def main(args: argparse.Namespace) -> int:
    if args.count is not None and args.count < 1:
        raise UserError(f"--count must be at least 1, got {args.count}")
    out = JsonOut(args.json)
    endpoint, topic, graph_keys, run = resolve(args.target, args.run_dir)
    topic = topic if args.topic is None else args.topic
    curve = None
    if args.keys:
        from edge.runtime.keys import load_curve

        curve = load_curve(args.keys)
    elif run is not None and run.get("tap"):  # NODE.PORT of a secured graph: the run's own tap key
        curve = tap_curve(run, run["port"])
    elif graph_keys:
        from edge.runtime.keys import load_curve

        curve = load_curve(graph_keys)
    elif not is_loopback(endpoint):
        print(f"facesleuth subscribe: {endpoint} is not loopback, so it is CURVE-secured: without --keys "
              "nothing will arrive", file=sys.stderr)
    ctx = context()
    inp = Input(ctx, endpoint, topic, latest=True, hwm=100, curve=curve)
    poller = new_poller([inp])
    shown = 0
    try:
        last = checked = time.monotonic()
        while args.count is None or shown < args.count:
            if not poll_inputs(poller, 200):
                if args.timeout is not None and time.monotonic() - last > args.timeout:
                    raise FacesleuthError(f"no message on {endpoint} for {args.timeout:g} s")
                if run is not None and time.monotonic() - checked > 1.0:  # NODE.PORT: is the graph still there?
                    from edge.runtime.supervisor import supervisor_alive

                    checked = time.monotonic()
                    if not supervisor_alive(run):
                        raise FacesleuthError(f"graph {run.get('graph')} stopped: its runner (pid "
                                              f"{run.get('pid')}) is gone")
                continue
            msgs = inp.receive_many(100)  # every queued message in order (receive() would skip to the newest)
            if msgs:
                last = time.monotonic()
            for msg in msgs[:None if args.count is None else args.count - shown]:
                rec = record(inp.last_topic, msg)
                out.line(rec)
                if out.text:
                    print(text_line(rec), flush=True)
                shown += 1
            if msgs and msgs[-1].type == "eos":
                break
    finally:
        print(f"facesleuth subscribe: {shown} shown, {inp.gaps} missed while printing, {inp.foreign} foreign",
              file=sys.stderr)
        inp.close()
        ctx.term()
        out.close()
    return 0
