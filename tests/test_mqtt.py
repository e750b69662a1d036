"""The mqtt bridge against a real Mosquitto broker on a free loopback port (Debian package `mosquitto`,
installed by .ci/run): every event arrives, a broker restart mid-stream loses nothing, a bridge restart
resends from the last acknowledged event, wrong credentials are one clear line and no crash."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
from conftest import need, wait_until

from edge.events.log import EventLog

try:
    import paho.mqtt.client as mqtt
except ImportError:
    mqtt = None
MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)


@pytest.fixture(autouse=True)
def _needs_broker() -> None:
    need("mosquitto", MOSQUITTO is not None, "mosquitto not installed (apt-get install mosquitto)")
    need("mosquitto", mqtt is not None, "paho-mqtt not installed (pip install -e '.[mqtt]')")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """A Mosquitto process on 127.0.0.1:`port` with persistence (so a restart keeps the queued messages
    of persistent sessions) and, optionally, a password file."""

    def __init__(self, root: Path, users: dict[str, str] | None = None, tls: dict[str, Path] | None = None) -> None:
        self.root, self.port, self.tls = root, free_port(), tls
        conf = [f"listener {self.port} 127.0.0.1", "persistence true", f"persistence_location {root}/",
                "user root", f"log_dest file {root}/mosquitto.log"]
        if tls:
            conf += [f"cafile {tls['ca']}", f"certfile {tls['cert']}", f"keyfile {tls['key']}"]
        if users:
            pw = root / "passwd"
            pw.write_text("")
            for user, password in users.items():
                subprocess.run(["mosquitto_passwd", "-b", str(pw), user, password], check=True, capture_output=True)
            conf += ["allow_anonymous false", f"password_file {pw}"]
        else:
            conf.append("allow_anonymous true")
        self.conf = root / "mosquitto.conf"
        self.conf.write_text("\n".join(conf) + "\n")
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://127.0.0.1:{self.port}"

    def start(self) -> None:
        import socket

        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not start: {(self.root / 'mosquitto.log').read_text()[-500:]}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # writes its persistence file on the way out
            self.proc.wait(10)
        self.proc = None


@pytest.fixture
def broker(tmp_path):
    d = tmp_path / "broker"
    d.mkdir()
    b = Broker(d)
    b.start()
    yield b
    b.stop()


class Subscriber:
    """A persistent-session QoS 1 subscriber (what a fleet's collector runs) that reconnects by itself."""

    def __init__(self, port: int, topic: str = "facesleuth/#") -> None:
        self.messages: list[tuple[str, bytes, bool]] = []
        self.lock = threading.Lock()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"collector-{port}", clean_session=False)
        self.c.reconnect_delay_set(1, 2)
        self.c.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.c.on_message = self._on_message
        self.c.connect("127.0.0.1", port, keepalive=10)
        self.c.loop_start()

    def _on_message(self, c, u, m) -> None:
        with self.lock:
            self.messages.append((m.topic, m.payload, bool(m.retain)))

    def events(self) -> list[dict]:
        with self.lock:
            return [json.loads(p) for t, p, _ in self.messages if t.endswith("/events")]

    def on(self, suffix: str) -> list[dict]:
        with self.lock:
            return [json.loads(p) for t, p, _ in self.messages if t.endswith(suffix)]

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


GRAPH = """
name: mqtt-test
nodes:
  - {{name: src, type: test_events, params: {{count: {count}, rate: {rate}, stream: {stream}}}}}
  - {{name: events, type: events, params: {{db: {db}, pub: "tcp://127.0.0.1:*", replay: "tcp://127.0.0.1:*",
     print: false}}}}
  - {{name: mqtt, type: mqtt, params: {{broker: "{url}", db: {db}, device: dev-1, heartbeat_s: 0.5,
     retry_max_s: 2, flush_timeout_s: {flush}{extra}}}}}
connections:
  - src.events -> events.events
  - events.stored -> mqtt.events
"""


def graph_text(db: Path, url: str, count: int = 30, rate: float = 30.0, stream: str = "cam0", flush: float = 10,
               extra: str = "") -> str:
    return GRAPH.format(db=db, url=url, count=count, rate=rate, stream=stream, flush=flush, extra=extra)


def seqs(events: list[dict]) -> list[int]:
    return sorted({e["seq"] for e in events})


def test_every_event_of_a_run_arrives_with_status_and_heartbeat(broker, run_graph, tmp_path):
    sub = Subscriber(broker.port)
    try:
        db = tmp_path / "ev.db"
        g = run_graph(graph_text(db, broker.url, count=30, stream="lab2"))
        assert g.wait(60) == 0, g.describe()
        wait_until(lambda: len(sub.events()) >= 30, 10, "30 events at the subscriber")
        events = sub.events()
        assert seqs(events) == list(range(1, 31))
        with sub.lock:
            topics = {t for t, _, _ in sub.messages}
        assert "facesleuth/dev-1/lab2/events" in topics
        assert events[0]["stream"] == "lab2" and events[0]["label"] == "surprise" and "scores" in events[0]
        status = sub.on("/status")
        assert status[0]["state"] == "online" and status[0]["graph"] == "mqtt-test"
        assert status[-1]["state"] == "offline" and status[-1]["reason"] == "stopped"  # clean stop
        assert any(s.get("model_id") == "soa-test" for s in status)
        assert "facesleuth-edge" in status[0]["versions"]
        beats = sub.on("/heartbeat")
        assert beats, "no heartbeat"
        assert beats[-1]["events"]["last_seq"] >= 1
        assert any("src" in b.get("pipeline", {}) for b in beats), beats[-1]  # the supervisor's node counters
    finally:
        sub.close()


def test_broker_restart_mid_stream_loses_nothing(broker, run_graph, tmp_path):
    sub = Subscriber(broker.port)
    try:
        db = tmp_path / "ev.db"
        g = run_graph(graph_text(db, broker.url, count=80, rate=20.0, flush=30))
        wait_until(lambda: len(sub.events()) >= 10, 30, "the first events")
        broker.stop()
        time.sleep(2.0)  # events keep coming into the log while the broker is away
        broker.start()
        assert g.wait(90) == 0, g.describe()
        wait_until(lambda: len(seqs(sub.events())) >= 80, 20, "every event after the restart")
        with EventLog(db, readonly=True) as log:
            assert log.last_seq == 80
        assert seqs(sub.events()) == list(range(1, 81))  # every sequence number exactly once after dedup
        assert "lost" in g.stderr() + g.stdout()  # the outage was noticed (and logged once, not per retry)
    finally:
        sub.close()


def test_bridge_restart_resends_from_the_last_acknowledged_event(tmp_path, run_graph):
    d = tmp_path / "broker"
    d.mkdir()
    broker = Broker(d)  # not started: the first run finds nothing listening
    db = tmp_path / "ev.db"
    g = run_graph(graph_text(db, broker.url, count=12, rate=50.0, flush=0))
    assert g.wait(60) == 0, g.describe()  # an unreachable broker is not a crash of the graph
    out = g.stdout() + g.stderr()
    assert out.count("unreachable") == 1, out  # one line, not one per retry
    state = list(tmp_path.glob("ev.db.mqtt-*.json"))
    assert not state or json.loads(state[0].read_text())["acked_seq"] == 0

    broker.start()
    sub = Subscriber(broker.port)
    try:
        from edge.events.mqtt import MqttBridge, MqttConfig

        with EventLog(db) as log:  # more events while nothing forwards
            for _ in range(3):
                log.append({"stream": "cam0", "track_id": 1, "kind": "micro", "label": "negative"})
        bridge = MqttBridge(MqttConfig(broker=broker.url, device="dev-1"), db)
        bridge.start()
        assert bridge.flush(15), "the broker did not acknowledge the backlog"
        bridge.stop()
        wait_until(lambda: len(seqs(sub.events())) >= 15, 10, "the backlog at the subscriber")
        assert seqs(sub.events()) == list(range(1, 16))
        assert json.loads(next(tmp_path.glob("ev.db.mqtt-*.json")).read_text())["acked_seq"] == 15
        n = len(sub.events())
        again = MqttBridge(MqttConfig(broker=broker.url, device="dev-1"), db)  # nothing left to send
        again.start()
        assert again.flush(5)
        again.stop()
        time.sleep(0.3)
        assert len(sub.events()) == n
    finally:
        sub.close()
        broker.stop()


def test_wrong_credentials_are_one_clear_line_not_a_crash(tmp_path, run_graph, plugin_env):
    d = tmp_path / "broker"
    d.mkdir()
    broker = Broker(d, users={"jetson": "right"})
    broker.start()
    try:
        db = tmp_path / "ev.db"
        g = run_graph(graph_text(db, broker.url, count=60, rate=20.0, flush=0, extra=", username: jetson"),
                      env={**plugin_env, "FACESLEUTH_MQTT_PASSWORD": "wrong"})
        assert g.wait(60) == 0, g.describe()  # ~3 s of retries, then the graph ends normally
        out = g.stdout() + g.stderr()
        lines = [ln for ln in out.splitlines() if "refused the connection" in ln]
        assert len(lines) == 1, out
        assert "check username and password" in lines[0]
        assert "Traceback" not in out
        with EventLog(db, readonly=True) as log:
            assert log.last_seq == 60  # the events are kept for when the credentials are fixed
    finally:
        broker.stop()


def test_a_dead_network_loop_is_restarted_and_nothing_is_lost(broker, tmp_path):
    from edge.events.mqtt import MqttBridge, MqttConfig

    sub = Subscriber(broker.port)
    db = tmp_path / "ev.db"
    log = EventLog(db)
    try:
        log.append({"stream": "cam0", "track_id": 1, "kind": "micro", "label": "negative"})
        bridge = MqttBridge(MqttConfig(broker=broker.url, device="dev-1", keepalive_s=1, retry_max_s=1), db,
                            poll_s=0.1)
        bridge.start()
        assert bridge.flush(10)
        bridge.client.loop_stop()  # paho's network thread dies (what used to end other stacks' publishers)
        for _ in range(5):
            log.append({"stream": "cam0", "track_id": 1, "kind": "micro", "label": "negative"})
        assert bridge.flush(20), "the bridge did not recover"
        assert bridge.loop_restarts == 1
        wait_until(lambda: len(seqs(sub.events())) >= 6, 10, "every event at the subscriber")
        assert seqs(sub.events()) == list(range(1, 7))
        bridge.stop()
    finally:
        log.close()
        sub.close()


def make_certs(d: Path) -> dict[str, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1 (openssl CLI)."""
    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=facesleuth test CA",
        "-keyout", "ca.key", "-out", "ca.pem")
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", "server.key",
        "-out", "server.csr")
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "1",
        "-extfile", "ext.cnf", "-out", "server.pem")
    return {"ca": d / "ca.pem", "cert": d / "server.pem", "key": d / "server.key"}


def test_tls_broker_gets_every_event_and_a_wrong_ca_is_one_line(tmp_path, caplog):
    import logging

    from edge.events.mqtt import MqttBridge, MqttConfig

    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed: no certificates for the TLS broker")
    d = tmp_path / "broker"
    d.mkdir()
    broker = Broker(d, tls=make_certs(d))
    broker.start()
    db = tmp_path / "ev.db"
    try:
        with EventLog(db) as log:
            for _ in range(4):
                log.append({"stream": "cam0", "track_id": 1, "kind": "micro", "label": "surprise"})
        got = []
        sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="tls-collector")
        sub.tls_set(ca_certs=str(d / "ca.pem"))
        sub.on_message = lambda c, u, m: got.append(json.loads(m.payload)) if m.topic.endswith("/events") else None
        sub.on_connect = lambda c, u, f, rc, p: c.subscribe("facesleuth/#", qos=1)
        sub.connect("127.0.0.1", broker.port)
        sub.loop_start()
        try:
            bridge = MqttBridge(MqttConfig(broker=broker.url, device="dev-1", ca_certs=str(d / "ca.pem")), db)
            bridge.start()
            assert bridge.flush(15), "no acknowledgement over TLS"
            bridge.stop()
            wait_until(lambda: len(got) >= 4, 10, "the events over TLS")
            assert seqs(got) == [1, 2, 3, 4]
        finally:
            sub.loop_stop()
            sub.disconnect()
        # A broker whose certificate this CA did not sign: refused, said once, nothing acknowledged.
        other = tmp_path / "other"
        other.mkdir()
        wrong = make_certs(other)["ca"]
        with caplog.at_level(logging.ERROR, logger="edge.events.mqtt"):
            bridge = MqttBridge(MqttConfig(broker=broker.url, device="dev-2", ca_certs=str(wrong), retry_max_s=1),
                                db, state=tmp_path / "wrong.json")
            bridge.start()
            assert not bridge.flush(3)
            bridge.stop()
        errors = [r.getMessage() for r in caplog.records if r.name == "edge.events.mqtt"]
        assert len(errors) == 1 and "TLS handshake" in errors[0], errors
    finally:
        broker.stop()
