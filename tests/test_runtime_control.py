"""The control protocol and the stats record (edge.runtime.control): the wire maps are what running graphs, the
`facesleuth stats` table and the MQTT heartbeat read; malformed control messages on a running graph's real
control socket are counted and dropped."""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import msgpack
import pytest
import zmq

from edge.runtime.control import (
    CONTROL_ID_ENV,
    MAX_CONTROL_BYTES,
    ControlError,
    NodeRecord,
    NodeStats,
    Op,
    counters,
    decode,
    encode,
    parse,
)


def test_a_control_message_is_one_msgpack_map_with_its_op():
    payload = encode(Op.UPSTREAM_EOS, node="face")
    assert msgpack.unpackb(payload, raw=False) == {"op": "upstream_eos", "node": "face"}
    assert decode(payload) == (Op.UPSTREAM_EOS, {"op": "upstream_eos", "node": "face"})
    assert [op.value for op in Op] == ["ready", "stats", "eos", "failed", "start", "stop", "upstream_eos"]


def test_anything_else_on_the_control_channel_decodes_to_none():
    assert decode(msgpack.packb({"op": "reboot"})) is None
    assert decode(msgpack.packb({"no": "op"})) is None
    assert decode(msgpack.packb([1, 2])) is None
    assert decode(b"\xc1 not msgpack") is None


def test_node_stats_wire_keys_and_round_trip():
    s = NodeStats(node="flow", type="flow", messages_in=10, messages_out=9, fps=29.5, p50_ms=3.0, p99_ms=8.0,
                  dropped_in=1, dropped_out=2, foreign=0, errors=1)
    d = s.to_dict()
    assert list(d) == ["node", "type", "in", "out", "fps", "p50_ms", "p99_ms", "dropped_in", "dropped_out",
                       "foreign", "errors", "outbox", "resent", "duplicates"]
    assert d["in"] == 10 and d["out"] == 9
    assert NodeStats.from_dict(d) == s
    assert NodeStats.from_dict({"in": 3, "new_key": 1}) == NodeStats(messages_in=3)  # missing: defaults


def test_snapshot_record_holds_only_the_supervisors_fields_before_the_first_report():
    assert NodeRecord.wire_map({}, restarts=0, state="running", pid=42) == \
        {"restarts": 0, "state": "running", "pid": 42}
    rec = NodeRecord.wire_map(NodeStats(node="spot", messages_in=5).to_dict(), restarts=1, state="running", pid=7)
    assert rec["node"] == "spot" and rec["in"] == 5 and (rec["restarts"], rec["state"], rec["pid"]) == (1, "running", 7)
    r = NodeRecord.from_dict(rec)
    assert (r.messages_in, r.restarts, r.pid) == (5, 1, 7)


def test_heartbeat_counters_are_the_keys_a_record_holds_of_the_counter_fields():
    rec = NodeRecord.wire_map(NodeStats(node="spot", messages_in=5).to_dict(), restarts=1, state="running", pid=7)
    assert counters(rec) == {"in": 5, "out": 0, "fps": 0.0, "dropped_in": 0, "dropped_out": 0, "errors": 0,
                             "restarts": 1, "state": "running"}
    assert counters({"state": "restarting", "restarts": 2, "pid": None}) == {"state": "restarting", "restarts": 2}


def test_every_field_of_a_control_message_is_checked():
    stats = NodeStats(node="mid", messages_in=3).to_dict()
    assert parse(encode(Op.STATS, stats=stats)) == (Op.STATS, {"op": "stats", "stats": stats})
    assert parse(encode(Op.STATS, stats={"fps": 3})) == (Op.STATS, {"op": "stats", "stats": {"fps": 3}})
    bad = {
        "stats must be a dict": {"op": "stats", "stats": "xx"},
        "in must be an int": {"op": "eos", "stats": {"in": "x"}},
        "errors must be an int": {"op": "stats", "stats": {"errors": True}},
        "unknown key 'bogus'": {"op": "stats", "stats": {"bogus": 1}},
        "not a finite number >= 0": {"op": "stats", "stats": {"out": -1}},
        "reason must be a str": {"op": "failed", "reason": 5},
        "unknown field(s) extra": {"op": "ready", "extra": 1},
        "node must be a str": {"op": "upstream_eos"},
        "unknown op 'reboot'": {"op": "reboot"},
        "a list, not a map": [1, 2],
    }
    for reason, msg in bad.items():
        with pytest.raises(ControlError, match=re.escape(reason)):
            parse(msgpack.packb(msg))
        assert decode(msgpack.packb(msg)) is None
    with pytest.raises(ControlError, match="bytes"):
        parse(msgpack.packb({"op": "failed", "reason": "x" * MAX_CONTROL_BYTES}))


def _control_token(pid: int) -> bytes:
    env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return next(e.split(b"=", 1)[1] for e in env if e.startswith(CONTROL_ID_ENV.encode() + b"="))


def test_malformed_control_messages_are_counted_and_dropped_never_fatal(run_graph, tmp_path):
    """Strangers and a client with the identity of a node being restarted send everything wrong on the
    run's real control socket; the graph goes on, restarts the node and stops cleanly."""
    out = tmp_path / "rec.jsonl"
    g = run_graph(f"""
    nodes:
      - {{name: src, type: test_arrays, params: {{count: 0, fps: 50, height: 8, width: 8}}}}
      - name: mid
        type: test_relay
        restart: {{policy: on-failure, max_restarts: 2, backoff_s: 1.0}}
      - {{name: rec, type: test_record, params: {{path: {out}}}}}
    connections: [src.frames -> mid.frames, mid.frames -> rec.messages]
    """)
    lines = lambda: out.read_text().count("\n") if out.exists() else 0  # noqa: E731
    g.wait_for(lambda: lines() >= 5, what="frames through the relay")
    control = g.endpoints()["control"]
    old = g.node_pids()["mid"]
    token = _control_token(old)
    assert token.startswith(b"mid/") and len(token) > len(b"mid/")
    os.kill(old, signal.SIGKILL)
    # Its identity is free once the supervisor has seen it go; the restart comes 1 s later.
    g.wait_for(lambda: f"mid (pid {old}) exited" in g.stderr(), what="the relay's exit")
    stats = NodeStats(node="mid").to_dict()
    bad = [msgpack.packb(m) for m in (
        {"op": "stats", "stats": "xx"}, {"op": "stats", "stats": {"in": "x"}}, {"op": "eos", "stats": {"bogus": 1}},
        {"op": "failed", "reason": 5}, {"op": "ready", "extra": 1}, {"op": "start"}, {"op": "reboot"})]
    # One socket per identity: a ROUTER refuses a second connection under an identity it holds.
    batches = {token: [[b] for b in bad] + [[encode(Op.READY), b"second frame"]],  # the restarting node's
               b"mid": [[b] for b in bad],  # its bare name
               b"stranger": [[encode(Op.EOS, stats=stats)], [b"\xc1 not msgpack"]]}  # valid, from no node
    ctx = zmq.Context()
    try:
        for identity, frames in batches.items():
            s = ctx.socket(zmq.DEALER)
            s.identity, s.linger = identity, 2000
            s.connect(control)
            for f in frames:
                s.send_multipart(f)
            s.close()
        ctx.term()  # returns once every message has left
    finally:
        ctx.destroy(0)
    sent = sum(map(len, batches.values()))
    g.wait_for(lambda: g.node_pids().get("mid", old) != old, what="the relay restarted")
    n = lines()
    g.wait_for(lambda: lines() >= n + 5, what="frames after the restart")
    g.terminate()
    assert g.proc.returncode == 0, g.describe()
    assert f"control messages dropped: {sent}" in g.stdout(), g.describe()
    assert "Traceback" not in g.stderr() and "FAILED" not in g.stdout(), g.describe()
    assert "stats must be a dict" in g.stderr() and "unknown sender" in g.stderr()
