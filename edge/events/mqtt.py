"""Store-and-forward of the durable event log to an MQTT broker (paho-mqtt).

The bridge never holds events of its own: it reads them from the SQLite event log (edge.events.log) in
sequence order, publishes each with QoS 1 to `facesleuth/<device>/<stream>/events`, and remembers the
highest sequence number up to which the broker acknowledged every event (a small state file next to the
log). After a broker outage, or a restart of the bridge or of the whole device, it resends from there,
so nothing is lost; a subscriber drops the few duplicates by (device, stream, seq).

    bridge = MqttBridge(MqttConfig(broker="mqtt://broker.local:1883", device="jetson-07"), "events.db")
    bridge.start(); ...; bridge.flush(10); bridge.stop()

Status: a retained "online" message (model id, versions) on `facesleuth/<device>/status` after every
connect, a retained "offline" last will for a lost connection, and "offline" on a clean stop. A heartbeat
with the bridge's and the pipeline's counters goes to `facesleuth/<device>/heartbeat` every
`heartbeat_s`. Reconnection is paho's loop with exponential backoff, kept running for the life of the
bridge (never given up after a failure); a refused login or an unreachable broker is logged once per
change of state, not once per retry.
"""

from __future__ import annotations

import base64
import collections
import json
import logging
import os
import platform
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msgpack

from edge.errors import Unavailable, UserError
from edge.events.log import EventLog

log = logging.getLogger("edge.events.mqtt")


@dataclass
class MqttConfig:
    """Where and how to publish. Topics may use {device} and {stream}.

    broker: mqtt://host[:1883] or mqtts://host[:8883] (TLS).
    """

    broker: str = "mqtt://127.0.0.1:1883"
    device: str = ""
    topic: str = "facesleuth/{device}/{stream}/events"
    status_topic: str = "facesleuth/{device}/status"
    heartbeat_topic: str = "facesleuth/{device}/heartbeat"
    format: str = "json"
    qos: int = 1
    client_id: str = ""
    username: str | None = None
    password: str | None = None
    ca_certs: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    tls_insecure: bool = False
    keepalive_s: int = 30
    heartbeat_s: float = 30.0
    window: int = 64
    retry_min_s: float = 1.0
    retry_max_s: float = 30.0
    extra_status: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.device = topic_safe(self.device or socket.gethostname())
        u = urlsplit(self.broker if "://" in self.broker else f"mqtt://{self.broker}")
        if u.scheme not in ("mqtt", "mqtts") or not u.hostname:
            raise UserError(f"broker {self.broker!r}: expected mqtt://HOST[:PORT] or mqtts://HOST[:PORT]")
        self.tls = u.scheme == "mqtts" or bool(self.ca_certs)
        self.host = u.hostname
        self.port = u.port or (8883 if self.tls else 1883)
        if self.format not in ("json", "msgpack"):
            raise UserError(f"format {self.format!r}: expected json or msgpack")
        if self.qos not in (1, 2):
            raise UserError(f"qos {self.qos}: store-and-forward needs acknowledgements (qos 1 or 2)")
        self.client_id = self.client_id or f"facesleuth-{self.device}"

    @property
    def where(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


def topic_safe(name: str) -> str:
    """A device or stream id usable as one MQTT topic level (no wildcards, no separators)."""
    out = "".join("_" if c in "+#/\0" or ord(c) < 32 else c for c in str(name)).strip()
    return out or "_"


def encode_event(ev: dict[str, Any], fmt: str) -> bytes:
    """The wire form of one event: JSON (bytes fields as base64 strings) or the msgpack map."""
    if fmt == "msgpack":
        return msgpack.packb(ev, use_bin_type=True)
    return json.dumps(ev, separators=(",", ":"),
                      default=lambda o: base64.b64encode(o).decode() if isinstance(o, bytes) else str(o)).encode()


def versions() -> dict[str, str]:
    """Versions for the status message, read from package metadata (nothing heavy is imported)."""
    out = {"python": platform.python_version()}
    for dist in ("facesleuth-edge", "torch", "torch-tensorrt", "onnxruntime", "opencv-contrib-python-headless",
                 "paho-mqtt"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            pass
    return out


class AckState:
    """The highest sequence number the broker acknowledged with everything before it, kept in a file
    (written atomically: a crash leaves the old or the new value, never a torn one)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.saved = self.load()

    def load(self) -> int:
        try:
            return int(json.loads(self.path.read_text())["acked_seq"])
        except FileNotFoundError:
            return 0
        except (ValueError, KeyError, TypeError) as e:
            raise UserError(f"{self.path}: not a bridge state file ({e}); delete it to resend the whole log") from None

    def save(self, seq: int) -> None:
        if seq == self.saved:
            return
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w") as f:
            json.dump({"acked_seq": seq, "t_wall_ns": time.time_ns()}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        self.saved = seq


def default_state_path(db: str | Path, cfg: MqttConfig) -> Path:
    """One state file per (log, broker, client): two bridges of one log to two brokers don't mix."""
    return Path(f"{db}.mqtt-{topic_safe(cfg.host)}-{cfg.port}-{topic_safe(cfg.client_id)}.json")


class MqttBridge:
    """Forward every event of the log at `db` to the broker in `cfg`, from the last acknowledged one on.

    Args:
        cfg: broker, topics, credentials.
        db: the SQLite event log the `events` node writes (may not exist yet: the bridge waits for it).
        state: the acknowledged-sequence file (default: next to the log, see default_state_path).
        counters: returns the pipeline's counters for the heartbeat (e.g. the supervisor's node stats).
        poll_s: how often the log is checked when nothing wakes the bridge.
    """

    def __init__(self, cfg: MqttConfig, db: str | Path, state: str | Path | None = None,
                 counters: Callable[[], dict[str, Any]] | None = None, poll_s: float = 0.5) -> None:
        try:
            import paho.mqtt.client as mqtt
        except ImportError:
            raise Unavailable("mqtt: paho-mqtt is not installed (pip install 'paho-mqtt>=2.1')") from None
        self.mqtt = mqtt
        self.cfg = cfg
        self.db_path = Path(db)
        self.state = AckState(state or default_state_path(db, cfg))
        self.acked_seq = self.state.saved
        self.next_seq = self.acked_seq + 1
        self.counters = counters
        self.poll_s = poll_s
        self.published = 0
        self.acked = 0
        self.connects = 0
        self.model_id: str | None = None
        self._db: EventLog | None = None
        self._db_lock = threading.Lock()
        self._inflight: dict[int, int] = {}  # mid -> seq (worker thread only)
        self._done: set[int] = set()  # seqs acknowledged beyond acked_seq
        self._acks: collections.deque[int] = collections.deque()  # mids from paho's thread
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._problem = ""
        self._started = time.monotonic()
        self._activity = self._started  # last connection attempt or loss seen from paho's loop
        self._progress = self._started  # last acknowledgement, or first publish into an empty window
        self.loop_restarts = 0
        self._thread = threading.Thread(target=self._run, name="mqtt-bridge", daemon=True)
        self.client = self._client()

    # -- paho client ----------------------------------------------------------------------------------
    def _client(self):
        cfg, mqtt = self.cfg, self.mqtt
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cfg.client_id, protocol=mqtt.MQTTv311,
                        clean_session=True)
        if cfg.username is not None:
            c.username_pw_set(cfg.username, cfg.password)
        if cfg.tls:
            import ssl

            try:
                c.tls_set(ca_certs=cfg.ca_certs, certfile=cfg.certfile, keyfile=cfg.keyfile,
                          cert_reqs=ssl.CERT_REQUIRED)
            except (OSError, ValueError, ssl.SSLError) as e:
                raise UserError(f"mqtt TLS setup failed: {e}") from None
            c.tls_insecure_set(cfg.tls_insecure)
        c.will_set(self._status_topic, self._status("offline", "connection lost"), qos=1, retain=True)
        c.reconnect_delay_set(min_delay=max(1, int(cfg.retry_min_s)), max_delay=max(1, int(cfg.retry_max_s)))
        c.max_inflight_messages_set(max(cfg.window, 1))
        c.on_connect = self._on_connect
        c.on_connect_fail = self._on_connect_fail
        c.on_disconnect = self._on_disconnect
        c.on_publish = self._on_publish
        # An exception escaping a callback would end paho's network thread, and with it every later
        # reconnection (the "publisher silently stops after hours" failure): log it and carry on.
        c.suppress_exceptions = True
        return c

    @property
    def _status_topic(self) -> str:
        return self.cfg.status_topic.format(device=self.cfg.device, stream="")

    def _status(self, state: str, reason: str = "") -> bytes:
        doc = {"state": state, "device": self.cfg.device, "t_wall_ns": time.time_ns(), "model_id": self.model_id,
               "versions": versions(), **self.cfg.extra_status}
        if reason:
            doc["reason"] = reason
        return json.dumps(doc).encode()

    def _report(self, problem: str, level: int = logging.ERROR) -> None:
        """Log a connection problem once, not once per retry."""
        if problem != self._problem:
            self._problem = problem
            log.log(level, "%s", problem)

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        self._activity = time.monotonic()
        if reason_code.is_failure:
            hint = " (check username and password)" if reason_code.value in (4, 5, 134, 135) else ""
            self._report(f"mqtt broker {self.cfg.where} refused the connection: {reason_code}{hint}; "
                         f"retrying with backoff up to {self.cfg.retry_max_s:.0f} s")
            return
        self.connects += 1
        self._problem = ""
        log.info("mqtt connected to %s as %s; forwarding from seq %d", self.cfg.where, self.cfg.client_id,
                 self.acked_seq + 1)
        client.publish(self._status_topic, self._status("online"), qos=1, retain=True)
        self._connected.set()
        self._wake.set()

    def _on_connect_fail(self, client, userdata) -> None:
        self._activity = time.monotonic()
        how = " (no connection, or the TLS handshake failed: check ca_certs)" if self.cfg.tls else ""
        self._report(f"mqtt broker {self.cfg.where} unreachable{how}; retrying with backoff up to "
                     f"{self.cfg.retry_max_s:.0f} s (events wait in the log)")

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self._activity = time.monotonic()
        was_connected = self._connected.is_set()
        self._connected.clear()
        if was_connected and not self._stop.is_set():  # a refused login also ends here: already reported
            self._report(f"mqtt connection to {self.cfg.where} lost ({reason_code}); reconnecting",
                         logging.WARNING)

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        self._acks.append(mid)  # paho's thread, under paho's lock: hand over, nothing else
        self._wake.set()

    # -- the worker -----------------------------------------------------------------------------------
    def start(self) -> None:
        """Connect in the background (an unreachable broker is not an error) and start forwarding."""
        self.client.connect_async(self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive_s)
        self.client.loop_start()
        self._thread.start()

    def wake(self) -> None:
        """New events were stored: forward them now rather than at the next poll."""
        self._wake.set()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def last_seq(self) -> int:
        db = self._open_db()
        return db.last_seq if db else 0

    def _open_db(self) -> EventLog | None:
        with self._db_lock:
            return self._open_db_locked()

    def _open_db_locked(self) -> EventLog | None:
        if self._db is None and self.db_path.is_file():
            try:
                self._db = EventLog(self.db_path, readonly=True)
            except UserError as e:
                self._report(f"mqtt bridge: {e}")
                return None
            last = self._db.last_seq
            if last < self.acked_seq:  # a new log in place of the old one: its numbers start again
                log.warning("event log %s ends at seq %d but the bridge state says %d was acknowledged: "
                            "a new log; forwarding it from the start", self.db_path, last, self.acked_seq)
                self.acked_seq, self.next_seq = 0, 1
                self.state.save(0)
            events = self._db.query(since=max(last - 1, 0))
            self.model_id = next(((e.get("model") or {}).get("id") for e in events), None)
        return self._db

    def _run(self) -> None:
        next_beat = time.monotonic() + self.cfg.heartbeat_s
        last_save = 0.0
        while not self._stop.is_set():
            self._wake.wait(self.poll_s)
            self._wake.clear()
            try:
                self._take_acks()
                if self.connected and self._open_db() is not None:
                    self._pump()
                self._watchdog()
                if self.connected and time.monotonic() >= next_beat:
                    next_beat = time.monotonic() + self.cfg.heartbeat_s
                    self.client.publish(self.cfg.heartbeat_topic.format(device=self.cfg.device, stream=""),
                                        json.dumps(self.heartbeat()).encode(), qos=0)
                if time.monotonic() - last_save >= 1.0:
                    last_save = time.monotonic()
                    self.state.save(self.acked_seq)
            except Exception as e:  # never let the forwarding thread die silently
                self._report(f"mqtt bridge: {type(e).__name__}: {e}; retrying")
                time.sleep(self.poll_s)
        self._take_acks()
        self.state.save(self.acked_seq)

    def _watchdog(self) -> None:
        """Restart paho's network loop when it looks dead: connected but no acknowledgement for events in
        flight, or disconnected with no connection attempt, for much longer than keepalive and backoff
        allow. A dead network thread would otherwise never reconnect."""
        now, limit = time.monotonic(), 2 * self.cfg.keepalive_s + self.cfg.retry_max_s
        if self.connected:
            if not self._inflight or now - self._progress < limit:
                return
            why = f"no acknowledgement for {now - self._progress:.0f} s with {len(self._inflight)} events in flight"
        else:
            if now - self._activity < 2 * limit:
                return
            why = f"no connection attempt for {now - self._activity:.0f} s"
        log.warning("mqtt connection loop looks dead (%s): restarting it", why)
        self._activity = self._progress = now
        self.loop_restarts += 1
        self.client.loop_stop()
        self._connected.clear()
        self.client.connect_async(self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive_s)
        self.client.loop_start()

    def _take_acks(self) -> None:
        while self._acks:
            seq = self._inflight.pop(self._acks.popleft(), None)
            if seq is not None:
                self._progress = time.monotonic()
            if seq is not None and seq > self.acked_seq:
                self._done.add(seq)
                self.acked += 1
        while self.acked_seq + 1 in self._done:
            self._done.remove(self.acked_seq + 1)
            self.acked_seq += 1

    def _pump(self) -> None:
        room = self.cfg.window - len(self._inflight)
        if room <= 0:
            return
        for ev in self._db.since(self.next_seq - 1, limit=room):
            mid_model = (ev.get("model") or {}).get("id")
            if mid_model and mid_model != self.model_id:
                self.model_id = mid_model
                self.client.publish(self._status_topic, self._status("online"), qos=1, retain=True)
            topic = self.cfg.topic.format(device=self.cfg.device, stream=topic_safe(ev.get("stream", "")))
            info = self.client.publish(topic, encode_event(ev, self.cfg.format), qos=self.cfg.qos)
            if info.rc not in (self.mqtt.MQTT_ERR_SUCCESS, self.mqtt.MQTT_ERR_NO_CONN):
                break  # not queued: try again at the next wake
            if not self._inflight:
                self._progress = time.monotonic()
            self._inflight[info.mid] = int(ev["seq"])  # queued: paho resends it after a reconnect
            self.next_seq = int(ev["seq"]) + 1
            self.published += 1

    def heartbeat(self) -> dict[str, Any]:
        """The periodic heartbeat: the bridge's counters, and the pipeline's when `counters` was given."""
        last = self.last_seq
        doc: dict[str, Any] = {
            "device": self.cfg.device, "t_wall_ns": time.time_ns(),
            "uptime_s": round(time.monotonic() - self._started, 1),
            "events": {"last_seq": last, "acked_seq": self.acked_seq, "backlog": max(last - self.acked_seq, 0)},
            "mqtt": {"published": self.published, "acked": self.acked, "connects": self.connects,
                     "loop_restarts": self.loop_restarts},
        }
        if self.counters:
            doc["pipeline"] = self.counters()
        return doc

    def flush(self, timeout_s: float) -> bool:
        """Wait until the broker acknowledged every event in the log (True) or `timeout_s` passed."""
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            self._wake.set()
            if self.acked_seq >= self.last_seq and self._db is not None:
                return True
            time.sleep(0.05)
        return self.acked_seq >= self.last_seq

    def stop(self, timeout_s: float = 2.0) -> None:
        """Publish "offline" (retained), disconnect cleanly, save the acknowledged sequence number."""
        if self.connected:
            info = self.client.publish(self._status_topic, self._status("offline", "stopped"), qos=1, retain=True)
            try:
                info.wait_for_publish(timeout=timeout_s)
            except (RuntimeError, ValueError):
                pass
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        self.client.disconnect()
        self.client.loop_stop()
        if self._db is not None:
            self._db.close()
