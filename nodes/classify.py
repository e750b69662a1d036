"""`classify`: the SOA classifier over each spotted micro interval -> a mer.event.

For each interval it computes the onset->apex flow exactly as training did (edge.data.preprocess, with the
flow backend and parameters recorded in the model file), runs the classifier through the one runtime
loader (TensorRT > PyTorch CUDA > ONNX Runtime > PyTorch CPU, whichever is present), and emits an event
with the label, per-class scores, confidence and the model's SOA angles. The scores are the mean over
the onset->apex flows to the apex frame and to the frames next to it, where the spot node sent them: the
apex is uncertain by a frame, and a single flow of sub-pixel motion under sensor noise can tip the label.
Intervals that are already queued are classified in one batch. A `provisional` interval (an open event
past its apex, sent by the spot node) has its model inputs computed at once; when the final interval
arrives with the same crops, only the classifier runs (the input flows were most of the event's
classification time).

Acknowledged delivery (edge.runtime.delivery): an interval counts as handled, and is acknowledged to the
spot node, only once the event made from it is acknowledged by the events node, i.e. stored in the log
(Node.ack_after "downstream", the default). A classify process that dies with events still on their way
therefore loses nothing: the spot node resends the intervals, and the events are made again under the
same delivery ids, which the log drops as repeats.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from edge.errors import UserError
from edge.runtime.messages import EVENT_SCHEMA_VERSION, Message
from edge.runtime.node import Node, Param, Port, register_node

DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "edge" / "weights" / "soa_synthetic_3c.pt"


def interval_inputs(spec: Any, onset: np.ndarray, apexes: list[np.ndarray]) -> np.ndarray:
    """(K, C, H, W) model inputs of one interval: onset -> each of its apex crops (edge.data.preprocess.
    model_input, as training)."""
    from edge.data.preprocess import model_input

    return np.stack([model_input(onset, apex, spec) for apex in apexes])


def interval_scores(predictor: Any, spec: Any, items: list[tuple[np.ndarray, list[np.ndarray]]],
                    inputs: list[np.ndarray | None] | None = None) -> np.ndarray:
    """Class probabilities (N, C) of N intervals, each given as (onset crop, [apex crop, crops next to it]):
    the mean over its onset->apex model inputs, one batch. `inputs[i]`, where given, are interval i's
    inputs already computed (interval_inputs)."""
    inputs = inputs or [None] * len(items)
    xs = [x if x is not None else interval_inputs(spec, onset, apexes)
          for (onset, apexes), x in zip(items, inputs, strict=True)]
    probs = predictor.predict(np.concatenate(xs)).probs
    bounds = np.cumsum([0] + [len(x) for x in xs])
    return np.stack([probs[a:b].mean(0) for a, b in zip(bounds[:-1], bounds[1:], strict=True)])


def _crops(m: Message) -> tuple[np.ndarray, list[np.ndarray]]:
    return m.arrays["onset"], [m.arrays["apex"], *m.arrays.get("apex_near", ())]


def _instant(meta: dict[str, Any], key: str) -> dict[str, int]:
    return {"frame": int(meta.get(key, -1)), "t_mono_ns": int(meta.get(f"t_{key}_ns", 0)),
            "t_wall_ns": int(meta.get(f"wall_{key}_ns", 0))}


def _stages(meta: dict[str, Any], t_offset: int) -> dict[str, float] | None:
    """The event's latency so far, by stage (ms): waiting for the frames that confirm the offset, those
    frames through capture, face, flow and spot, then classification (with its queue); the events node
    adds the rest. None when the interval does not carry the spot node's times."""
    t_close, t_sent = meta.get("t_close_ns"), meta.get("t_sent_ns")
    if not (t_offset and t_close and t_sent):
        return None
    now = time.monotonic_ns()
    return {"confirm": round((t_close - t_offset) / 1e6, 2), "perception": round((t_sent - t_close) / 1e6, 2),
            "classify": round((now - t_sent) / 1e6, 2)}


@register_node("classify")
class Classify(Node):
    """Classifies micro intervals with the SOA network; emits mer.event messages."""

    inputs = {"intervals": Port("intervals")}
    outputs = {"events": Port("event")}
    params = {
        "model": Param(Path, str(DEFAULT_MODEL), "model file or export (default: the shipped synthetic weights)"),
        "runtime": Param(str, "auto", "runtime to use",
                         choices=("auto", "tensorrt", "torch-cuda", "onnxruntime", "torch-cpu")),
        "precision": Param(str, "fp16", "TensorRT precision when an engine is built", choices=("fp32", "fp16", "int8")),
        "kinds": Param(list, ["micro"], "interval kinds published as events: micro, macro (both classified), "
                       "blink (published as it is, label 'blink'); [micro, macro, blink] to see everything seen"),
        "threads": Param(int, 1, "CPU threads for the model and its input flows (0: one per core); the "
                         "per-frame stages need the other cores", min=0),
        "debug_apex_crop": Param(bool, False, "OPT-IN: attach the aligned apex crop (PNG) to events"),
    }

    def setup(self) -> None:
        import cv2

        from edge.data.preprocess import PreprocessSpec, model_input
        from edge.model.runtime import open_model
        from edge.perception.geometry import CROP_SIZE

        if not Path(self.p.model).is_file():
            raise UserError(f"model not found: {self.p.model} (train one with `facesleuth train`, or use the "
                            "shipped weights)")
        if self.p.threads:
            cv2.setNumThreads(self.p.threads)
        self.predictor = open_model(self.p.model, prefer=None if self.p.runtime == "auto" else self.p.runtime,
                                    precision=self.p.precision, threads=self.p.threads)
        meta = self.predictor.meta
        info = meta.get("meta", meta)  # a model file's record nests its metadata; exports carry it flat
        self.spec = PreprocessSpec.from_meta(info)  # the flow backend + params training used
        self.model_info = {"id": str(meta.get("model_id", Path(self.p.model).stem)),
                           "angles_deg": [round(float(a), 2) for a in info.get("angles_deg", [])],
                           "runtime": self.predictor.runtime}
        self.log.info("model %s on %s, classes %s, angles %s deg", self.model_info["id"], self.predictor.runtime,
                      info.get("classes"), self.model_info["angles_deg"])
        self.ready: dict[tuple[str, int], tuple[np.ndarray, list[np.ndarray], np.ndarray]] = {}
        # One pass at start-up: the first call of the model-input flow and of the runtime allocates (and
        # on some runtimes compiles), which would otherwise land on the first event's latency.
        crop = np.zeros((CROP_SIZE, CROP_SIZE), np.uint8)
        self.predictor.predict(np.stack([model_input(crop, crop, self.spec)] * 3))  # an interval's batch

    def process(self, port: str, msg: Message) -> None:
        self.process_batch(port, [msg])

    def process_batch(self, port: str, msgs: list[Message]) -> None:
        todo = []
        for m in msgs:
            if m.meta.get("kind") == "provisional":
                self._prepare(m)
            elif m.meta.get("kind") == "blink" and "blink" in self.p.kinds:
                self.emit("events", self._event(m, None, []))  # a blink has no expression to classify
            elif m.meta.get("kind") in self.p.kinds:
                todo.append(m)
            else:  # the event closed as something this node does not classify
                self.ready.pop((m.stream, int(m.meta.get("track_id", -1))), None)
        if not todo:
            return
        items = [_crops(m) for m in todo]
        prepared = [self._prepared(m, c) for m, c in zip(todo, items, strict=True)]
        probs = interval_scores(self.predictor, self.spec, items, prepared)
        for m, p in zip(todo, probs, strict=True):
            self.emit("events", self._event(m, p, self.predictor.classes))

    def _prepare(self, m: Message) -> None:
        """A provisional interval (an open event past its apex): its model inputs now, while the spot node
        waits for the offset, so the event's latency holds only the classifier itself."""
        onset, apexes = _crops(m)
        key = (m.stream, int(m.meta.get("track_id", -1)))
        self.ready.pop(key, None)
        self.ready[key] = (onset, apexes, interval_inputs(self.spec, onset, apexes))
        while len(self.ready) > 64:  # tracks that ended with an event open
            self.ready.pop(next(iter(self.ready)))

    def _prepared(self, m: Message, crops: tuple[np.ndarray, list[np.ndarray]]) -> np.ndarray | None:
        """The inputs prepared for this interval's very crops, if any."""
        ready = self.ready.pop((m.stream, int(m.meta.get("track_id", -1))), None)
        if ready is None:
            return None
        onset, apexes, x = ready
        same = len(apexes) == len(crops[1]) and np.array_equal(onset, crops[0]) and all(
            np.array_equal(a, b) for a, b in zip(apexes, crops[1], strict=True))
        return x if same else None

    def _event(self, m: Message, probs: np.ndarray | None, classes: list[str]) -> Message:
        """The mer.event of interval m with class probabilities `probs` (None: a blink, not classified)."""
        meta = m.meta
        onset, apex, offset = (_instant(meta, key) for key in ("onset", "apex", "offset"))
        kind = meta.get("kind", "micro")
        ev: dict[str, Any] = {
            "schema": EVENT_SCHEMA_VERSION, "stream": m.stream, "track_id": int(meta.get("track_id", -1)),
            "kind": kind if kind in ("micro", "macro", "blink") else "other",
            "onset": onset, "apex": apex, "offset": offset,
            "duration_s": (offset["t_mono_ns"] - onset["t_mono_ns"]) / 1e9,
            "label": "blink", "scores": {}, "confidence": 1.0,
            "intensity": round(float(meta.get("intensity", 0.0)), 3),
            "box": [float(v) for v in meta.get("box", [])], "model": self.model_info,
            "rois": list(meta.get("rois", [])), "context": dict(meta.get("context", {})),
        }
        if probs is not None:
            k = int(np.argmax(probs))
            ev.update(label=classes[k], scores={c: round(float(p), 4) for c, p in zip(classes, probs, strict=True)},
                      confidence=round(float(probs[k]), 4))
        if self.p.debug_apex_crop:
            import cv2

            ev["debug_apex_crop"] = cv2.imencode(".png", np.ascontiguousarray(m.arrays["apex"]))[1].tobytes()
        # Capture time of the offset frame: the events node measures the end-to-end latency from it.
        t_offset = offset["t_mono_ns"] or m.t_mono_ns
        ev["stages_ms"] = _stages(meta, t_offset) if m.meta.get("clock", "live") == "live" else None
        out = m.derive("event", ev)
        out.t_mono_ns = t_offset
        out.frame = offset["frame"]
        ev["t_wall_ns"] = time.time_ns()
        return out
