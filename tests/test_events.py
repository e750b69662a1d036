"""The event sink: durable log + mer.event PUB + replay; subscribers repair gaps; foreign bytes get an error."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import msgpack
import pytest
import zmq

from edge.runtime.messages import EVENT_FIELDS, Message
from edge.runtime.transport import EventClient
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
                     "model": {"id": "m", "angles_deg": [88.0], "runtime": "torch"}, "rois": ["brow_left"]})
    node.process("events", msg)
    assert sub.poll(3000)
    topic, body = sub.recv_multipart()
    ev = msgpack.unpackb(body)  # no project code involved
    assert topic == b"mer.event"
    assert set(EVENT_FIELDS) <= set(ev), set(EVENT_FIELDS) - set(ev)
    assert ev["schema"] == 1 and ev["seq"] == 1 and ev["clock"] == "live" and ev["latency_ms"] >= 0
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
    assert node.server.bad_requests == 3
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
