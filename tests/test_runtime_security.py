"""CURVE: a secured tcp link carries frames between node processes; a client without the server's key
(or with a wrong one) receives nothing; key generation refuses to overwrite; `facesleuth subscribe`
with the keys reads the secured stream."""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest
import zmq
from conftest import need

from edge.events.log import EventLog
from edge.runtime.keys import allow, generate, load_curve
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
    # Another client pair, allowed while the graph runs (its nodes read allowed/ at each handshake).
    friend = generate(tmp_path / "friend")
    (friend / "server.key_secret").unlink()
    (friend / "server.key").write_bytes((key_dir / "server.key").read_bytes())
    allow(key_dir, friend / "client.key", "friend")
    r = subprocess.run([*cli, ep, "--keys", str(friend), "--count", "1", "--timeout", "10"],
                       capture_output=True, text=True, timeout=30, env=plugin_env)
    assert r.returncode == 0 and r.stdout.startswith("cam.frames frame seq="), r.stderr
    raw = socket(zmq.SUB, subscribe=b"")
    fresh = socket(zmq.SUB, subscribe=b"", curve_serverkey=load_curve(key_dir).server_public)
    fresh.curve_publickey, fresh.curve_secretkey = zmq.curve_keypair()  # knows the server key, not allowed
    for s in (raw, fresh):
        s.connect(ep)
    assert not raw.poll(1000), "a client without keys received data"
    assert not fresh.poll(10), "a fresh key pair that is not on the allow-list received data"
    r = subprocess.run([*cli, ep, "--timeout", "2"], capture_output=True, text=True, timeout=30, env=plugin_env)
    assert r.returncode == 1 and "no message" in r.stderr and r.stdout == ""


# ------------------------------------------------------------- issue 27 item 5: nobody else gets in


def _curve_socket(ctx: zmq.Context, kind: int, server_key: bytes, pair: tuple[bytes, bytes] | None = None) -> zmq.Socket:
    s = ctx.socket(kind)
    s.linger = 0
    s.curve_publickey, s.curve_secretkey = pair or zmq.curve_keypair()
    s.curve_serverkey = server_key
    return s


def test_zap_lets_only_allowed_client_keys_read_or_take(zmq_context, endpoint, keys):
    """Socket level: CURVE alone lets any fresh key pair in; with the ZAP handler only the allowed keys
    subscribe (latest-wins) or take messages off a lossless link, even with the consumer's routing id."""
    from edge.runtime.delivery import HELLO
    from edge.runtime.zap import ZapHandler

    zap = ZapHandler(zmq_context, [keys.client_public])
    link_ep = endpoint("link", "tcp")
    out = Output(zmq_context, "src.frames", endpoint("pub", "tcp"), [(link_ep, 8, "dst.frames/0")], curve=keys)
    pub_ep = out.pub.last_endpoint.decode()
    good = Input(zmq_context, pub_ep, "src.frames", latest=True, curve=keys)
    stranger = Input(zmq_context, pub_ep, "src.frames", latest=True,
                     curve=Curve(keys.server_public, None, *zmq.curve_keypair()))
    thief = _curve_socket(zmq_context, zmq.DEALER, keys.server_public)
    thief.routing_id = b"dst.frames/0"  # the real consumer's id: ROUTER_HANDOVER would give it the stream
    thief.connect(link_ep)
    thief.send(HELLO, zmq.NOBLOCK)
    try:
        assert _wait_subscribed(out)
        time.sleep(0.3)  # the stranger's and the thief's handshakes are refused meanwhile
        for i in range(3):
            out.send(Message("frame", frame=i, arrays={"image": np.full((8, 8), i, np.uint8)}), block_timeout_s=0)
        assert _got_something(good, 2.0)
        assert out.subscriptions == 1 and not _got_something(stranger, 0.3)
        assert not thief.poll(200), "a client key that is not allowed took lossless messages"
        assert out.outbox_fill == 3, "nothing was taken (or acknowledged) by anyone"
        assert zap.denied >= 2 and zap.accepted >= 1
    finally:
        for s in (good, stranger):
            s.close()
        thief.close(0)
        out.close(0)
        zap.close()


def test_keys_allow_refuses_secret_keys_bad_names_and_non_key_files(tmp_path, plugin_env):
    from edge.errors import UserError

    d, friend = generate(tmp_path / "device"), generate(tmp_path / "friend")
    for args, message in (((friend / "client.key_secret",), "holds a secret key"),
                          ((friend / "client.key", "../up"), "use letters"),
                          ((tmp_path / "device" / "nope.key",), "not a CURVE public key file")):
        with pytest.raises(UserError, match=message):
            allow(d, *args)
    with pytest.raises(UserError, match="not a key directory"):
        allow(friend / "client.key", friend / "client.key")
    r = subprocess.run([sys.executable, "-m", "edge", "keys", "allow", str(d), str(friend / "client.key_secret")],
                       capture_output=True, text=True, timeout=30, env=plugin_env)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "secret key" in r.stderr, r.stderr


INTRUDER = Path(__file__).resolve().parent / "plugin" / "fs_intruder.py"
SECOND_UID = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]


def _second_uid_reason() -> str | None:
    """Why a second local uid cannot be used here (None: it can run this venv's python with pyzmq)."""
    if shutil.which("setpriv") is None:
        return "setpriv is not installed"
    if os.geteuid() != 0:
        return "running as another uid needs root (setpriv --reuid)"
    r = subprocess.run([*SECOND_UID, sys.executable, "-c", "import zmq, msgpack"], capture_output=True,
                       text=True, timeout=30, cwd="/")
    return None if r.returncode == 0 else f"uid nobody cannot run {sys.executable} with pyzmq: {r.stderr.strip()[-200:]}"


def _readline(proc: subprocess.Popen, timeout: float) -> str:
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    return proc.stdout.readline().strip() if ready else ""


def _stored(db: Path) -> list[dict]:
    if not db.exists():
        return []
    with EventLog(db, readonly=True) as log:
        return list(log.query())


def _essence(events: list[dict]) -> list[tuple]:
    """What a run's events say, without clock readings (the same for the same input, whatever the wires)."""
    return [(e["seq"], e["track_id"], e["onset"]["frame"], e["intensity"], e["label"]) for e in events]


@pytest.fixture(scope="module")
def tcp_run(plugin_env, tmp_path_factory):
    """One `endpoints: tcp` graph (frames on a latest-wins link; intervals and events on lossless links;
    an events node whose endpoints have a key directory), watched from outside while it runs, next to the
    same intervals -> classify -> events chain on ipc. Yields what everyone saw."""
    from conftest import REPO, RunningGraph, free_tcp_port

    tmp = tmp_path_factory.mktemp("tcp-sec")
    short = Path(tempfile.mkdtemp(prefix="fs-", dir="/tmp"))
    key_dir, friend, stranger = (generate(tmp / n) for n in ("keys", "friend", "stranger"))
    go, rec = tmp / "go", tmp / "rec.jsonl"
    pub, replay = (f"tcp://127.0.0.1:{free_tcp_port()}" for _ in range(2))
    chain = "[spot.intervals -> cls.intervals, cls.events -> events.events]"
    (tmp / "tcp.yaml").write_text(f"""
name: tcp-sec
endpoints: tcp
nodes:
  - {{name: cam, type: test_arrays, params: {{count: 0, fps: 30}}}}
  - {{name: rec, type: test_record, params: {{path: {rec}}}}}
  - {{name: spot, type: test_intervals, params: {{count: 5, rate: 20, go_file: {go}}}}}
  - {{name: cls, type: test_classify}}
  - {{name: events, type: events, params: {{db: {tmp / 'tcp.db'}, pub: '{pub}', replay: '{replay}', print: false,
      keys: {key_dir}}}}}
  - {{name: hold, type: test_events, params: {{go_file: {tmp / 'never'}}}}}  # keeps the events node serving
connections: [cam.frames -> rec.messages, hold.events -> events.events, {chain[1:-1]}]
""")
    (tmp / "ipc.yaml").write_text(f"""
name: ipc-ref
nodes:
  - {{name: spot, type: test_intervals, params: {{count: 5, rate: 20}}}}
  - {{name: cls, type: test_classify}}
  - {{name: events, type: events, params: {{db: {tmp / 'ipc.db'}, pub: 'ipc://{short}/p.ipc',
      replay: 'ipc://{short}/r.ipc', print: false}}}}
connections: {chain}
""")
    roots = [Path(tempfile.mkdtemp(prefix="fsr-", dir="/tmp")) for _ in range(2)]
    g = RunningGraph(tmp / "tcp.yaml", (), plugin_env, roots[0])
    ref = RunningGraph(tmp / "ipc.yaml", (), plugin_env, roots[1])
    ctx = zmq.Context()
    seen: dict[str, Any] = {"second_uid": _second_uid_reason()}
    intruder = None
    try:
        g.wait_for(lambda: "nodes connected: starting sources" in g.stderr(), 20, "the tcp graph to start")
        run_dir = g.run_dir()
        eps = g.endpoints()
        specs = {p.stem: json.loads(p.read_text()) for p in run_dir.glob("*.json") if p.stem not in ("endpoints", "tap")}
        seen.update(eps=eps, specs=specs, run_dir=run_dir,
                    modes={p.name: p.stat().st_mode & 0o777 for p in run_dir.glob("*.json")})
        if seen["second_uid"] is None:  # everything another user could learn, and a fresh key pair of its own
            from edge.runtime.delivery import HELLO

            srv = eps.get("server_keys") or {p: zmq.curve_keypair()[0].decode() for p in eps["ports"]}  # (unsecured)
            cfg = {"subs": [{"name": p, "endpoint": ep, "server_key": srv[p]} for p, ep in eps["ports"].items()]
                   + [{"name": "events.pub", "endpoint": pub, "server_key": load_curve(key_dir).server_public.decode()}],
                   "dealers": [{"name": f"{n}.{port}->{peer}", "endpoint": ep, "server_key": srv[f"{n}.{port}"],
                                "peer": peer}
                               for n, s in specs.items() for port, o in s["outputs"].items() for ep, _, peer in o["push"]]
                   + [{"name": "events.replay", "endpoint": replay,
                       "server_key": load_curve(key_dir).server_public.decode()}],
                   "files": [str(run_dir / "tap.json"), str(run_dir / "events.json"), str(key_dir / "server.key_secret")],
                   "hello": HELLO.decode(), "seconds": 2.0}
            intruder = subprocess.Popen([*SECOND_UID, sys.executable, "-c", INTRUDER.read_text()], cwd="/",
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            intruder.stdin.write(json.dumps(cfg))
            intruder.stdin.close()
            seen["intruder_ready"] = _readline(intruder, 15)
        # The events endpoints: a client allowed while the node runs, one that never was, one without CURVE
        cli = [sys.executable, "-m", "edge"]
        r = subprocess.run([*cli, "keys", "allow", str(key_dir), str(friend / "client.key"), "--name", "friend"],
                           capture_output=True, text=True, timeout=30, env=plugin_env, cwd=REPO)
        seen["allow"] = (r.returncode, r.stdout + r.stderr)
        server_key, pairs = load_curve(key_dir).server_public, {}
        for who, d in (("friend", friend), ("stranger", stranger)):
            c = load_curve(d)
            pairs[who] = (c.client_public, c.client_secret)
        subs = {}
        for who in ("friend", "stranger", "plain"):
            s = _curve_socket(ctx, zmq.SUB, server_key, pairs[who]) if who in pairs else ctx.socket(zmq.SUB)
            s.linger = 0
            s.setsockopt(zmq.SUBSCRIBE, b"")
            s.connect(pub)
            subs[who] = s
        time.sleep(0.5)  # handshakes (and refusals) before the first event
        taps = [subprocess.Popen([*cli, "subscribe", "cam.frames", "--run-dir", str(run_dir), "--count", "2", "--json",
                                  "--timeout", "10"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 env=g.env),
                subprocess.Popen([*cli, "stats", "--run-dir", str(run_dir), "--once", "--json"], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, env=g.env)]
        go.touch()
        g.wait_for(lambda: len(_stored(tmp / "tcp.db")) >= 5, 15, "5 events in the tcp graph's log")
        time.sleep(0.3)
        seen["pub"] = {}
        for who, s in subs.items():
            n = 0
            while s.poll(100):
                s.recv_multipart()
                n += 1
            seen["pub"][who] = n
            s.close(0)
        seen["replay"] = {}
        for who in ("friend", "stranger"):
            d = _curve_socket(ctx, zmq.DEALER, server_key, pairs[who])
            d.connect(replay)
            d.send(msgpack.packb({"since": 0}))
            seen["replay"][who] = msgpack.unpackb(d.recv(), raw=False) if d.poll(1500) else None
            d.close(0)
        seen["taps"] = [(p.wait(30), p.stdout.read(), p.stderr.read()) for p in taps]
        if intruder is not None:
            seen["intruder"] = json.loads(_readline(intruder, 15) or "null")
            seen["intruder_err"] = intruder.stderr.read()
        seen["stop"] = g.stop()
        seen["ref_code"] = ref.wait(30)
        seen["events"], seen["ref_events"] = _stored(tmp / "tcp.db"), _stored(tmp / "ipc.db")
        seen["frames"] = rec.read_text().count("\n")
        seen["stderr"] = g.stderr()
        yield seen
    finally:
        if intruder is not None and intruder.poll() is None:
            intruder.kill()
        for r in (g, ref):
            r.terminate()
        ctx.destroy(0)
        for d in (*roots, short):
            shutil.rmtree(d, ignore_errors=True)


def test_a_second_uid_reads_no_frame_takes_no_event_and_the_log_holds_all(tcp_run):
    need("second-uid", tcp_run["second_uid"] is None, f"no second uid: {tcp_run['second_uid']}")
    assert tcp_run["intruder_ready"] == "ready", tcp_run.get("intruder_err")
    got = tcp_run["intruder"]
    assert got is not None, tcp_run["intruder_err"]
    links = sum(len(o["push"]) for s in tcp_run["specs"].values() for o in s["outputs"].values())
    assert links == 3 and len(got["received"]) == 2 * (len(tcp_run["eps"]["ports"]) + links + 2)  # + pub, replay
    assert all(n == 0 for n in got["received"].values()), got["received"]
    assert set(got["files"].values()) == {"PermissionError"}, got["files"]  # the tap key, specs, key secrets
    assert [e["track_id"] for e in tcp_run["events"]] == list(range(5)), tcp_run["stderr"]
    assert "refused a CURVE client" in tcp_run["stderr"]
    assert tcp_run["frames"] > 0  # the graph's own consumer read frames meanwhile


def test_b_c_the_event_endpoints_serve_only_allow_listed_clients(tcp_run):
    code, out = tcp_run["allow"]
    assert code == 0 and "allowed" in out, out
    assert tcp_run["pub"] == {"friend": 5, "stranger": 0, "plain": 0}
    assert tcp_run["replay"]["stranger"] is None, "a key pair not on the allow-list got a replay answer"
    assert [e["seq"] for e in tcp_run["replay"]["friend"]["events"]] == [1, 2, 3, 4, 5]


def test_d_a_tcp_graph_talks_as_an_ipc_one_and_its_user_still_observes_it(tcp_run):
    assert tcp_run["stop"][0] == 0 and tcp_run["ref_code"] == 0, tcp_run["stderr"]
    assert len(tcp_run["ref_events"]) == 5 and _essence(tcp_run["events"]) == _essence(tcp_run["ref_events"])
    assert all(ep.startswith("tcp://127.0.0.1:") for ep in tcp_run["eps"]["ports"].values())
    secret_files = {n: m for n, m in tcp_run["modes"].items() if n != "endpoints.json"}  # specs, tap key
    assert len(secret_files) == len(tcp_run["specs"]) + 1 and set(secret_files.values()) == {0o600}, secret_files
    specs = tcp_run["specs"]
    for name, spec in specs.items():  # each node holds its own secret keys and no other node's
        others = [k for n, s in specs.items() if n != name for k in (s["curve"]["client_secret"], s["curve"]["server_secret"])]
        assert not any(k in json.dumps(spec) for k in others), name
    (sub_code, sub_out, sub_err), (stats_code, stats_out, stats_err) = tcp_run["taps"]
    assert sub_code == 0 and [json.loads(x)["type"] for x in sub_out.splitlines()] == ["frame", "frame"], sub_err
    assert stats_code == 0 and {n["node"] for n in json.loads(stats_out)["nodes"]} == set(specs), stats_err
