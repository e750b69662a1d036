"""CURVE: a secured tcp link carries frames between node processes; a client without the server's key
(or with a wrong one) receives nothing; key generation refuses to overwrite; `facesleuth subscribe`
with the keys reads the secured stream."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest
import zmq

from edge.runtime.keys import generate, load_curve
from edge.runtime.messages import Message
from edge.runtime.transport import Curve, Input, Output


def _wait_subscribed(out: Output, timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if out.poll_subscriptions() >= 1:
            return True
        time.sleep(0.01)
    return False


def _got_something(inp: Input, timeout: float) -> bool:
    return bool(inp.sock.poll(int(timeout * 1000))) and inp.receive() is not None


@pytest.fixture
def keys(tmp_path):
    return load_curve(generate(tmp_path / "keys"))


def test_curve_link_works_and_keyless_or_wrong_key_clients_get_nothing(zmq_context, endpoint, keys):
    ep = endpoint(kind="tcp")
    out = Output(zmq_context, "cam.frames", ep, curve=keys)
    good = Input(zmq_context, ep, "cam.frames", latest=True, curve=keys)
    plain = Input(zmq_context, ep, "cam.frames", latest=True)
    other_server, _ = zmq.curve_keypair()
    wrong = Input(zmq_context, ep, "cam.frames", latest=True,
                  curve=Curve(other_server, None, keys.client_public, keys.client_secret))
    try:
        assert _wait_subscribed(out)
        time.sleep(0.3)  # give the keyless and wrong-key handshakes time to (fail to) complete
        assert out.subscriptions == 1, "only the client with the server key may subscribe"
        for i in range(5):
            out.send(Message("frame", frame=i, arrays={"image": np.full((8, 8), i, np.uint8)}))
            time.sleep(0.02)
        assert _got_something(good, 2.0)
        assert not _got_something(plain, 0.5)
        assert not _got_something(wrong, 0.1)
        assert plain.foreign == wrong.foreign == 0
    finally:
        for s in (good, plain, wrong):
            s.close()
        out.close(0)


def test_generate_refuses_to_overwrite(tmp_path, plugin_env):
    cmd = [sys.executable, "-m", "edge", "keys", "generate", str(tmp_path / "k")]
    assert subprocess.run(cmd, capture_output=True, timeout=30, env=plugin_env).returncode == 0
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=30, env=plugin_env)
    assert r.returncode == 2 and "refusing to overwrite" in r.stderr
    assert oct((tmp_path / "k" / "server.key_secret").stat().st_mode & 0o777) == "0o600"


def test_client_side_needs_only_the_server_public_key(tmp_path):
    full = generate(tmp_path / "device")
    client = tmp_path / "laptop"
    client.mkdir()
    for name in ("server.key", "client.key", "client.key_secret"):
        (client / name).write_bytes((full / name).read_bytes())
    c = load_curve(client)
    assert c.server_secret is None and c.server_public == load_curve(full).server_public


@pytest.mark.slow
def test_secured_graph_and_subscribe_with_keys(run_graph, tmp_path, plugin_env, socket):
    key_dir = generate(tmp_path / "keys")
    out = tmp_path / "rec.jsonl"
    g = run_graph(f"""
    endpoints: tcp
    keys: {key_dir}
    nodes:
      - {{name: cam, type: test_arrays, params: {{count: 0, fps: 30}}}}
      - {{name: rec, type: test_record, params: {{path: {out}}}}}
    connections: [cam.frames -> rec.messages]
    """)
    g.wait_for(lambda: out.exists() and out.read_text().count("\n") >= 5, what="frames over CURVE")
    ep = g.endpoints()["ports"]["cam.frames"]
    assert ep.startswith("tcp://127.0.0.1:")
    cli = [sys.executable, "-m", "edge", "subscribe"]
    # NODE.PORT of a graph with `keys:` uses the graph's keys (named in endpoints.json).
    r = subprocess.run([*cli, "cam.frames", "--run-dir", str(g.run_dir()), "--count", "3", "--json",
                        "--timeout", "10"], capture_output=True, text=True, timeout=30, env=plugin_env)
    assert r.returncode == 0, r.stderr
    lines = [json.loads(s) for s in r.stdout.splitlines()]
    assert len(lines) == 3 and all(x["topic"] == "cam.frames" and x["type"] == "frame" for x in lines)
    assert lines[0]["arrays"]["image"]["shape"] == [48, 64, 3]
    # A remote subscriber holds only the server's public key and the client pair.
    remote = tmp_path / "remote"
    remote.mkdir()
    for name in ("server.key", "client.key", "client.key_secret"):
        (remote / name).write_bytes((key_dir / name).read_bytes())
    r = subprocess.run([*cli, ep, "--keys", str(remote), "--count", "1", "--timeout", "10"],
                       capture_output=True, text=True, timeout=30, env=plugin_env)
    assert r.returncode == 0 and r.stdout.startswith("cam.frames frame seq="), r.stderr
    raw = socket(zmq.SUB, subscribe=b"")
    raw.connect(ep)
    assert not raw.poll(1000), "a client without keys received data"
    r = subprocess.run([*cli, ep, "--timeout", "2"], capture_output=True, text=True, timeout=30, env=plugin_env)
    assert r.returncode == 1 and "no message" in r.stderr and r.stdout == ""
