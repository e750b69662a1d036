"""`monitor`: a sink that logs the rate and end-to-end latency of any stream every few seconds."""

from __future__ import annotations

import time

import numpy as np

from edge.runtime.messages import Message
from edge.runtime.node import Node, Param, Port, register_node


@register_node("monitor")
class Monitor(Node):
    """Logs messages/s and capture-to-here latency (p50/p99) of whatever it receives."""

    inputs = {"messages": Port("any")}
    params = {"period_s": Param(float, 2.0, "report period, s", min=0.1)}

    def setup(self) -> None:
        self.latencies: list[float] = []
        self.count = 0
        self.t_report = time.monotonic()

    def process(self, port: str, msg: Message) -> None:
        self.count += 1
        latency = msg.latency_ms()
        if latency is not None:
            self.latencies.append(latency)
        now = time.monotonic()
        if now - self.t_report >= self.p.period_s:
            self.report(now - self.t_report, msg)
            self.t_report = now

    def report(self, dt: float, msg: Message | None = None) -> None:
        lat = np.array(self.latencies or [0.0])
        shape = " ".join(f"{k}={list(v.shape)}" for k, v in msg.arrays.items()) if msg else ""
        self.log.info("%.1f msg/s, latency p50 %.2f ms p99 %.2f ms, frame %s %s", self.count / dt,
                      np.percentile(lat, 50), np.percentile(lat, 99), msg.frame if msg else "-", shape)
        self.count, self.latencies = 0, []
