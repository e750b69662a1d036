"""`facesleuth bench pipeline [GRAPH]`: the whole pipeline as real processes, measured end to end.

Reports per node: messages in/out and rate, frames dropped, processing time p50/p99, CPU (% of one core)
and resident memory; for the graph: sustained frame rate at the first stage after capture, and event
latency (capture time of an interval's offset frame -> publication) p50/p99 read from the event log.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from edge.bench.report import emit
from edge.eventlog import EventLog
from edge.graph import load_graph
from edge.supervisor import Supervisor

DEFAULT_GRAPH = Path(__file__).resolve().parents[2] / "configs" / "demo.yaml"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("graph", nargs="?", default=str(DEFAULT_GRAPH), help="graph YAML (default: the demo)")
    parser.add_argument("--duration", type=float, default=40.0, help="seconds to run (default 40)")
    parser.add_argument("--set", action="append", metavar="NODE.PARAM=VALUE", help="override a param")


class _Sampler(threading.Thread):
    """CPU % and RSS of every node process, sampled twice a second."""

    def __init__(self, sup: Supervisor) -> None:
        super().__init__(daemon=True)
        self.sup, self.stop = sup, threading.Event()
        self.cpu: dict[str, list[float]] = {}
        self.rss: dict[str, list[float]] = {}

    def run(self) -> None:
        import psutil

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


def main(args: argparse.Namespace) -> int:
    overrides = list(args.set or [])
    tmp = Path(tempfile.mkdtemp(prefix="fs-bench-"))
    graph = load_graph(args.graph, overrides)
    db = None
    for n in graph.nodes.values():  # keep the benchmark's events apart from the user's log
        if n.type == "events":
            n.params["db"] = db = str(tmp / "events.db")
            n.params["print"] = False
    sup = Supervisor(graph, log_level="WARNING")
    sampler = _Sampler(sup)
    sampler.start()
    t0 = time.monotonic()
    code = sup.run(args.duration)
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
    latencies = []
    if db and Path(db).is_file():
        with EventLog(db, readonly=True) as log:
            latencies = [e["latency_ms"] for e in log.query() if "latency_ms" in e]
    capture = next((r for r in rows if r["type"] == "capture"), None)
    face = next((r for r in rows if r["type"] == "face"), None)
    extra = {
        "graph": str(graph.path), "duration_s": round(elapsed, 1), "exit_code": code,
        "capture_fps": round(capture["out"] / elapsed, 1) if capture else None,
        "face_input_fps": round(face["in"] / elapsed, 1) if face else None,
        "events": len(latencies),
        "event_latency_p50_ms": round(float(np.percentile(latencies, 50)), 1) if latencies else None,
        "event_latency_p99_ms": round(float(np.percentile(latencies, 99)), 1) if latencies else None,
    }
    emit("pipeline (real processes)", rows, args.json, extra)
    return 0 if code == 0 else 1
