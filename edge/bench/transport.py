"""`facesleuth bench transport`: what moving a 640x480x3 uint8 frame between two processes costs.

Runs, in one invocation on the same machine:

- flood: the producer (this process) sends as fast as it can for `--flood-s` seconds; the consumer (a
  second process) counts what it receives. MB/s and msgs/s are measured at the consumer, between its
  first and last message; the best of `--repeats` runs is reported, since other load on the machine
  only ever slows a run down. Through edge.runtime.transport (msgpack header + zero-copy buffers) over ipc and tcp,
  both delivery modes: lossless (acknowledged ROUTER/DEALER, backpressure) and latest-wins (XPUB/SUB, drops counted: loss_%).
- paced: one frame every 1/30 s for `--paced-s` seconds (a camera); per-message latency = receive time
  minus the monotonic timestamp in the header taken just before sending (one host, one clock), p50/p99.
- baseline: the same frames through a multiprocessing.Queue (pickle through a pipe), flood and paced.
- reference: a raw in-process memcpy of the same bytes (np.copyto), the physical ceiling, and bare
  pyzmq over ipc (one raw frame plus an 8-byte timestamp, no header, no checks) to show what the
  project's layers cost on top of ZeroMQ. This is the one place outside edge.runtime.transport that touches zmq
  for frames, and only to measure it.

The consumer takes each frame as it arrives and does nothing with it: edge.runtime.transport hands it a
read-only view on the received buffer (no copy), the Queue an unpickled copy. The producer re-sends one
unchanging array, which zero-copy sending allows as long as nobody writes to it.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import socket
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from edge.bench.report import emit
from edge.errors import UserError
from edge.runtime.messages import Message
from edge.runtime.params import bounded
from edge.runtime.transport import Input, Output, context, new_poller, poll_inputs

SHAPE = (480, 640, 3)
FRAME_BYTES = int(np.prod(SHAPE))
PACED_FPS = 30.0
TOPIC = "bench.frames"
IDLE_END_S = 1.0  # a consumer that saw traffic and then nothing for this long stops (lost end marker)
TARGET_IPC_MBS, TARGET_P99_MS, TARGET_VS_QUEUE = 2000.0, 1.0, 4.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _summary(times: list[float], lats: list[float], n_bytes: int) -> dict[str, Any]:
    """Consumer-side numbers: throughput between the first and last message, latency percentiles."""
    out: dict[str, Any] = {"n": len(times)}
    if len(times) >= 2 and times[-1] > times[0]:
        dt = times[-1] - times[0]
        out["msgs_s"] = (len(times) - 1) / dt
        out["MB_s"] = out["msgs_s"] * n_bytes / 1e6
    if lats:
        a = np.asarray(lats) * 1e3
        out["p50_ms"], out["p99_ms"] = float(np.percentile(a, 50)), float(np.percentile(a, 99))
    return out


# --------------------------------------------------------------------------- consumers (child processes)


def _edge_consumer(endpoint: str, latest: bool, conn: Any) -> None:
    ctx = context()
    inp = Input(ctx, endpoint, TOPIC, latest=latest)
    poller = new_poller([inp])
    conn.send("ready")
    times: list[float] = []
    lats: list[float] = []
    last = time.monotonic()
    while True:
        if not poll_inputs(poller, 100):
            if time.monotonic() - last > (IDLE_END_S if times else 30.0):
                break
            continue
        msg = inp.receive()
        if msg is None:
            continue
        now_ns = time.monotonic_ns()
        last = time.monotonic()
        inp.complete(msg.id)  # lossless links are acknowledged (edge.runtime.delivery), as a node does
        inp.send_acks()
        if msg.type == "eos":
            break
        times.append(now_ns / 1e9)
        lats.append((now_ns - msg.t_mono_ns) / 1e9)
    res = _summary(times, lats, FRAME_BYTES)
    res["lost"] = inp.dropped + inp.gaps
    conn.send(res)
    inp.close()
    ctx.term()


def _bare_consumer(endpoint: str, latest: bool, conn: Any) -> None:
    import zmq

    ctx = zmq.Context()
    s = ctx.socket(zmq.SUB if latest else zmq.PULL)
    s.linger = 0
    if latest:
        s.rcvhwm = 2
        s.setsockopt(zmq.SUBSCRIBE, b"")
    s.connect(endpoint)
    conn.send("ready")
    times: list[float] = []
    lats: list[float] = []
    while s.poll(int(IDLE_END_S * 1000) if times else 30_000):
        parts = s.recv_multipart(copy=False)
        now_ns = time.monotonic_ns()
        if len(parts) == 1:  # end marker
            break
        times.append(now_ns / 1e9)
        lats.append((now_ns - int.from_bytes(parts[0].bytes, "little")) / 1e9)
    conn.send(_summary(times, lats, FRAME_BYTES))
    s.close()
    ctx.term()


def _queue_consumer(q: Any, conn: Any) -> None:
    conn.send("ready")
    times: list[float] = []
    lats: list[float] = []
    while True:
        item = q.get(timeout=30)
        now_ns = time.monotonic_ns()
        if item is None:
            break
        t_sent, frame = item
        assert frame.nbytes == FRAME_BYTES
        times.append(now_ns / 1e9)
        lats.append((now_ns - t_sent) / 1e9)
    conn.send(_summary(times, lats, FRAME_BYTES))


# ------------------------------------------------------------------------------------- producers


def _schedule(paced: bool, seconds: float):  # -> Iterator[None]
    """Yield once per message to send: as fast as possible, or at PACED_FPS, for `seconds`."""
    t0 = time.monotonic()
    period = 1.0 / PACED_FPS
    i = 0
    while time.monotonic() - t0 < seconds:
        if paced:
            delay = t0 + i * period - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        yield
        i += 1


@contextlib.contextmanager
def _consumer(target: Any, *args: Any) -> Iterator[Any]:
    """Start `target(*args, conn)` in a fresh (spawned) process; yield our end of the pipe once it is
    ready; always reap it."""
    mctx = mp.get_context("spawn")
    parent, child = mctx.Pipe()
    proc = mctx.Process(target=target, args=(*args, child), daemon=True)
    proc.start()
    try:
        if not parent.poll(30):
            raise RuntimeError("consumer process did not start within 30 s")
        parent.recv()
        yield parent
    finally:
        proc.join(10)
        if proc.is_alive():
            proc.kill()
            proc.join()


def _result(conn: Any, sent: int) -> dict[str, Any]:
    res = conn.recv() if conn.poll(30) else {}
    res["sent"] = sent
    return res


def run_edge(kind: str, latest: bool, paced: bool, seconds: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="fsb-", dir="/tmp") as tmp:
        endpoint = f"ipc://{tmp}/frames.ipc" if kind == "ipc" else f"tcp://127.0.0.1:{_free_port()}"
        # Lossless: the frames go through the acknowledged link; the port's XPUB (for taps) binds beside it, unused.
        pub_ep = endpoint if latest else (f"ipc://{tmp}/pub.ipc" if kind == "ipc" else
                                          f"tcp://127.0.0.1:{_free_port()}")
        ctx = context()
        out = Output(ctx, TOPIC, pub_ep, [] if latest else [(endpoint, 8)], hwm=2)
        try:
            with _consumer(_edge_consumer, endpoint, latest) as conn:
                deadline = time.monotonic() + 10
                while latest and out.poll_subscriptions() < 1 and time.monotonic() < deadline:
                    time.sleep(0.005)
                frame = np.full(SHAPE, 7, np.uint8)
                sent = 0
                for _ in _schedule(paced, seconds):
                    out.send(Message("frame", frame=sent, t_mono_ns=time.monotonic_ns(), arrays={"image": frame}),
                             block_timeout_s=5.0)
                    sent += 1
                for _ in range(3 if latest else 1):  # a latest-wins end marker can be dropped: repeat it
                    time.sleep(0.05)
                    out.send_eos(Message("frame"), "bench done")
                return _result(conn, sent)
        finally:
            out.close(0)
            ctx.term()


def run_bare(latest: bool, paced: bool, seconds: float) -> dict[str, Any]:
    import zmq

    with tempfile.TemporaryDirectory(prefix="fsb-", dir="/tmp") as tmp:
        endpoint = f"ipc://{tmp}/bare.ipc"
        ctx = zmq.Context()
        s = ctx.socket(zmq.XPUB if latest else zmq.PUSH)
        s.linger = 0
        s.sndhwm = 2 if latest else 8
        s.bind(endpoint)
        try:
            with _consumer(_bare_consumer, endpoint, latest) as conn:
                if latest and s.poll(10_000):
                    s.recv()  # the subscription
                frame = np.full(SHAPE, 7, np.uint8)
                sent = 0
                for _ in _schedule(paced, seconds):
                    s.send_multipart([time.monotonic_ns().to_bytes(8, "little"), frame], copy=False)
                    sent += 1
                for _ in range(3 if latest else 1):
                    time.sleep(0.05)
                    if s.poll(2000, zmq.POLLOUT):
                        s.send(b"end", zmq.NOBLOCK)
                return _result(conn, sent)
        finally:
            s.close(0)
            ctx.term()


def run_queue(paced: bool, seconds: float) -> dict[str, Any]:
    q = mp.get_context("spawn").Queue(maxsize=8)  # bounded like the zmq queues: a flood must not fill memory
    with _consumer(_queue_consumer, q) as conn:
        frame = np.full(SHAPE, 7, np.uint8)
        sent = 0
        for _ in _schedule(paced, seconds):
            q.put((time.monotonic_ns(), frame))
            sent += 1
        q.put(None)
        return _result(conn, sent)


def run_memcpy(seconds: float) -> dict[str, Any]:
    src = np.full(SHAPE, 7, np.uint8)
    dst = np.empty_like(src)
    n = 0
    t0 = time.perf_counter()
    while (dt := time.perf_counter() - t0) < seconds:
        np.copyto(dst, src)
        n += 1
    return {"n": n, "msgs_s": n / dt, "MB_s": n * FRAME_BYTES / dt / 1e6}


# ------------------------------------------------------------------------------------------ command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="short run (one 1 s flood each, 3 s paced)")
    parser.add_argument("--flood-s", type=bounded(float, 0.1), default=2.0, metavar="S", help="seconds per flood run")
    parser.add_argument("--repeats", type=bounded(int, 1), default=3, metavar="N",
                        help="flood runs per row; the best is reported (other load only ever slows a run)")
    parser.add_argument("--paced-s", type=bounded(float, 0.1), default=10.0, metavar="S",
                        help="seconds per paced test (30 fps: 300 messages in 10 s)")


def _row(test: str, link: str, transport: str, r: dict[str, Any]) -> dict[str, Any]:
    sent = r.get("sent") or 0
    return {
        "test": test, "link": link, "transport": transport,
        "MB_s": r.get("MB_s"), "msgs_s": r.get("msgs_s"),
        "p50_ms": r.get("p50_ms") if test == "paced" else None,
        "p99_ms": r.get("p99_ms") if test == "paced" else None,
        "loss_%": 100.0 * (sent - r.get("n", 0)) / sent if sent else None,
        "n": r.get("n"),
    }


def main(args: argparse.Namespace) -> int:
    import sys

    flood_s, paced_s, repeats = (1.0, 3.0, 1) if args.quick else (args.flood_s, args.paced_s, args.repeats)
    if flood_s <= 0 or paced_s <= 0 or repeats < 1:
        raise UserError("--flood-s and --paced-s must be > 0 and --repeats >= 1")
    plan = [
        ("flood", "ipc", "edge lossless", lambda: run_edge("ipc", False, False, flood_s)),
        ("flood", "ipc", "edge latest-wins", lambda: run_edge("ipc", True, False, flood_s)),
        ("flood", "tcp", "edge lossless", lambda: run_edge("tcp", False, False, flood_s)),
        ("flood", "tcp", "edge latest-wins", lambda: run_edge("tcp", True, False, flood_s)),
        ("flood", "pipe", "mp.Queue (pickle)", lambda: run_queue(False, flood_s)),
        ("flood", "ipc", "bare pyzmq PUSH", lambda: run_bare(False, False, flood_s)),
        ("flood", "-", "memcpy (1 process)", lambda: run_memcpy(flood_s)),
        ("paced", "ipc", "edge latest-wins", lambda: run_edge("ipc", True, True, paced_s)),
        ("paced", "ipc", "bare pyzmq PUB", lambda: run_bare(True, True, paced_s)),
        ("paced", "tcp", "edge latest-wins", lambda: run_edge("tcp", True, True, paced_s)),
        ("paced", "pipe", "mp.Queue (pickle)", lambda: run_queue(True, paced_s)),
    ]
    rows = []
    for i, (test, link, transport, fn) in enumerate(plan, 1):
        print(f"bench transport: [{i}/{len(plan)}] {test} {link} {transport}", file=sys.stderr, flush=True)
        runs = [fn() for _ in range(repeats if test == "flood" else 1)]
        rows.append(_row(test, link, transport, max(runs, key=lambda r: r.get("MB_s") or 0.0)))

    def get(test: str, link: str, transport: str, key: str) -> float:
        r = next(r for r in rows if (r["test"], r["link"], r["transport"]) == (test, link, transport))
        return r.get(key) or float("nan")

    ipc = get("flood", "ipc", "edge lossless", "MB_s")
    queue = get("flood", "pipe", "mp.Queue (pickle)", "MB_s")
    p99 = get("paced", "ipc", "edge latest-wins", "p99_ms")
    extra = {
        "frame": f"{SHAPE[1]}x{SHAPE[0]}x{SHAPE[2]} uint8 ({FRAME_BYTES / 1e6:.2f} MB)",
        "edge ipc / mp.Queue throughput": f"{ipc / queue:.1f}x (target >= {TARGET_VS_QUEUE:g}x)",
        "edge ipc / bare pyzmq throughput": f"{ipc / get('flood', 'ipc', 'bare pyzmq PUSH', 'MB_s'):.2f}",
        "edge ipc / memcpy throughput": f"{ipc / get('flood', '-', 'memcpy (1 process)', 'MB_s'):.2f}",
        "paced p50 edge ipc / mp.Queue": f"{get('paced', 'ipc', 'edge latest-wins', 'p50_ms'):.3f} ms / "
                                        f"{get('paced', 'pipe', 'mp.Queue (pickle)', 'p50_ms'):.3f} ms",
        "targets": (f"ipc >= {TARGET_IPC_MBS:g} MB/s: {'yes' if ipc >= TARGET_IPC_MBS else 'NO'}; "
                    f"paced p99 < {TARGET_P99_MS:g} ms: {'yes' if p99 < TARGET_P99_MS else 'NO'}; "
                    f">= {TARGET_VS_QUEUE:g}x Queue: {'yes' if ipc >= TARGET_VS_QUEUE * queue else 'NO'}"),
    }
    emit("transport: 640x480x3 uint8 frames between two processes", rows, args.json, extra)
    return 0
