"""`capture`: frames from a camera, GStreamer pipeline, video file, frame folder or the synthetic source."""

from __future__ import annotations

import json
from pathlib import Path

from edge.errors import Unavailable, UserError
from edge.perception.capture import KINDS, LiveSource, list_cameras, open_source
from edge.runtime.messages import Message
from edge.runtime.node import Node, Param, Port, register_node


@register_node("capture")
class CaptureNode(Node):
    """Camera / GStreamer / file / folder / synthetic frames with capture timestamps; ends with a file."""

    outputs = {"frames": Port("frame", "BGR frames with capture timestamps")}
    params = {
        "kind": Param(str, "auto", "source kind (auto: guessed from `path`)", choices=("auto", *KINDS)),
        "path": Param(str, "0", "camera index or /dev path, GStreamer pipeline, video file, frame folder, "
                                "or 'synthetic'"),
        "width": Param(int, 0, "requested camera width / synthetic width, px (0: device default)", min=0),
        "height": Param(int, 0, "requested camera height / synthetic height, px (0: device default)", min=0),
        "fps": Param(float, 0.0, "requested camera fps; rate of a folder (default 30) or synthetic; "
                                 "overrides a file's own (0: source default)", min=0),
        "pace": Param(bool, True, "play stored sources in real time (false: as fast as possible)"),
        "loop": Param(bool, False, "restart a stored source at its end"),
        "count": Param(int, 0, "end after this many frames (0: at the source's end)", min=0),
        "max_reopen": Param(int, 0, "failed reopen attempts of a camera lost mid-run before giving up (0: keep "
                                    "trying); one absent at start fails the run at once", min=0),
        "mjpg": Param(bool, True, "ask a V4L2 camera for MJPG (full frame rate at high resolutions)"),
        "synthetic": Param(dict, {}, "SyntheticVideo options: preset, seed, duration_s, faces, script"),
        "stream": Param(str, "cam0", "stream id carried by every message"),
        "truth": Param(Path, None, "synthetic source only: write its ground-truth intervals (JSON) here"),
    }

    def setup(self) -> None:
        p = self.p
        source = "synthetic" if p.kind == "synthetic" else p.path
        self.src = open_source(p.kind, source, width=p.width, height=p.height, fps=p.fps, pace=p.pace,
                               loop=p.loop, max_reopen=p.max_reopen, mjpg=p.mjpg, synth=p.synthetic,
                               should_stop=lambda: self.stopping)
        if isinstance(self.src, LiveSource):
            try:
                self.src.open_first()
            except Unavailable as e:  # setup's Unavailable is not retried: the run ends with this line, exit 1
                if self.src.name.startswith("camera"):
                    present = ", ".join(list_cameras()) or "none"
                    raise Unavailable(f"{e}: connect one, or choose another with --set {self.name}.path=DEVICE "
                                      f"(video devices present: {present})") from None
                raise
        self.log.info("source %s (%s, %.3g fps nominal)", self.src.name, self.src.kind, self.src.fps)
        if p.truth:
            if not hasattr(self.src, "truth"):
                raise UserError("`truth` is only available for the synthetic source")
            Path(p.truth).parent.mkdir(parents=True, exist_ok=True)
            Path(p.truth).write_text(json.dumps({"fps": self.src.fps, "stream": p.stream,
                                                 "intervals": self.src.truth}, indent=1, default=float))

    def run_source(self) -> None:
        meta = {"source": self.src.name, "fps": self.src.fps, "clock": "media" if self.src.media_clock else "live"}
        for image, t_mono, t_wall, index in self.src:
            self.emit("frames", Message("frame", self.p.stream, frame=index, t_mono_ns=t_mono,
                                        t_wall_ns=t_wall, meta=meta, arrays={"image": image}))
            if self.p.count and index + 1 >= self.p.count:
                break
        s = self.src.stats
        self.log.info("source ended: %d frames, %d unreadable skipped, %d reopens", s["frames"], s["skipped"],
                      s["reopened"])

    def teardown(self) -> None:
        if getattr(self, "src", None) is not None:
            self.src.close()
