"""Node types used only by the runtime tests, loaded the way a third-party plugin is: through the
`facesleuth.nodes` entry point group (tests/conftest.py writes a dist-info for this module and puts it
on the node processes' PYTHONPATH). No OpenCV here, so node processes start fast.

    test_arrays  source: deterministic arrays of several dtypes and layouts per frame (`make_arrays`)
    test_relay   passes every message on untouched (re-sends the received read-only views)
    test_record  sink: one JSON line per message (frame, seq, pid, sha256 per array) to `path`
    test_crash   source: sends frames, then exits the process with `code` after `after_s`
    test_params  sink with a required param and a choice param (validation tests)
    test_events  source: `count` mer.event messages at `rate` per second on `stream` (event sink tests)
    test_fail    sink: process() raises on every message
    test_intervals  source: `count` small intervals messages (acknowledged delivery tests)
    test_classify   intervals -> one mer.event each, like the classify node without a model
    test_crops      source: `count` crops messages of one track, a texture sliding 1 px a frame
    test_flow_events  flows -> one mer.event per tracked flow, labelled with the flow's rounded mean
    test_tally      intervals -> one mer.event each, labelled with how many came before (state: checkpoints)
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np

from edge.runtime.messages import Message
from edge.runtime.node import Node, Param, Port, register_node


def make_arrays(i: int, h: int = 48, w: int = 64) -> dict[str, np.ndarray]:
    """The arrays of frame `i`: C- and F-ordered, big-endian, empty and 0-d cases, all seeded by `i`."""
    rng = np.random.default_rng(1000 + i)
    return {
        "image": rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
        "depth": rng.standard_normal((h, w)).astype(np.float32),
        "ids": rng.integers(-(2**62), 2**62, 7, dtype=np.int64),
        "big_endian": rng.integers(-30000, 30000, (5, 3)).astype(">i2"),
        "fortran": np.asfortranarray(rng.standard_normal((4, 6))),  # sent as its C-order copy
        "empty": np.zeros((0, 4), np.float32),
        "scalar": np.array(i, np.int32),
    }


def digest(arr: np.ndarray) -> list:
    """[dtype.str, shape, sha256 of the C-order bytes]: what must survive the trip unchanged."""
    return [arr.dtype.str, list(arr.shape), hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest()]


@register_node("test_arrays")
class ArraysSource(Node):
    """Deterministic multi-dtype arrays per frame (runtime tests)."""

    outputs = {"frames": Port("frame")}
    params = {
        "count": Param(int, 10, "frames to send (0: until stopped)", min=0),
        "fps": Param(float, 0.0, "rate, Hz (0: as fast as possible)", min=0),
        "height": Param(int, 48, "px", min=1),
        "width": Param(int, 64, "px", min=1),
    }

    def run_source(self) -> None:
        i = 0
        while not self.stopping and (self.p.count == 0 or i < self.p.count):
            arrays = make_arrays(i, self.p.height, self.p.width)
            self.emit("frames", Message("frame", "cam0", frame=i, t_mono_ns=time.monotonic_ns(),
                                        t_wall_ns=time.time_ns(), meta={"source": "test", "fps": self.p.fps},
                                        arrays=arrays))
            i += 1
            if self.p.fps:
                time.sleep(1.0 / self.p.fps)


@register_node("test_relay")
class Relay(Node):
    """Re-sends every message unchanged; `teardown_s` keeps the process alive after its end of stream
    (until a stop); `eos_delay_s` holds its first process between its inputs' end and its own."""

    inputs = {"frames": Port("frame")}
    outputs = {"frames": Port("frame")}
    params = {"teardown_s": Param(float, 0.0, "sleep in teardown, s", min=0),
              "eos_delay_s": Param(float, 0.0, "sleep before sending the end of stream (first process), s", min=0)}

    def process(self, port: str, msg: Message) -> None:
        self.emit("frames", msg.derive("frame", dict(msg.meta), dict(msg.arrays)))

    def end_of_stream(self) -> None:
        t_end = time.monotonic() + (self.p.eos_delay_s if not self.run_info.get("restarts") else 0.0)
        while time.monotonic() < t_end and not self.stopping:
            time.sleep(0.02)

    def teardown(self) -> None:
        t_end = time.monotonic() + self.p.teardown_s
        while time.monotonic() < t_end and not self.stopping:  # a stop ends the wait
            time.sleep(0.02)


@register_node("test_record")
class Record(Node):
    """Writes one JSON line per received message; `delay_s` makes it a slow consumer."""

    inputs = {"messages": Port("any")}
    params = {
        "path": Param(Path, description="JSON lines output"),
        "delay_s": Param(float, 0.0, "sleep per message, s", min=0),
        "retain": Param(int, 0, "handled messages left unacknowledged until the end (Node.ack_retain)", min=0),
    }

    @classmethod
    def ack_retain(cls, params: dict) -> int:
        return int(params["retain"])

    def setup(self) -> None:
        self.f = open(self.p.path, "a")  # noqa: SIM115 (closed in teardown)

    def process(self, port: str, msg: Message) -> None:
        rec = {"frame": msg.frame, "seq": msg.seq, "type": msg.type, "pid": os.getpid(), "t": time.monotonic(),
               "arrays": {k: digest(v) for k, v in msg.arrays.items()}}
        self.f.write(json.dumps(rec) + "\n")
        self.f.flush()
        if self.p.delay_s:
            time.sleep(self.p.delay_s)

    def teardown(self) -> None:
        self.f.close()


@register_node("test_crash")
class Crash(Node):
    """Sends small frames at 20 Hz, then kills its own process with exit code `code`."""

    outputs = {"frames": Port("frame")}
    params = {"after_s": Param(float, 0.3, "s"), "code": Param(int, 7, "exit code")}

    def run_source(self) -> None:
        t_end = time.monotonic() + self.p.after_s
        i = 0
        while not self.stopping:
            if time.monotonic() >= t_end:
                os._exit(self.p.code)  # a hard crash: no teardown, no eos
            self.emit("frames", Message("frame", frame=i, arrays={"image": np.zeros((4, 4), np.uint8)}))
            i += 1
            time.sleep(0.05)


@register_node("test_params")
class Params(Node):
    """A sink with a required and a choice param."""

    inputs = {"frames": Port("frame")}
    params = {
        "level": Param(int, description="required"),
        "mode": Param(str, "fast", "a choice", choices=("fast", "exact")),
        "ratio": Param(float, 0.5, "bounded", min=0.0, max=1.0),
    }

    def process(self, port: str, msg: Message) -> None:
        pass


@register_node("test_events")
class EventsSource(Node):
    """mer.event messages shaped like the classify node's, at a steady rate (event sink tests)."""

    outputs = {"events": Port("event")}
    params = {
        "count": Param(int, 20, "events to send", min=1),
        "rate": Param(float, 20.0, "events per second", min=0.1),
        "stream": Param(str, "cam0", "stream id"),
        "go_file": Param(Path, None, "wait until this file exists before sending"),
    }

    def run_source(self) -> None:
        _wait_for_file(self.p.go_file, self)
        for i in range(self.p.count):
            if self.stopping:
                return
            now = time.monotonic_ns()
            instant = {"frame": i * 10, "t_mono_ns": now, "t_wall_ns": time.time_ns()}
            ev = {"schema": 1, "stream": self.p.stream, "track_id": i % 3, "kind": "micro", "label": "surprise",
                  "scores": {"negative": 0.1, "positive": 0.1, "surprise": 0.8}, "confidence": 0.8,
                  "onset": instant, "apex": instant, "offset": instant, "duration_s": 0.3, "intensity": 1.0,
                  "box": [0.0, 0.0, 10.0, 10.0], "model": {"id": "soa-test", "angles_deg": [88.0], "runtime": "test"},
                  "rois": ["brows"], "t_wall_ns": time.time_ns()}
            self.emit("events", Message("event", self.p.stream, frame=i * 10, t_mono_ns=now,
                                        t_wall_ns=time.time_ns(), meta=ev))
            time.sleep(1.0 / self.p.rate)


@register_node("test_fail")
class Fail(Node):
    """A sink whose process() raises on every message (a node broken for its input)."""

    inputs = {"messages": Port("any")}

    def process(self, port: str, msg: Message) -> None:
        raise ValueError(f"cannot handle frame {msg.frame}")


def _wait_for_file(path: str | None, node: Node) -> None:
    while path and not Path(path).exists() and not node.stopping:
        time.sleep(0.02)


@register_node("test_intervals")
class IntervalsSource(Node):
    """`count` intervals messages with small onset/apex crops, frame 10 * i."""

    outputs = {"intervals": Port("intervals")}
    params = {
        "count": Param(int, 5, "intervals to send", min=1),
        "rate": Param(float, 50.0, "per second", min=0.1),
        "go_file": Param(Path, None, "wait until this file exists before sending"),
    }

    def run_source(self) -> None:
        _wait_for_file(self.p.go_file, self)
        for i in range(self.p.count):
            if self.stopping:
                return
            crop = np.full((16, 16), i, np.uint8)
            self.emit("intervals", Message("intervals", frame=i * 10, t_mono_ns=time.monotonic_ns(),
                                           meta={"track_id": i, "kind": "micro", "onset": i * 10},
                                           arrays={"onset": crop, "apex": crop}))
            time.sleep(1.0 / self.p.rate)


@register_node("test_classify")
class FakeClassify(Node):
    """One mer.event per interval, derived from it (so its delivery id follows the interval's)."""

    inputs = {"intervals": Port("intervals")}
    outputs = {"events": Port("event")}

    def process(self, port: str, msg: Message) -> None:
        instant = {"frame": msg.frame, "t_mono_ns": msg.t_mono_ns, "t_wall_ns": 0}
        ev = {"stream": msg.stream, "track_id": int(msg.meta["track_id"]), "kind": "micro", "label": "surprise",
              "scores": {"surprise": 1.0}, "confidence": 1.0, "onset": instant, "apex": instant, "offset": instant,
              "duration_s": 0.0, "intensity": float(msg.arrays["apex"][0, 0]), "box": [], "rois": [],
              "model": {"id": "test", "angles_deg": [], "runtime": "test"}, "t_wall_ns": time.time_ns()}
        self.emit("events", msg.derive("event", ev))


@register_node("test_tally")
class Tally(FakeClassify):
    """As test_classify, its label the number of intervals seen so far: state no window of inputs rebuilds,
    kept across a restart only by its checkpoints (Node.checkpoint_every)."""

    params = {"checkpoint_every": Param(int, 3, "checkpoint every this many inputs (0: never)", min=0)}

    @classmethod
    def checkpoint_every(cls, params: dict) -> int:
        return int(params["checkpoint_every"])

    def setup(self) -> None:
        self.seen = 0

    def save_state(self) -> int:
        return self.seen

    def load_state(self, state: int) -> None:
        self.seen = state

    def process(self, port: str, msg: Message) -> None:
        self.seen += 1
        ev = {"stream": msg.stream, "track_id": int(msg.meta["track_id"]), "kind": "micro", "label": str(self.seen),
              "onset": {"frame": msg.frame}, "apex": {"frame": msg.frame}, "offset": {"frame": msg.frame},
              "scores": {}, "confidence": 1.0, "duration_s": 0.0, "intensity": 0.0, "box": [], "rois": [],
              "model": {"id": "test", "angles_deg": [], "runtime": "test"}, "t_wall_ns": time.time_ns()}
        self.emit("events", msg.derive("event", ev))


@register_node("test_crops")
class CropsSource(Node):
    """`count` crops messages (track 0, 32x32) of a random texture that slides one px a frame (flow tests)."""

    outputs = {"crops": Port("crops")}
    params = {
        "count": Param(int, 30, "crops to send", min=1),
        "rate": Param(float, 30.0, "per second", min=0.1),
    }

    def run_source(self) -> None:
        texture = np.random.default_rng(7).integers(0, 256, (32, 96), dtype=np.uint8)
        for i in range(self.p.count):
            if self.stopping:
                return
            crop = np.ascontiguousarray(texture[:, i % 64:i % 64 + 32])[None]
            self.emit("crops", Message("crops", frame=i, t_mono_ns=time.monotonic_ns(),
                                       meta={"crop_size": 32, "ended": [], "head_motion": [0.0]},
                                       arrays={"crops": crop, "track_ids": np.zeros(1, np.int32)}))
            time.sleep(1.0 / self.p.rate)


@register_node("test_flow_events")
class FlowEvents(Node):
    """One mer.event per track in each flows message, its label the mean |flow| and its apex the reference
    frame, so that a flow computed against another reference frame is another event."""

    inputs = {"flows": Port("flows")}
    outputs = {"events": Port("event")}

    def process(self, port: str, msg: Message) -> None:
        for flow, tid, ref in zip(msg.arrays["flows"], msg.arrays["track_ids"], msg.arrays["ref_frames"], strict=True):
            at = {"frame": msg.frame, "t_mono_ns": msg.t_mono_ns, "t_wall_ns": 0}
            ev = {"stream": msg.stream, "track_id": int(tid), "kind": "micro", "label": f"{np.abs(flow).mean():.2f}",
                  "scores": {}, "confidence": 1.0, "onset": at, "apex": {**at, "frame": int(ref)}, "offset": at,
                  "duration_s": 0.0, "intensity": 0.0, "box": [], "rois": [],
                  "model": {"id": "test", "angles_deg": [], "runtime": "test"}, "t_wall_ns": time.time_ns()}
            self.emit("events", msg.derive("event", ev))
