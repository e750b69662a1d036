"""Graph files: every kind of mistake fails with FILE:LINE: key: reason; good files load; the CLI says it
in one line with exit code 2."""

from __future__ import annotations

import subprocess
import sys

import pytest

from edge.errors import UserError
from edge.runtime.graph import GraphError, load_graph, parse_overrides, to_dot

GOOD = """
name: g
nodes:
  - name: src
    type: test_arrays
    params: {count: 3}
  - name: mid
    type: test_relay
    restart: {policy: on-failure, max_restarts: 2, backoff_s: 0.1}
  - name: sink
    type: test_params
    params:
      level: 3
      mode: exact
connections:
  - src.frames -> mid.frames
  - {from: mid.frames, to: sink.frames, delivery: lossless, queue: 10}
"""


def _fails(write_graph, text: str, line: int, key: str, reason: str, overrides=None) -> str:
    path = write_graph(text)
    with pytest.raises(GraphError) as e:
        load_graph(path, overrides)
    msg = str(e.value)
    assert msg.startswith(f"{path}:{line}: "), msg
    assert key in msg and reason in msg, msg
    assert "\n" not in msg
    return msg


def test_good_graph_loads_with_defaults_and_delivery(write_graph):
    g = load_graph(write_graph(GOOD))
    assert list(g.nodes) == ["src", "mid", "sink"]
    assert g.nodes["sink"].params == {"level": 3, "mode": "exact", "ratio": 0.5}
    assert g.nodes["mid"].restart.policy == "on-failure" and g.nodes["mid"].restart.backoff_s == 0.1
    assert [(lk.delivery, lk.queue) for lk in g.links] == [("latest", 1000), ("lossless", 10)]
    assert '"src" -> "mid"' in to_dot(g)


@pytest.mark.parametrize("old,new,line,key,reason", [
    ("name: g\n", "name: g\nfoo: 1\n", 2, "foo", "unknown key"),
    ("    type: test_relay\n", "    type: test_relay\n    colour: red\n", 8, "nodes[1].colour", "unknown key"),
    ("max_restarts: 2", "max_restart: 2", 8, "nodes[1].restart.max_restart", "unknown key"),
    ("delivery: lossless", "delivry: lossless", 16, "connections[1].delivry", "unknown key"),
    ("type: test_relay", "type: test_nosuch", 7, "nodes[1].type", "unknown node type 'test_nosuch'"),
    ("src.frames -> mid.frames", "src.images -> mid.frames", 15, "connections[0].from", "no output port 'images'"),
    ("src.frames -> mid.frames", "src.frames -> mid.crops", 15, "connections[0].to", "no input port 'crops'"),
    ("src.frames -> mid.frames", "src.frames -> nobody.frames", 15, "connections[0].to", "unknown node 'nobody'"),
    ("src.frames -> mid.frames", "src.frames mid.frames", 15, "connections[0]", "expected 'NODE.PORT -> NODE.PORT'"),
    ("  - name: mid\n", "  - name: src\n", 6, "nodes[1].name", "duplicate node name 'src'"),
    ("      level: 3\n", "", 11, "nodes[2].params", "missing required param 'level'"),
    ("level: 3", "level: three", 12, "nodes[2].params", "expected int"),
    ("level: 3", "level: 3.5", 12, "nodes[2].params", "expected int"),
    ("mode: exact", "mode: quick", 13, "nodes[2].params", "'quick' is not one of 'fast', 'exact'"),
    ("mode: exact", "ratio: 2.0", 13, "nodes[2].params", "above the maximum"),
    ("params: {count: 3}", "params: {count: 3, colour: 1}", 5, "nodes[0].params", "unknown param 'colour'"),
    ("policy: on-failure", "policy: always", 8, "nodes[1].restart.policy", "'always' is not one of"),
    ("delivery: lossless", "delivery: maybe", 16, "connections[1].delivery", "not latest or lossless"),
    ("queue: 10", "queue: 0", 16, "connections[1].queue", "an int from 1 to 100000"),
    ("name: g\n", "name: g\nendpoints: udp\n", 2, "endpoints", "not ipc or tcp"),
    ("name: g\n", "name: g\nmax_msg_bytes: big\n", 2, "max_msg_bytes", "expected int"),
    ("  - src.frames -> mid.frames\n", "", 6, "nodes.mid", "nothing is connected"),
])
def test_each_error_names_file_line_and_key(write_graph, old, new, line, key, reason):
    assert old in GOOD
    _fails(write_graph, GOOD.replace(old, new, 1), line, key, reason)


def test_message_type_mismatch(write_graph):
    text = """
    nodes:
      - {name: cam, type: pattern}
      - {name: rec, type: test_record, params: {path: out.jsonl}}
      - {name: ev, type: events}
    connections:
      - cam.frames -> rec.messages
      - cam.frames -> ev.events
    """
    _fails(write_graph, text, 7, "connections[1]", "message type mismatch: cam.frames sends 'frame'")


def test_endpoint_collision_and_non_loopback_without_keys(write_graph):
    both = """
    nodes:
      - name: a
        type: pattern
        endpoints: {frames: "tcp://127.0.0.1:5999"}
      - name: b
        type: pattern
        endpoints: {frames: "tcp://127.0.0.1:5999"}
    """
    _fails(write_graph, both, 5, "nodes.b.endpoints.frames", "already used by a.frames")
    open_ = """
    nodes:
      - name: a
        type: pattern
        endpoints: {frames: "tcp://0.0.0.0:5999"}
    """
    _fails(write_graph, open_, 2, "nodes.a.endpoints.frames", "not loopback")
    path = write_graph("endpoints: tcp\nbind: 192.168.1.10\nnodes:\n  - {name: a, type: pattern}\n")
    with pytest.raises(GraphError, match="CURVE keys are required"):
        load_graph(path)
    tipc = """
    nodes:
      - name: a
        type: pattern
        endpoints: {frames: "tipc://{5560,0,0}"}
    """
    _fails(write_graph, tipc, 2, "nodes.a.endpoints.frames", "not loopback")


def test_validate_refuses_the_node_params_the_runner_refuses(write_graph, plugin_env):
    """`graph validate` checks what a node's setup() would refuse: the events node's public endpoints
    off loopback without keys."""
    text = """
    nodes:
      - {name: ev_src, type: test_events}
      - name: ev
        type: events
        params:
          print: false
          pub: "tcp://0.0.0.0:5571"
    connections: [ev_src.events -> ev.events]
    """
    _fails(write_graph, text, 7, "nodes[1].params", "param 'pub': tcp://0.0.0.0:5571 is not loopback")
    ok = write_graph(text.replace("0.0.0.0", "127.0.0.1"), "ok.yaml")
    assert load_graph(ok).nodes["ev"].params["pub"] == "tcp://127.0.0.1:5571"
    with pytest.raises(GraphError, match="param 'replay': tipc://"):
        load_graph(ok, ["ev.replay=tipc://{5572,0,0}"])
    r = subprocess.run([sys.executable, "-m", "edge", "graph", "validate", str(ok), "--set", "ev.pub=tcp://0.0.0.0:1"],
                       capture_output=True, text=True, timeout=60, env=plugin_env)
    assert r.returncode == 2 and "is not loopback" in r.stderr and "Traceback" not in r.stderr, r.stderr


@pytest.mark.parametrize("text,line,reason", [
    ("nodes:\n  - name: a\n   type: pattern\n", 3, "invalid YAML"),
    ("nodes: [\n", 2, "invalid YAML"),
    ("name: a\nname: b\nnodes: []\n", 2, "duplicate key 'name'"),
    ("- just\n- a list\n", 1, "must be a mapping"),
])
def test_malformed_yaml(write_graph, text, line, reason):
    path = write_graph(text)
    with pytest.raises(GraphError) as e:
        load_graph(path)
    assert str(e.value).startswith(f"{path}:{line}: ") and reason in str(e.value), str(e.value)


def test_overrides_are_yaml_last_wins_and_validated(write_graph):
    path = write_graph(GOOD)
    g = load_graph(path, ["sink.level=4", "sink.level=5", "sink.mode=fast", "src.count=0"])
    assert g.nodes["sink"].params["level"] == 5 and g.nodes["sink"].params["mode"] == "fast"
    assert g.nodes["src"].params["count"] == 0
    with pytest.raises(GraphError, match=r"graph\.yaml:\d+: nodes\[2\]\.params: param 'level': expected int"):
        load_graph(path, ["sink.level=high"])
    with pytest.raises(GraphError, match="is not one of"):
        load_graph(path, ["sink.mode=slow"])
    for bad in ("sinklevel=3", "sink.level", ".level=3", "sink.=3"):
        with pytest.raises(UserError, match="expected NODE.PARAM=VALUE"):
            parse_overrides([bad])
    with pytest.raises(UserError, match="unknown node 'nosuch'"):
        load_graph(path, ["nosuch.level=3"])


def test_paths_resolve_relative_to_the_graph_file(write_graph, tmp_path):
    path = write_graph("""
    nodes:
      - {name: a, type: test_arrays}
      - {name: r, type: test_record, params: {path: sub/out.jsonl}}
    connections: [a.frames -> r.messages]
    """)
    assert load_graph(path).nodes["r"].params["path"] == str(tmp_path / "sub" / "out.jsonl")


def test_cli_prints_one_line_and_exits_2(write_graph, plugin_env):
    bad = write_graph(GOOD.replace("mode: exact", "mode: quick"), "bad.yaml")
    good = write_graph(GOOD, "good.yaml")
    cmd = [sys.executable, "-m", "edge", "graph"]
    r = subprocess.run([*cmd, "validate", str(bad)], capture_output=True, text=True, env=plugin_env, timeout=30)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and f"{bad}:13: nodes[2].params" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    r = subprocess.run([*cmd, "validate", str(good), "--set", "sink.level=1"], capture_output=True, text=True,
                       env=plugin_env, timeout=30)
    assert r.returncode == 0 and "ok (3 nodes, 2 connections)" in r.stdout, r.stderr
    r = subprocess.run([*cmd, "validate", str(good), "--set", "sink.level"], capture_output=True, text=True,
                       env=plugin_env, timeout=30)
    assert r.returncode == 2 and "bad override 'sink.level'" in r.stderr
    r = subprocess.run([sys.executable, "-m", "edge", "run", str(bad)], capture_output=True, text=True,
                       env=plugin_env, timeout=30)
    assert r.returncode == 2 and "is not one of" in r.stderr and "Traceback" not in r.stderr


DEFAULTS = GOOD.replace("name: g\n", "name: g\ndefaults:\n  restart: {policy: on-failure, max_restarts: 7}\n", 1)


def test_defaults_block_applies_to_nodes_without_their_own_restart_keys(write_graph):
    g = load_graph(write_graph(DEFAULTS))
    src, mid = g.nodes["src"].restart, g.nodes["mid"].restart
    assert (src.policy, src.max_restarts, src.backoff_s) == ("on-failure", 7, 0.5)  # backoff_s: Restart's
    assert (mid.policy, mid.max_restarts, mid.backoff_s) == ("on-failure", 2, 0.1)  # the node's own win
    g = load_graph(write_graph(DEFAULTS.replace("    restart: {policy: on-failure, max_restarts: 2, backoff_s: 0.1}",
                                                "    restart: never")))
    mid = g.nodes["mid"].restart
    assert (mid.policy, mid.max_restarts) == ("never", 7)


def test_without_defaults_a_node_never_restarts(write_graph):
    r = load_graph(write_graph(GOOD)).nodes["src"].restart
    assert (r.policy, r.max_restarts, r.backoff_s) == ("never", 3, 0.5)


@pytest.mark.parametrize("old,new,line,key,reason", [
    ("  restart:", "  colour: red\n  restart:", 3, "defaults.colour", "unknown key"),
    ("max_restarts: 7", "max_restart: 7", 3, "defaults.restart.max_restart", "unknown key"),
    ("max_restarts: 7", "max_restarts: many", 3, "defaults.restart.max_restarts", "expected int"),
    ("policy: on-failure, max_restarts: 7", "policy: always", 3, "defaults.restart.policy", "'always' is not one of"),
    ("defaults:\n  restart: {policy: on-failure, max_restarts: 7}\n", "defaults: on-failure\n", 2, "defaults",
     "expected dict"),
])
def test_defaults_block_is_strict(write_graph, old, new, line, key, reason):
    assert old in DEFAULTS
    _fails(write_graph, DEFAULTS.replace(old, new, 1), line, key, reason)
