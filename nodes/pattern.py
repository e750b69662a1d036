"""`pattern`: a synthetic test-pattern camera (moving shapes, frame counter), paced at `fps`."""

from __future__ import annotations

import time

import cv2
import numpy as np

from edge.runtime.messages import Message
from edge.runtime.node import Node, Param, Port, register_node


@register_node("pattern")
class PatternSource(Node):
    """Synthetic moving-shapes camera with capture timestamps (for runtime tests and the example graph)."""

    outputs = {"frames": Port("frame", "BGR test frames")}
    params = {
        "width": Param(int, 640, "frame width, px", min=16),
        "height": Param(int, 480, "frame height, px", min=16),
        "fps": Param(float, 30.0, "frame rate, Hz (0: as fast as possible)", min=0),
        "count": Param(int, 0, "frames to send, then end the stream (0: until stopped)", min=0),
        "stream": Param(str, "cam0", "stream id"),
    }

    def frame(self, i: int) -> np.ndarray:
        h, w = self.p.height, self.p.width
        img = np.empty((h, w, 3), np.uint8)
        img[:] = (40 + (i * 2) % 60, 40, 60)
        t = i / max(self.p.fps, 1.0)
        cx, cy = int(w / 2 + w / 3 * np.cos(t)), int(h / 2 + h / 3 * np.sin(1.3 * t))
        cv2.circle(img, (cx, cy), max(4, h // 10), (0, 200, 255), -1)
        cv2.putText(img, f"{i}", (8, h - 10), cv2.FONT_HERSHEY_SIMPLEX, max(0.4, h / 480), (255, 255, 255), 2)
        return img

    def run_source(self) -> None:
        period = 1.0 / self.p.fps if self.p.fps > 0 else 0.0
        t_next = time.monotonic()
        i = 0
        while not self.stopping and (self.p.count == 0 or i < self.p.count):
            if period:
                delay = t_next - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                t_next += period
            img = self.frame(i)
            self.emit("frames", Message("frame", self.p.stream, frame=i, t_mono_ns=time.monotonic_ns(),
                                        t_wall_ns=time.time_ns(), meta={"source": "pattern", "fps": self.p.fps},
                                        arrays={"image": img}))
            i += 1
