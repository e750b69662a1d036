"""`resize`: grey-convert and resize frames (a small processing stage for the example graph)."""

from __future__ import annotations

import cv2

from edge.runtime.messages import Message
from edge.runtime.node import Node, Param, Port, register_node


@register_node("resize")
class Resize(Node):
    """Resize (and optionally grey-convert) frames."""

    inputs = {"frames": Port("frame")}
    outputs = {"frames": Port("frame")}
    params = {
        "width": Param(int, 320, "output width, px", min=1),
        "height": Param(int, 240, "output height, px", min=1),
        "grey": Param(bool, True, "convert to grey"),
    }

    def process(self, port: str, msg: Message) -> None:
        img = msg.arrays["image"]
        if self.p.grey and img.ndim == 3:
            img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
        img = cv2.resize(img, (self.p.width, self.p.height), interpolation=cv2.INTER_AREA)
        self.emit("frames", msg.derive("frame", dict(msg.meta), {"image": img}))
