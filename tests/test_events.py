"""The event sink: durable log + mer.event PUB + replay; subscribers repair gaps; foreign bytes get an error."""

from __future__ import annotations

import json
import logging
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import time

import msgpack
import pytest
import zmq
from conftest import need

from edge.errors import NodeFailed
from edge.events.log import EventLog
from edge.runtime.messages import EVENT_FIELDS, Message
from edge.runtime.transport import REPLAY_REQUEST_MAX, EventClient, EventServer
from nodes.events import EventsSink


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _event(i: int) -> Message:
    meta = {"stream": "cam0", "track_id": i % 2, "kind": "micro", "label": "surprise",
            "scores": {"negative": 0.1, "positive": 0.1, "surprise": 0.8}, "confidence": 0.8,
            "onset": {"frame": 10 * i}, "apex": {"frame": 10 * i + 3}, "offset": {"frame": 10 * i + 7}}
    return Message("event", "cam0", frame=10 * i + 7, t_mono_ns=time.monotonic_ns(), meta=meta)


@pytest.fixture
def sink(tmp_path):
    pub, rep = f"tcp://127.0.0.1:{_free_port()}", f"tcp://127.0.0.1:{_free_port()}"
    node = EventsSink.for_test("events", {"db": str(tmp_path / "ev.db"), "pub": pub, "replay": rep,
                                          "print": False, "jsonl": str(tmp_path / "ev.jsonl")})
    node.setup()
    yield node, pub, rep, tmp_path
    node.teardown()


def test_subscriber_restart_catches_up_without_gap_or_duplicate(sink):
    node, pub, rep, tmp = sink
    ctx = zmq.Context()
    try:
        first = EventClient(ctx, pub, rep, since=0)
        time.sleep(0.3)  # let the subscription reach the publisher (anything missed is replayed anyway)
        for i in range(5):
            node.process("events", _event(i))
        got = [ev["seq"] for ev, _ in zip(first.events(timeout_s=3), range(5), strict=False)]
        assert got == [1, 2, 3, 4, 5]
        first.close()  # the subscriber goes away; events keep coming
        for i in range(5, 12):
            node.process("events", _event(i))
        second = EventClient(ctx, pub, rep, since=got[-1])
        time.sleep(0.3)
        node.process("events", _event(12))
        seqs = [ev["seq"] for ev, _ in zip(second.events(timeout_s=3), range(8), strict=False)]
        assert seqs == list(range(6, 14))
        second.close()
    finally:
        ctx.term()
    lines = (tmp / "ev.jsonl").read_text().splitlines()
    assert [json.loads(s)["seq"] for s in lines] == list(range(1, 14))


def test_live_gap_is_repaired_through_replay(sink):
    node, pub, rep, _ = sink
    ctx = zmq.Context()
    client = EventClient(ctx, pub, rep, since=0)
    time.sleep(0.3)
    node.process("events", _event(0))
    it = client.events(timeout_s=3)
    assert next(it)["seq"] == 1
    # Two events are logged but never published (as if the PUB dropped them), then one is published.
    node.log_db.append(dict(_event(1).meta))
    node.log_db.append(dict(_event(2).meta))
    node.process("events", _event(3))
    assert [next(it)["seq"] for _ in range(3)] == [2, 3, 4]
    assert client.repaired == 2
    client.close()
    ctx.term()


def test_event_decodes_with_plain_msgpack_and_has_documented_fields(sink):
    node, pub, rep, _ = sink
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.linger = 0
    sub.setsockopt(zmq.SUBSCRIBE, b"mer.event")
    sub.connect(pub)
    time.sleep(0.3)
    msg = _event(0)
    msg.meta.update({"duration_s": 0.28, "intensity": 1.2, "box": [1.0, 2.0, 3.0, 4.0],
                     "model": {"id": "m", "angles_deg": [88.0], "runtime": "torch"}, "rois": ["brow_left"],
                     "context": {"talking": True, "blink_near": False, "occluded": ["chin"],
                                 "muted": ["mouth_left", "mouth_right", "chin"], "head_pose": [3.5, None, -1.0]}})
    node.process("events", msg)
    assert sub.poll(3000)
    topic, body = sub.recv_multipart()
    ev = msgpack.unpackb(body)  # no project code involved
    assert topic == b"mer.event"
    assert set(EVENT_FIELDS) <= set(ev), set(EVENT_FIELDS) - set(ev)
    assert ev["schema"] == 2 and ev["seq"] == 1 and ev["clock"] == "live" and ev["latency_ms"] >= 0
    assert ev["context"] == {"talking": True, "blink_near": False, "occluded": ["chin"],
                             "muted": ["mouth_left", "mouth_right", "chin"], "head_pose": [3.5, None, -1.0]}
    sub.close()
    ctx.term()


def test_foreign_bytes_at_replay_get_an_error_reply_not_a_crash(sink):
    node, pub, rep, _ = sink
    ctx = zmq.Context()
    s = ctx.socket(zmq.DEALER)
    s.linger = 0
    s.connect(rep)
    for junk in (b"\x00\xffgarbage", msgpack.packb([1, 2, 3]), msgpack.packb({"since": "x"})):
        s.send(junk)
        assert s.poll(3000)
        assert "error" in msgpack.unpackb(s.recv())
    node.process("events", _event(0))
    s.send(msgpack.packb({"since": 0}))
    assert s.poll(3000)
    reply = msgpack.unpackb(s.recv())
    assert [e["seq"] for e in reply["events"]] == [1] and reply["last_seq"] == 1
    assert node.server.bad_requests == 3 and node.rejected() == 3  # the node's `foreign` stat
    s.close()
    ctx.term()


def test_events_query_cli(sink):
    node, _, _, tmp = sink
    for i in range(4):
        node.process("events", _event(i))
    out = subprocess.run([sys.executable, "-m", "edge", "events", "query", str(tmp / "ev.db"), "--track", "1",
                          "--json"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert [json.loads(s)["seq"] for s in out.stdout.splitlines()] == [2, 4]
    bad = subprocess.run([sys.executable, "-m", "edge", "events", "query", str(tmp / "missing.db")],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "not found" in bad.stderr and "Traceback" not in bad.stderr


def test_replay_checks_every_field_clamps_the_limit_and_answers_req_and_dealer(tmp_path):
    log = EventLog(tmp_path / "ev.db")
    for i in range(30):
        log.append(dict(_event(i).meta))
    ctx = zmq.Context()
    pub, rep = f"tcp://127.0.0.1:{_free_port()}", f"tcp://127.0.0.1:{_free_port()}"
    server = EventServer(ctx, pub, rep, log.since, lambda: log.last_seq, max_limit=10)
    clients = {}
    try:
        for kind in (zmq.DEALER, zmq.REQ):
            c = clients[kind] = ctx.socket(kind)
            c.linger = 0
            c.connect(rep)

        def ask(kind: int, body: bytes) -> dict:
            clients[kind].send(body)
            assert clients[kind].poll(3000), f"no reply to {body[:40]!r}"
            return msgpack.unpackb(clients[kind].recv(), raw=False)

        def seqs(reply: dict) -> list[int]:
            assert "error" not in reply, reply
            return [e["seq"] for e in reply["events"]]

        for kind in (zmq.DEALER, zmq.REQ):
            assert seqs(ask(kind, msgpack.packb({"since": 0, "limit": -1}))) == [1]  # -1 is not "all"
            assert seqs(ask(kind, msgpack.packb({"since": 3, "limit": 0}))) == [4]
            assert seqs(ask(kind, msgpack.packb({"since": 0, "limit": 10**12}))) == list(range(1, 11))  # the cap
            assert seqs(ask(kind, msgpack.packb({"since": 25}))) == [26, 27, 28, 29, 30]
            assert ask(kind, msgpack.packb({}))["last_seq"] == 30
        bad = {
            "unknown key(s) 'foo'": msgpack.packb({"foo": 1}),
            "since must be >= 0": msgpack.packb({"since": -1}),
            "since must be an int, got bool": msgpack.packb({"since": True}),
            "limit must be an int, got float": msgpack.packb({"limit": 2.5}),
            f"(at most {REPLAY_REQUEST_MAX})": msgpack.packb({"since": 0, "limit": 5, "x": "y" * 5000}),
            "not msgpack": b"\xc1",
        }
        for kind in (zmq.DEALER, zmq.REQ):
            for reason, body in bad.items():
                reply = ask(kind, body)
                assert reason in reply.get("error", ""), (reason, reply)
        # A REQ client still gets answers after its bad requests: its envelope was kept every time.
        assert seqs(ask(zmq.REQ, msgpack.packb({"since": 29}))) == [30]
        assert server.bad_requests == 2 * len(bad) and server.requests == 11
    finally:
        for c in clients.values():
            c.close(0)
        server.close(0)
        ctx.term()
        log.close()


def _full_sink(tmp_path, retry_s: float) -> EventsSink:
    """An events node whose log holds a few events and has no room for another (SQLite's page limit)."""
    node = EventsSink.for_test("events", {"db": str(tmp_path / "ev.db"), "print": False, "write_retry_s": retry_s,
                                          "pub": f"ipc://{tmp_path}/pub", "replay": f"ipc://{tmp_path}/replay"})
    node.setup()
    db = node.log_db._db
    db.execute(f"PRAGMA max_page_count = {db.execute('PRAGMA page_count').fetchone()[0]}")
    with pytest.raises(sqlite3.OperationalError, match="full"):
        for i in range(1000):
            node.log_db.append(dict(_event(i).meta))
    return node


def test_a_full_log_holds_the_stream_loudly_and_loses_nothing_once_writes_work_again(short_tmp, caplog):
    node = _full_sink(short_tmp, retry_s=10)
    stored = node.log_db.last_seq

    def make_room() -> None:
        time.sleep(0.4)
        with node.log_db._lock:
            node.log_db._db.execute("PRAGMA max_page_count = 100000")

    room = threading.Thread(target=make_room)
    room.start()
    t0 = time.monotonic()
    try:
        with caplog.at_level(logging.WARNING):
            node.process("events", _event(99))  # waits for room, then stores it
    finally:
        room.join()
    assert time.monotonic() - t0 >= 0.35
    assert node.log_db.last_seq == stored + 1 and node.log_db.since(stored)[0]["onset"] == {"frame": 990}
    assert [e for port, e in node.emitted if port == "stored"][0].meta["seq"] == stored + 1
    failed = [r for r in caplog.records if "write failed" in r.getMessage()]
    assert len(failed) == 1 and "full" in failed[0].getMessage()  # one line, not one per attempt
    assert any("writes work again" in r.getMessage() for r in caplog.records)
    node.teardown()


def test_a_log_that_stays_full_fails_the_node_after_write_retry_s(short_tmp):
    node = _full_sink(short_tmp, retry_s=0.3)
    stored = node.log_db.last_seq
    t0 = time.monotonic()
    with pytest.raises(NodeFailed, match=r"writes failed for 0\.\d s .*full"):
        node.process("events", _event(99))
    assert 0.3 <= time.monotonic() - t0 < 3
    assert node.log_db.last_seq == stored and not [p for p, _ in node.emitted if p == "stored"]
    node.teardown()


def test_a_run_whose_event_log_cannot_be_written_ends_non_zero(short_tmp, write_graph, plugin_env):
    """A real graph under a file-size limit (RLIMIT_FSIZE, as a full disk: writes fail): the events node
    holds the stream, says so once, gives up after write_retry_s; the run exits 1, not 0."""
    need("prlimit", shutil.which("prlimit") is not None, "prlimit not installed (util-linux)")
    graph = write_graph(f"""
    nodes:
      - {{name: src, type: test_events, params: {{count: 200, rate: 400}}}}
      - {{name: ev, type: events, params: {{db: {short_tmp}/ev.db, print: false, write_retry_s: 0.5,
          pub: "ipc://{short_tmp}/pub", replay: "ipc://{short_tmp}/replay"}}}}
    connections: [src.events -> ev.events]
    """)
    r = subprocess.run(["prlimit", "--fsize=300000", sys.executable, "-m", "edge", "run", str(graph)],
                       capture_output=True, text=True, timeout=60, env={**plugin_env, "TMPDIR": str(short_tmp)})
    assert r.returncode == 1, r.stdout + r.stderr
    assert r.stderr.count("write failed") == 1 and "holding the stream" in r.stderr, r.stderr
    assert "ev failed for good (exit code 1): event log" in r.stdout and "writes failed for" in r.stdout
    assert "Traceback" not in r.stderr
    with EventLog(short_tmp / "ev.db", readonly=True) as log:
        seqs = [e["seq"] for e in log.query()]
    assert 0 < len(seqs) < 200 and seqs == list(range(1, len(seqs) + 1))


def test_events_tail_without_an_endpoint_follows_the_running_graphs_events_node(run_graph, tmp_path, short_tmp):
    """A graph run with `--set events.pub=...` publishes elsewhere than the default: `events tail` with no
    endpoint finds the running graph's events node (its run folder) and follows it there."""
    go = tmp_path / "go"
    pub, replay = f"ipc://{short_tmp}/moved-pub", f"ipc://{short_tmp}/moved-replay"
    g = run_graph(f"""
    name: tail-moved
    nodes:
      - {{name: src, type: test_events, params: {{count: 5, rate: 20, go_file: {go}}}}}
      - {{name: events, type: events, params: {{db: {tmp_path / 'ev.db'}, print: false}}}}
    connections: [src.events -> events.events]
    """, "--set", f"events.pub={pub}", "--set", f"events.replay={replay}")
    g.wait_for(lambda: "nodes connected: starting sources" in g.stderr(), what="the graph to start")
    tail = subprocess.Popen([sys.executable, "-m", "edge", "events", "tail", "--since", "0", "--count", "5",
                             "--timeout", "20", "--json"], env=g.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        time.sleep(0.5)
        go.touch()
        out, err = tail.communicate(timeout=40)
    finally:
        if tail.poll() is None:
            tail.kill()
    assert tail.returncode == 0, err
    assert f"following the events node of the running graph tail-moved: {pub}, replay {replay}" in err
    assert [json.loads(line)["seq"] for line in out.splitlines()] == [1, 2, 3, 4, 5]
