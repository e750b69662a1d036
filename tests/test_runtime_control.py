"""The control protocol and the stats record (edge.runtime.control): the wire maps are what running graphs, the
`facesleuth stats` table and the MQTT heartbeat read."""

from __future__ import annotations

import msgpack

from edge.runtime.control import NodeRecord, NodeStats, Op, counters, decode, encode


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
                       "foreign", "errors"]
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
