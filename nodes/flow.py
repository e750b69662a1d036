"""`flow`: optical flow per face track between each crop and the crop `lag` frames back (edge.perception.flow)."""

from __future__ import annotations

import numpy as np

from edge.perception.flow import BACKENDS, LagBuffer, create_flow, optical_strain, resize_flow
from edge.runtime.messages import Message
from edge.runtime.node import Node, Param, Port, register_node


@register_node("flow")
class FlowNode(Node):
    """Dense flow (u, v in crop px) per track against the crop `lag` frames earlier."""

    inputs = {"crops": Port("crops", "aligned grey crops per track")}
    outputs = {"flows": Port("flows", "(N, 2, S', S') u, v per track; N may be 0")}
    params = {
        "backend": Param(str, "auto", "optical flow backend (auto: best this machine offers, logged)",
                         choices=("auto", *BACKENDS)),
        "backend_params": Param(dict, {}, "the backend's own parameters (edge.perception.flow: each class's defaults)"),
        "lag": Param(int, 3, "reference crop this many frames back on the same track", min=1),
        "scale": Param(float, 1.0, "output size as a fraction of the crop (vectors rescaled to output px)",
                       min=0.05, max=1.0),
        "strain": Param(bool, False, "also send optical strain magnitude `strain` (N, S', S') float32"),
    }

    @classmethod
    def ack_retain(cls, params: dict) -> int:
        # A restarted flow process gets the last `lag` crops again: its first new flow is the one the dead
        # process would have computed, not one against a younger reference crop (or none).
        return int(params["lag"])

    def setup(self) -> None:
        self.flow = create_flow(self.p.backend, **self.p.backend_params)
        self.log.info("flow backend %s %s, lag %d, scale %.3g", self.flow.name, self.flow.params, self.p.lag,
                      self.p.scale)
        self.buffers: dict[str, LagBuffer] = {}  # per stream: track ids are per camera

    def process(self, port: str, msg: Message) -> None:
        buf = self.buffers.setdefault(msg.stream, LagBuffer(self.p.lag))
        crops, ids = msg.arrays["crops"], msg.arrays["track_ids"]
        size = crops.shape[1] if crops.ndim == 3 and crops.shape[0] else int(msg.meta.get("crop_size", 128))
        out_size = max(1, round(size * self.p.scale))
        flows, out_ids, refs = [], [], []
        for crop, tid in zip(crops, ids, strict=True):
            crop = np.array(crop)  # received arrays are read-only views on the message frame
            ref = buf.push(int(tid), msg.frame, crop)
            if ref is None:  # a track's first crop: nothing to compare yet
                continue
            f = self.flow.calc(ref[1], crop)
            flows.append(resize_flow(f, out_size).transpose(2, 0, 1))
            out_ids.append(int(tid))
            refs.append(ref[0])
        for tid in msg.meta.get("ended", []):
            buf.end(tid)
        arrays = {
            "flows": np.ascontiguousarray(np.stack(flows) if flows else
                                          np.zeros((0, 2, out_size, out_size), np.float32), dtype=np.float32),
            "track_ids": np.asarray(out_ids, np.int32),
            "ref_frames": np.asarray(refs, np.int64),
        }
        if self.p.strain:
            arrays["strain"] = np.ascontiguousarray(
                [optical_strain(f.transpose(1, 2, 0)) for f in arrays["flows"]], dtype=np.float32,
            ).reshape(len(out_ids), out_size, out_size)
        meta = {"backend": self.flow.name, "lag": self.p.lag, "scale": out_size / size,
                "crop_size": size}
        self.emit("flows", msg.derive("flows", meta, arrays))
