"""`facesleuth run GRAPH`: one OS process per node, wired, supervised, restarted, stopped.

- Wiring: every output port binds an XPUB (latest-wins links, taps such as `facesleuth subscribe`) and one
  ROUTER per lossless link (acknowledged delivery, edge.runtime.delivery); inputs connect. Endpoints are ipc files in a private run directory (or
  loopback tcp); `RUN_DIR/endpoints.json` lists them, and `/tmp/facesleuth-UID/latest` points at the
  newest run directory so `facesleuth stats` and `facesleuth subscribe NODE.PORT` find a running graph.
- Security: a graph with any tcp port (or `keys:`) gets CURVE key pairs made per run for every node; each
  spec holds only its node's secrets, and each node's ZAP handler lets in only the graph's own client
  keys and the run's tap key (RUN_DIR/tap.json, for `subscribe`); docs/security.md.
- Control: the protocol with each node and the stats record are in edge.runtime.control.
- Readiness: a node reports `ready` once all its expected subscribers are attached; sources get `start`
  only when every node is ready, so nothing is lost to slow joiners.
- Restart: per node, `never` or `on-failure` (max_restarts, backoff_s). Waiting for a restart never blocks
  shutdown: it is a deadline checked by the main loop. A node restarted after a producer of its has
  ended is told so when it is ready (upstream_eos), so it drains and ends instead of waiting forever; one
  restarted after its consumers ended is told to stop (nobody is left to acknowledge its drain).
- Stop (SIGINT/SIGTERM, --duration, or every stream ended): `stop` on the control channel and SIGINT,
  then SIGTERM after 2 s, SIGKILL after 3.5 s: done within 5 s. Each exit is logged with node, pid, code.
  The run directory (ipc files) is removed. Nodes also die with the runner (PR_SET_PDEATHSIG).
- Leftovers: node specs (which may hold CURVE secrets) are written 0600 in the 0700 run directory. A
  runner killed with SIGKILL cannot clean up: its run directory names its pid and start time
  (endpoints.json), and the next run removes the directories of runners that are gone (and `latest`
  if it points at one); `stats` and `subscribe` refuse them with one line.
- Bad input: a node whose setup failed with a UserError (missing or corrupt video, model or event log;
  a pinned endpoint in use) exits 2, one whose setup found a device missing (no camera) exits 4
  (NODE_EXIT_UNAVAILABLE). Neither is restarted: the same setup would fail the same way.
- Exit code: 0 when every node ended cleanly, 2 when a node failed on bad input, 1 when a node failed
  for good otherwise, 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import zmq

from edge.errors import EXIT_BAD_INPUT, UserError
from edge.live import DEFAULT_PORT
from edge.runtime.control import (
    CONTROL_ID_ENV,
    MAX_CONTROL_BYTES,
    NODE_EXIT_UNAVAILABLE,
    RESTARTS_ENV,
    STATS_TOPIC,
    ControlError,
    NodeRecord,
    NodeStats,
    Op,
    encode,
    parse,
)
from edge.runtime.graph import Graph, load_graph
from edge.runtime.keys import node_curve, run_keys
from edge.runtime.preflight import check_endpoints_free
from edge.runtime.transport import ipc_endpoint
from edge.table import format_table

log = logging.getLogger("supervisor")

STOP_SIGINT_S = 2.0
STOP_SIGTERM_S = 1.5
ORPHAN_GRACE_S = 2.0  # a first process whose consumers all ended waits this long for their last acks


def runs_root() -> Path:
    return Path(tempfile.gettempdir()) / f"facesleuth-{os.getuid()}"


def _start_time(pid: int) -> str | None:
    """The start time of process `pid` (clock ticks since boot; Linux), to tell a reused pid apart."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def supervisor_alive(info: dict[str, Any]) -> bool:
    """Whether the runner that wrote the endpoints.json map `info` still runs (same pid, same start time)."""
    pid = info.get("pid")
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # someone else's process has the pid now; the start time decides
    started = info.get("started")
    return started is None or _start_time(pid) in (None, started)


def clean_stale_runs(root: Path) -> list[Path]:
    """Remove the run directories under `root` whose runner is gone, and a `latest` link that points at
    no run; returns the directories removed."""
    removed = []
    try:
        entries = list(root.iterdir())
    except OSError:
        return removed
    for d in entries:
        if d.is_symlink() or not d.is_dir():
            continue
        try:
            info = json.loads((d / "endpoints.json").read_text())
        except (OSError, ValueError):
            continue  # a runner between mkdtemp and its first write, or not ours: left alone
        if isinstance(info, dict) and not supervisor_alive(info):
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d)
            log.info("removed the run directory of a runner that is gone: %s (graph %s, pid %s)",
                     d, info.get("graph"), info.get("pid"))
    latest = root / "latest"
    if latest.is_symlink() and not latest.exists():
        latest.unlink(missing_ok=True)
    return removed


def _write_private(path: Path, text: str) -> None:
    """Write `text` to `path`, readable by this user only (0600 from the start: no window at 0644)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def _free_tcp_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@dataclass
class Child:
    name: str
    spec_path: Path
    restart_policy: str
    max_restarts: int
    backoff_s: float
    is_source: bool
    proc: subprocess.Popen | None = None
    ident: bytes = b""  # the control identity of the live process (NAME/TOKEN, new per spawn)
    restarts: int = 0
    restart_at: float | None = None
    ready: bool = False
    heard: bool = False  # this process has sent a valid control message (it is past Python's start-up)
    ended: bool = False  # reported end of stream
    failed: bool = False  # failed for good
    bad_input: bool = False  # its setup refused its input (exit 2): never restarted
    released: bool = False  # told to stop because nobody is left to consume what it drains
    orphan_since: float | None = None  # monotonic time since when every consumer has ended for good
    reason: str = ""  # its last `failed` report
    exit_codes: list[int] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)  # its last report (a NodeStats wire map)


class Supervisor:
    def __init__(self, graph: Graph, log_level: str = "INFO", run_dir: Path | None = None) -> None:
        self.graph = graph
        self.log_level = log_level
        root = runs_root()
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        clean_stale_runs(root)
        self.run_dir = Path(run_dir) if run_dir else Path(tempfile.mkdtemp(prefix=f"{graph.name[:16]}-", dir=root))
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.ctx = zmq.Context()
        self.control_ep = ipc_endpoint(self.run_dir, "control")
        self.stats_ep = ipc_endpoint(self.run_dir, "stats")
        self.control = self.ctx.socket(zmq.ROUTER)
        self.control.linger = 0
        self.control.setsockopt(zmq.MAXMSGSIZE, MAX_CONTROL_BYTES)
        self.control.bind(self.control_ep)
        self.control_dropped = 0  # malformed or unattributable control messages, counted and dropped
        self.stats_pub = self.ctx.socket(zmq.PUB)
        self.stats_pub.linger = 0
        self.stats_pub.bind(self.stats_ep)
        self.children: dict[str, Child] = {}
        self.endpoints: dict[str, str] = {}
        self.stop_reason = ""
        self.started_sources = False
        self._write_specs()

    # -- wiring -----------------------------------------------------------------------------------------
    def _endpoint(self, name: str, pinned: str | None = None) -> str:
        if pinned:
            return pinned
        if self.graph.endpoints == "tcp":
            return f"tcp://{self.graph.bind}:{_free_tcp_port(self.graph.bind)}"
        return ipc_endpoint(self.run_dir, name)

    def _write_specs(self) -> None:
        g = self.graph
        outputs: dict[str, dict[str, dict[str, Any]]] = {n: {} for n in g.nodes}
        for n in g.nodes.values():
            for port in n.cls.outputs:
                ep = self._endpoint(f"{n.name}.{port}", n.endpoints.get(port))
                outputs[n.name][port] = {"topic": f"{n.name}.{port}", "pub": ep, "push": []}
                self.endpoints[f"{n.name}.{port}"] = ep
        # A tcp port (`endpoints: tcp`, or one pinned) is reachable by every user of the host, unlike the ipc
        # files of this 0700 run directory; with any, or with a key directory, every link is CURVE with
        # per-run keys and each server lets in only the graph's own client keys (edge.runtime.keys, .zap).
        secured = run_keys(list(g.nodes), g.keys) \
            if g.endpoints == "tcp" or g.keys or any(not ep.startswith("ipc://") for ep in self.endpoints.values()) \
            else None
        if secured:
            log.info("links are CURVE-secured with keys made for this run: only this graph's processes%s may "
                     "connect (docs/security.md)", f" and the clients of {g.keys}" if g.keys else "")
        inputs: dict[str, dict[str, list]] = {n: {p: [] for p in g.nodes[n].cls.inputs} for n in g.nodes}
        expected: dict[str, dict[str, int]] = {n: {} for n in g.nodes}
        for i, lk in enumerate(g.links):
            out = outputs[lk.src][lk.src_port]
            server_key = secured["nodes"][lk.src]["server"]["public"] if secured else None
            if lk.delivery == "latest":
                inputs[lk.dst][lk.dst_port].append({"endpoint": out["pub"], "topic": out["topic"], "latest": True,
                                                    "src": lk.src, "server_key": server_key})
                expected[lk.src][lk.src_port] = expected[lk.src].get(lk.src_port, 0) + 1
            else:
                ep = self._endpoint(f"{lk.src}.{lk.src_port}.{i}")
                peer = f"{lk.dst}.{lk.dst_port}/{i}"  # the consumer's routing id: the same after a restart
                out["push"].append([ep, lk.queue, peer])
                inputs[lk.dst][lk.dst_port].append({"endpoint": ep, "topic": out["topic"], "latest": False,
                                                    "src": lk.src, "queue": lk.queue, "peer": peer,
                                                    "server_key": server_key})
        for n in g.nodes.values():
            spec = {
                "name": n.name, "type": n.type, "params": n.params, "control": self.control_ep,
                "graph": g.name, "stats": self.stats_ep,
                "outputs": outputs[n.name], "inputs": inputs[n.name], "expected_subs": expected[n.name],
                "max_msg_bytes": g.max_msg_bytes, "log_level": self.log_level,
                "curve": node_curve(secured, n.name) if secured else None,
                "allowed_clients": secured["allowed"] if secured else None,
                "allowed_dir": str(g.keys) if secured and g.keys else None,  # + its client.key, allowed/*.key
                "checkpoint": str(self.run_dir / f"{n.name}.state"),  # Node.checkpoint_every: kept across restarts
            }
            path = self.run_dir / f"{n.name}.json"
            _write_private(path, json.dumps(spec, indent=1, default=str))
            self.children[n.name] = Child(n.name, path, n.restart.policy, n.restart.max_restarts,
                                          n.restart.backoff_s, n.cls.is_source())
        tap = None
        if secured:  # the client pair of `facesleuth subscribe NODE.PORT` on this run: this user only
            tap = self.run_dir / "tap.json"
            _write_private(tap, json.dumps(secured["tap"]))
        (self.run_dir / "endpoints.json").write_text(json.dumps(
            {"graph": g.name, "pid": os.getpid(), "started": _start_time(os.getpid()),
             "control": self.control_ep, "stats": self.stats_ep,
             "ports": self.endpoints, "keys": str(g.keys) if g.keys else None,
             "server_keys": {f"{n}.{p}": secured["nodes"][n]["server"]["public"]
                             for n in g.nodes for p in g.nodes[n].cls.outputs} if secured else None,
             "tap": str(tap) if tap else None}, indent=1))
        latest = runs_root() / "latest"
        try:
            if latest.is_symlink() or latest.exists():
                latest.unlink()
            latest.symlink_to(self.run_dir)
        except OSError:
            pass

    # -- processes ----------------------------------------------------------------------------------------
    def _spawn(self, c: Child) -> None:
        c.ident = f"{c.name}/{secrets.token_hex(8)}".encode()
        env = {**os.environ, CONTROL_ID_ENV: c.ident.decode(), RESTARTS_ENV: str(c.restarts)}
        c.proc = subprocess.Popen([sys.executable, "-m", "edge.runtime.noderun", str(c.spec_path)],
                                  start_new_session=True, env=env)
        c.ready = c.heard = c.released = False
        c.orphan_since = None
        c.reason = ""
        c.restart_at = None
        log.info("started %s (pid %d)", c.name, c.proc.pid)

    def _send(self, name: str, op: Op, **kw: Any) -> None:
        c = self.children.get(name)
        if c is None or not c.ident:
            return
        try:
            self.control.send_multipart([c.ident, encode(op, **kw)], zmq.NOBLOCK)
        except zmq.ZMQError:
            pass

    def _handle_control(self) -> None:
        while self.control.poll(0):
            parts = self.control.recv_multipart()
            try:
                self._on_control(parts)
            except ControlError as e:
                self._drop_control(parts[0], str(e))
            except Exception as e:  # never fatal: a bug here must not end the graph either
                self._drop_control(parts[0], f"{type(e).__name__}: {e}")

    def _drop_control(self, ident: bytes, reason: str) -> None:
        self.control_dropped += 1
        if self.control_dropped <= 10 or self.control_dropped % 100 == 0:
            log.warning("control: dropped a message from %r: %s (%d dropped so far)", ident[:64], reason,
                        self.control_dropped)

    def _on_control(self, parts: list[bytes]) -> None:
        ident = parts[0]
        # The newest process of a node keeps its identity after it exits (its last stats come late).
        c = next((c for c in self.children.values() if c.ident == ident), None)
        if c is None:
            raise ControlError("unknown sender (not a node process of this run)")
        if len(parts) != 2:
            raise ControlError(f"{len(parts) - 1} frames, expected 1")
        op, msg = parse(parts[1])
        c.heard = True
        if op is Op.READY:
            c.ready = True
            if c.is_source and self.started_sources:
                self._send(c.name, Op.START)  # a restarted source
            for src in sorted({lk.src for lk in self.graph.links if lk.dst == c.name}):
                if self.children[src].ended:  # a restarted consumer: its producer ended before it came
                    self._send(c.name, Op.UPSTREAM_EOS, node=src)
        elif op in (Op.STATS, Op.EOS):
            c.stats.update(msg.get("stats") or {})
            if op is Op.EOS and not c.ended:
                c.ended = True
                log.info("%s: end of stream", c.name)
                self._relay_eos(c.name)
        elif op is Op.FAILED:
            c.reason = msg["reason"]
            log.debug("%s: %s", c.name, c.reason)  # the node has logged it
        else:
            raise ControlError(f"{op.value} is not a node -> supervisor op")

    def _relay_eos(self, name: str) -> None:
        """Tell every consumer of `name` that it has ended: an in-band eos on a latest-wins link can be
        dropped by a full queue, this notice cannot."""
        for dst in sorted({lk.dst for lk in self.graph.links if lk.src == name}):
            self._send(dst, Op.UPSTREAM_EOS, node=name)

    def _reap(self) -> None:
        now = time.monotonic()
        for c in self.children.values():
            if c.proc is None:
                if c.restart_at is not None and now >= c.restart_at and not self.stop_reason:
                    self._spawn(c)
                continue
            code = c.proc.poll()
            if code is None:
                continue
            c.exit_codes.append(code)
            log.log(logging.INFO if code == 0 else logging.WARNING, "%s (pid %d) exited with code %d",
                    c.name, c.proc.pid, code)
            c.proc = None
            if code == 0:
                if not c.ended:
                    c.ended = True
                    self._relay_eos(c.name)
            elif self.stop_reason:
                pass  # stopping: an exit forced by the shutdown is no failure
            elif code in (EXIT_BAD_INPUT, NODE_EXIT_UNAVAILABLE):  # setup refused: a restart fails the same way
                c.failed, c.bad_input = True, code == EXIT_BAD_INPUT
                self.stop_reason = f"{c.name}: {c.reason or 'setup failed'} (exit code {code}, not retried)"
            elif c.restart_policy == "on-failure" and c.restarts < c.max_restarts:
                c.restarts += 1
                delay = c.backoff_s * (2 ** (c.restarts - 1))
                c.restart_at = now + delay
                log.warning("%s: restart %d/%d in %.1f s", c.name, c.restarts, c.max_restarts, delay)
            else:
                c.failed = True
                self.stop_reason = self.stop_reason or f"{c.name} failed for good (exit code {code})" + (
                    f": {c.reason}" if c.reason else "")

    def _release_orphans(self) -> None:
        """Stop a node (one that has ended, or a restarted process) while every consumer of its has ended
        and exited for good: its end-of-stream drain would wait forever for acknowledgements nobody is left
        to send. That happens to a node killed after its end of stream (reported, or only sent in-band) and
        restarted after its consumers finished. It is safe: a consumer ends only after the node's end of
        stream, in-band or relayed, so it has handled everything the node sent; the node's stream is over
        (ended), even if this process never reported it. A first process that has not reported its end gets
        ORPHAN_GRACE_S first: its consumers' last acknowledgements are usually on their way (the capture
        node of bench faults seed 59 waited for those of a face process killed before it sent them)."""
        now = time.monotonic()
        for c in self.children.values():
            if c.proc is None or not c.ready or c.released:
                continue
            consumers = [self.children[d] for d in sorted({lk.dst for lk in self.graph.links if lk.src == c.name})]
            if not (consumers and all(d.ended and d.proc is None and d.restart_at is None for d in consumers)):
                c.orphan_since = None
                continue
            c.orphan_since = c.orphan_since or now
            if c.ended or c.restarts or now - c.orphan_since >= ORPHAN_GRACE_S:
                c.released = c.ended = True
                log.info("%s: every consumer has ended; stopping it", c.name)
                self._send(c.name, Op.STOP)

    def _publish_stats(self) -> None:
        nodes = {}
        for c in self.children.values():
            state = ("failed" if c.failed else "ended" if c.ended and c.proc is None else
                     "running" if c.proc else "restarting" if c.restart_at else "stopped")
            nodes[c.name] = NodeRecord.wire_map(c.stats, restarts=c.restarts, state=state,
                                                pid=c.proc.pid if c.proc else None)
        self.stats_pub.send_multipart([STATS_TOPIC, msgpack.packb(
            {"graph": self.graph.name, "t_wall_ns": time.time_ns(), "nodes": nodes,
             "control_dropped": self.control_dropped}, use_bin_type=True)])

    def run(self, duration: float | None = None) -> int:
        interrupted = False

        def on_signal(signum: int, frame: object) -> None:
            nonlocal interrupted
            interrupted = signum == signal.SIGINT
            self.stop_reason = self.stop_reason or signal.Signals(signum).name

        old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        t0 = time.monotonic()
        last_stats = 0.0
        try:
            for c in self.children.values():
                self._spawn(c)
            while not self.stop_reason:
                if self.control.poll(50):
                    self._handle_control()
                self._reap()
                self._release_orphans()
                if not self.started_sources and all(c.ready for c in self.children.values()):
                    self.started_sources = True
                    log.info("all %d nodes connected: starting sources", len(self.children))
                    for c in self.children.values():
                        if c.is_source:
                            self._send(c.name, Op.START)
                if all(c.ended and c.proc is None for c in self.children.values()):
                    self.stop_reason = "every stream ended"
                if duration is not None and time.monotonic() - t0 >= duration:
                    self.stop_reason = f"duration {duration:g} s reached"
                if time.monotonic() - last_stats >= 1.0:
                    last_stats = time.monotonic()
                    self._publish_stats()
            log.info("stopping: %s", self.stop_reason)
            self.stop()
        finally:
            for s, h in old.items():
                signal.signal(s, h)
            self.close()
        print(self.summary(), flush=True)
        if any(c.bad_input for c in self.children.values()):
            return EXIT_BAD_INPUT
        if any(c.failed for c in self.children.values()):
            return 1
        return 130 if interrupted else 0

    def stop(self) -> None:
        """stop + SIGINT, then SIGTERM, then SIGKILL: every child is gone within ~5 s."""
        live = [c for c in self.children.values() if c.proc is not None]
        for c in live:
            self._send(c.name, Op.STOP)
            # A process not heard from may still be in Python's start-up, where SIGINT prints a
            # KeyboardInterrupt traceback; SIGTERM ends it quietly there, and later means the same as SIGINT.
            _signal(c.proc, signal.SIGINT if c.heard else signal.SIGTERM)
        for sig, wait_s in ((signal.SIGTERM, STOP_SIGINT_S), (signal.SIGKILL, STOP_SIGTERM_S)):
            deadline = time.monotonic() + wait_s
            while time.monotonic() < deadline and any(c.proc.poll() is None for c in live):
                if self.control.poll(20):
                    self._handle_control()
            for c in live:
                if c.proc.poll() is None:
                    log.warning("%s (pid %d) did not stop: %s", c.name, c.proc.pid, sig.name)
                    _signal(c.proc, sig)
        for c in live:
            c.proc.wait()
        self._handle_control()  # final stats
        self._reap()

    def close(self) -> None:
        self.control.close(0)
        self.stats_pub.close(0)
        self.ctx.term()
        shutil.rmtree(self.run_dir, ignore_errors=True)
        latest = runs_root() / "latest"
        try:
            if latest.is_symlink() and Path(os.readlink(latest)) == self.run_dir:
                latest.unlink()
        except OSError:
            pass

    def summary(self) -> str:
        rows = []
        for c in self.children.values():
            s = NodeStats.from_dict(c.stats)
            rows.append({
                "node": c.name, "state": "FAILED" if c.failed else "ok",
                "exit": ",".join(map(str, c.exit_codes)) or "-", "restarts": c.restarts,
                "in": s.messages_in, "out": s.messages_out, "fps": s.fps, "p50_ms": s.p50_ms, "p99_ms": s.p99_ms,
                "dropped": s.dropped_in + s.dropped_out, "foreign": s.foreign, "errors": s.errors,
            })
        dropped = f"\ncontrol messages dropped: {self.control_dropped}" if self.control_dropped else ""
        return f"graph {self.graph.name}: {self.stop_reason}\n" + format_table(rows) + dropped


def _signal(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)  # the node and anything it started
    except (ProcessLookupError, PermissionError):
        pass


# ------------------------------------------------------------------------------------------- command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("graph", help="graph YAML file")
    parser.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")
    parser.add_argument("--set", action="append", metavar="NODE.PARAM=VALUE",
                        help="override a node param (repeatable; last wins)")
    parser.add_argument("--view", nargs="?", const=DEFAULT_PORT, type=int, metavar="PORT",
                        help=f"also serve the live view on http://127.0.0.1:PORT/ (default port {DEFAULT_PORT}; "
                             "0: any free port; docs/live-view.md)")


def main(args: argparse.Namespace) -> int:
    if args.view is not None and not 0 <= args.view <= 65535:
        raise UserError(f"--view: port {args.view} is not 0..65535")
    graph = load_graph(args.graph, args.set)
    if args.view is not None:
        from edge.live.wiring import add_view

        add_view(graph, args.view)
    check_endpoints_free(graph)  # a second graph on the same ports: one line now, not after every node started
    sup = Supervisor(graph, log_level="DEBUG" if args.verbose else "INFO")
    return sup.run(args.duration)
