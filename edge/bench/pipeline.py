"""`facesleuth bench pipeline [GRAPH]`: the whole pipeline as real processes, measured end to end.

Reports per node: messages in/out and rate, frames dropped, processing time p50/p99, CPU (% of one core)
and resident memory; for the graph: sustained frame rate at the first stage after capture, and event
latency (capture time of an interval's offset frame -> publication) p50/p99 read from the event log, with
its breakdown by stage (each event's `stages_ms`). A synthetic source loops for the whole `--duration`, so
the latency percentiles rest on a few dozen events rather than one pass of the demo's script (the
scorecard, which scores one pass, is left out then); a file source plays once (the batch job).

`--streams 1,2,4` runs the graph once per count with its per-camera chain (every node upstream of the
classifier) copied that many times, all feeding the one classify node, and adds a throughput table:
frames per second per stream and in all, drops, event latency, CPU and memory of the whole graph.
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from edge.bench.report import emit
from edge.errors import UserError
from edge.events.log import EventLog
from edge.runtime.graph import Graph, load_graph
from edge.runtime.params import bounded
from edge.runtime.supervisor import Supervisor

DEFAULT_GRAPH = Path(__file__).resolve().parents[2] / "configs" / "demo.yaml"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("graph", nargs="?", default=str(DEFAULT_GRAPH), help="graph YAML (default: the demo)")
    parser.add_argument("--duration", type=bounded(float, 1.0), default=120.0,
                        help="seconds to run (default 120; a synthetic source loops until then)")
    parser.add_argument("--set", action="append", metavar="NODE.PARAM=VALUE", help="override a param")
    parser.add_argument("--streams", default="", metavar="N[,N...]",
                        help="throughput with this many camera chains sharing one classifier, e.g. 1,2,4")


PER_STREAM_TYPES = {"capture", "face", "flow", "spot", "pattern", "resize"}


def _reachable(g: Graph, start: str, forward: bool) -> set[str]:
    """Nodes reachable from `start` along the links (forward) or against them."""
    seen, todo = set(), [start]
    while todo:
        at = todo.pop()
        for lk in g.links:
            a, b = (lk.src, lk.dst) if forward else (lk.dst, lk.src)
            if a == at and b not in seen:
                seen.add(b)
                todo.append(b)
    return seen


def replicate_streams(graph: Graph, n: int) -> Graph:
    """`graph` with every node upstream of the classifier copied `n` times (names NAME_s0.., stream ids
    STREAM0..; synthetic sources get different seeds), each copy feeding the same classify node.
    Nodes that are neither per-camera nor downstream of the classifier (e.g. the demo's scorecard,
    which scores one script) are left out."""
    g = copy.deepcopy(graph)
    classify = [name for name, spec in g.nodes.items() if spec.type == "classify"]
    if len(classify) != 1:
        raise UserError(f"--streams needs a graph with one classify node ({len(classify)} in {g.path})")
    upstream = _reachable(g, classify[0], forward=False)
    downstream = _reachable(g, classify[0], forward=True) | {classify[0]}
    nodes, links = {}, []
    for i in range(n):
        for name in upstream:
            spec = copy.deepcopy(g.nodes[name])
            spec.name = f"{name}_s{i}"
            spec.endpoints = {}
            if "stream" in spec.params:
                spec.params["stream"] = f"{spec.params['stream']}{i}"
            synth = spec.params.get("synthetic")
            if isinstance(synth, dict) and "seed" in synth:
                synth["seed"] = int(synth["seed"]) + 101 * i
            nodes[spec.name] = spec
    for name in downstream:
        nodes[name] = g.nodes[name]
    for lk in g.links:
        if lk.src in upstream:
            for i in range(n):
                c = copy.copy(lk)
                c.src = f"{lk.src}_s{i}"
                c.dst = f"{lk.dst}_s{i}" if lk.dst in upstream else lk.dst
                links.append(c)
        elif lk.src in downstream and lk.dst in downstream:
            links.append(lk)
    g.nodes, g.links = nodes, links
    return g


class _Sampler(threading.Thread):
    """CPU % and RSS of every node process, sampled twice a second."""

    def __init__(self, sup: Supervisor) -> None:
        super().__init__(daemon=True)
        self.sup, self.stop = sup, threading.Event()
        self.cpu: dict[str, list[float]] = {}
        self.rss: dict[str, list[float]] = {}

    def run(self) -> None:
        procs: dict[int, Any] = {}
        while not self.stop.wait(0.5):
            for c in list(self.sup.children.values()):
                if c.proc is None:
                    continue
                pid = c.proc.pid
                try:
                    p = procs.get(pid) or procs.setdefault(pid, psutil.Process(pid))
                    cpu = p.cpu_percent(None)
                    if cpu or c.name in self.cpu:
                        self.cpu.setdefault(c.name, []).append(cpu)
                    self.rss.setdefault(c.name, []).append(p.memory_info().rss / 2**20)
                except psutil.Error:
                    continue


def loop_synthetic(graph: Graph) -> Graph:
    """`graph` with its synthetic sources looping and its scorecards (one pass of a script) left out."""
    g = copy.deepcopy(graph)
    looped = [s for s in g.nodes.values() if s.type == "capture" and s.params.get("kind") == "synthetic"]
    for spec in looped:
        spec.params["loop"] = True
    if looped:
        cards = {name for name, spec in g.nodes.items() if spec.type == "scorecard"}
        g.nodes = {name: spec for name, spec in g.nodes.items() if name not in cards}
        g.links = [lk for lk in g.links if lk.src not in cards and lk.dst not in cards]
    return g


def main(args: argparse.Namespace) -> int:
    graph = loop_synthetic(load_graph(args.graph, list(args.set or [])))
    if not args.streams:
        return 0 if run_once(graph, args.duration, args.json)["exit_code"] == 0 else 1
    try:
        counts = [int(x) for x in args.streams.split(",") if x.strip()]
    except ValueError:
        raise UserError(f"--streams {args.streams!r}: expected counts such as 1,2,4") from None
    if not counts or min(counts) < 1:
        raise UserError("--streams: counts must be 1 or more")
    table, runs, code = [], [], 0
    for n in counts:
        res = run_once(replicate_streams(graph, n), args.duration, None, title=f"pipeline, {n} stream(s)")
        runs.append(res)
        code |= res["exit_code"]
        rows = res["rows"]
        caps = [r for r in rows if r["type"] in ("capture", "pattern")]
        faces = [r for r in rows if r["type"] == "face"]
        per = [f["out"] / res["duration_s"] for f in faces] or [0.0]  # frames each face node processed
        table.append({
            "streams": n, "fps_per_stream_min": min(per), "fps_per_stream_mean": float(np.mean(per)),
            "fps_total": float(sum(per)), "capture_fps": sum(c["out"] for c in caps) / res["duration_s"],
            "dropped": sum(r["dropped"] for r in rows), "events": res["events"],
            "latency_p50_ms": res["event_latency_p50_ms"], "latency_p99_ms": res["event_latency_p99_ms"],
            "cpu_%": float(sum(r["cpu_%"] for r in rows)), "rss_MB": float(sum(r["rss_MB"] for r in rows)),
        })
    emit("pipeline throughput by number of streams (one shared classifier)", table, args.json,
         {"graph": str(graph.path), "duration_s_each": args.duration}, json_extra={"runs": runs})
    return 0 if code == 0 else 1


def run_once(graph: Graph, duration: float, as_json: bool, title: str = "pipeline (real processes)"
             ) -> dict[str, Any]:
    """Run `graph` for `duration` s, print the per-node table; returns the rows and the summary."""
    tmp = Path(tempfile.mkdtemp(prefix="fs-bench-"))
    db = None
    for n in graph.nodes.values():  # keep the benchmark's events apart from the user's log
        if n.type == "events":
            n.params["db"] = db = str(tmp / "events.db")
            n.params["print"] = False
    sup = Supervisor(graph, log_level="WARNING")
    sampler = _Sampler(sup)
    sampler.start()
    t0 = time.monotonic()
    code = sup.run(duration)
    elapsed = time.monotonic() - t0
    sampler.stop.set()
    rows = []
    for name, c in sup.children.items():
        s = c.stats
        cpu = sampler.cpu.get(name, [])
        rows.append({
            "node": name, "type": graph.nodes[name].type, "in": s.get("in", 0), "out": s.get("out", 0),
            "fps": s.get("fps", 0.0), "dropped": s.get("dropped_in", 0) + s.get("dropped_out", 0),
            "p50_ms": s.get("p50_ms", 0.0), "p99_ms": s.get("p99_ms", 0.0),
            "cpu_%": float(np.mean(cpu[1:] or cpu or [0.0])), "rss_MB": float(max(sampler.rss.get(name, [0.0]))),
        })
    events = []
    if db and Path(db).is_file():
        with EventLog(db, readonly=True) as log:
            events = list(log.query())
    # A file read unpaced runs on the media clock: its events carry no latency (latency_ms null).
    latencies = [e["latency_ms"] for e in events if e.get("latency_ms") is not None]
    capture = next((r for r in rows if r["type"] == "capture"), None)
    face = next((r for r in rows if r["type"] == "face"), None)
    extra = {
        "graph": str(graph.path), "duration_s": round(elapsed, 1), "exit_code": code,
        "capture_fps": round(capture["out"] / elapsed, 1) if capture else None,
        "face_input_fps": round(face["in"] / elapsed, 1) if face else None,
        "events": len(events),
        "event_latency_p50_ms": round(float(np.percentile(latencies, 50)), 1) if latencies else None,
        "event_latency_p99_ms": round(float(np.percentile(latencies, 99)), 1) if latencies else None,
        "event_latency_by_stage_ms": _stage_percentiles(events),
    }
    emit(title, rows, as_json, extra)
    return {"rows": rows, **extra}


def _stage_percentiles(events: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """p50/p99 (ms) of each stage of the events' latency (`stages_ms`)."""
    stages: dict[str, list[float]] = {}
    for e in events:
        for k, v in (e.get("stages_ms") or {}).items():
            stages.setdefault(k, []).append(float(v))
    return {k: {"p50": round(float(np.percentile(v, 50)), 1), "p99": round(float(np.percentile(v, 99)), 1)}
            for k, v in stages.items()}
