"""`mqtt`: forward the event log to the MQTT broker a fleet already runs (store-and-forward, see edge.events.mqtt).

Connect it to the events node's `stored` output (a wake-up: the events themselves are read from the
log, so what was stored while the broker or this node was down is sent too):

    - name: mqtt
      type: mqtt
      params: {broker: "mqtts://broker.example:8883", db: ../runs/cam/events.db, username: jetson-07,
               ca_certs: /etc/facesleuth/ca.pem}      # password from $FACESLEUTH_MQTT_PASSWORD
    connections:
      - events.stored -> mqtt.events
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from edge.errors import UserError
from edge.events.mqtt import MqttBridge, MqttConfig
from edge.runtime.control import counters
from edge.runtime.messages import Message
from edge.runtime.node import Node, Param, Port, register_node
from edge.runtime.stats import StatsSubscriber


@register_node("mqtt")
class MqttSink(Node):
    """Forward every stored event to an MQTT broker: QoS 1, store-and-forward, status and heartbeat."""

    inputs = {"events": Port("event", "the events node's `stored` output (wakes the bridge)")}
    params = {
        "broker": Param(str, "mqtt://127.0.0.1:1883", "mqtt://HOST[:PORT], or mqtts:// for TLS"),
        "db": Param(Path, "events.db", "the events node's SQLite log (relative to the graph file)"),
        "device": Param(str, "", "device id in topics and status (default: the host name)"),
        "topic": Param(str, "facesleuth/{device}/{stream}/events", "event topic ({device}, {stream})"),
        "status_topic": Param(str, "facesleuth/{device}/status", "retained online/offline status topic"),
        "heartbeat_topic": Param(str, "facesleuth/{device}/heartbeat", "heartbeat topic"),
        "format": Param(str, "json", "event payload encoding", choices=("json", "msgpack")),
        "qos": Param(int, 1, "MQTT QoS of events", choices=(1, 2)),
        "client_id": Param(str, "", "MQTT client id (default: facesleuth-<device>)"),
        "username": Param(str, None, "broker user name"),
        "password_env": Param(str, "FACESLEUTH_MQTT_PASSWORD", "environment variable holding the password"),
        "ca_certs": Param(Path, None, "CA bundle for TLS (setting it turns TLS on)"),
        "certfile": Param(Path, None, "client certificate for TLS"),
        "keyfile": Param(Path, None, "client key for TLS"),
        "tls_insecure": Param(bool, False, "skip the broker host name check (testing only)"),
        "keepalive_s": Param(int, 30, "MQTT keepalive, s", min=5),
        "heartbeat_s": Param(float, 30.0, "heartbeat period, s", min=0.1),
        "window": Param(int, 64, "events in flight before waiting for acknowledgements", min=1),
        "retry_max_s": Param(float, 30.0, "longest wait between reconnection attempts, s", min=1),
        "state": Param(Path, None, "acknowledged-sequence file (default: next to the log)"),
        "flush_timeout_s": Param(float, 10.0, "at the end of a batch run, wait this long for acknowledgements",
                                 min=0),
    }

    def setup(self) -> None:
        p = self.p
        password = os.environ.get(p.password_env) if p.password_env else None
        if not p.username and password:
            raise UserError(f"${p.password_env} is set but no username is: set the mqtt node's `username`")
        cfg = MqttConfig(broker=p.broker, device=p.device, topic=p.topic, status_topic=p.status_topic,
                         heartbeat_topic=p.heartbeat_topic, format=p.format, qos=p.qos, client_id=p.client_id,
                         username=p.username or None, password=password, ca_certs=p.ca_certs, certfile=p.certfile,
                         keyfile=p.keyfile, tls_insecure=p.tls_insecure, keepalive_s=p.keepalive_s,
                         heartbeat_s=p.heartbeat_s, window=p.window, retry_max_s=p.retry_max_s,
                         extra_status={"graph": self.run_info.get("graph", "")})
        stats_ep = self.run_info.get("stats")
        # Read only by the bridge's thread (its heartbeat), closed once that thread has stopped.
        self.stats = StatsSubscriber(stats_ep) if stats_ep else None
        self.bridge = MqttBridge(cfg, p.db, p.state, counters=self._counters if self.stats else None)
        self.bridge.start()
        self.log.info("forwarding %s to %s (from seq %d)", p.db, cfg.where, self.bridge.acked_seq + 1)

    def _counters(self) -> dict[str, Any]:
        """Every node's heartbeat counters from the supervisor's newest stats snapshot."""
        snap = self.stats.latest()
        return {name: counters(s) for name, s in snap["nodes"].items()} if snap else {}

    def process(self, port: str, msg: Message) -> None:
        self.bridge.wake()

    def process_batch(self, port: str, msgs: list[Message]) -> None:
        self.bridge.wake()

    def end_of_stream(self) -> None:
        if not self.bridge.flush(self.p.flush_timeout_s):
            backlog = self.bridge.last_seq - self.bridge.acked_seq
            self.log.warning("%d events not yet acknowledged by %s; they stay in the log and go out on the "
                             "next start", backlog, self.bridge.cfg.where)

    def teardown(self) -> None:
        if getattr(self, "bridge", None):
            self.bridge.stop()
        if getattr(self, "stats", None):
            self.stats.close()
