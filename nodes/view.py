"""`view`: the live view, a local web page of what the graph sees (edge.live; docs/live-view.md).

A sink like any subscriber: latest-wins on frames, crops and flows (when the browser or this process is
slow, it skips to the newest and the producers never wait), lossless on events (a handful a minute).
`facesleuth run GRAPH --view [PORT]` adds one wired to the graph's streams (edge.live.wiring); a graph
file can also name it:

    - name: view
      type: view
      params: {port: 8570}
    connections:
      - capture.frames -> view.frames
      - face.crops -> view.crops
      - flow.flows -> view.flows
      - events.stored -> view.events
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edge.errors import UserError
from edge.live import DEFAULT_PORT
from edge.live.server import LiveServer, bind_is_loopback, read_token, tls_context
from edge.live.state import LiveState
from edge.runtime.messages import Message
from edge.runtime.node import Node, Param, Port, register_node


@register_node("view")
class ViewNode(Node):
    """Live view in the browser: frames with boxes, landmarks and ROIs, flow, ROI-motion plot, events."""

    inputs = {"frames": Port("frame", "the frames the face node sees"),
              "crops": Port("crops", "face boxes, landmarks, aligned crops"),
              "flows": Port("flows", "flow per track (shown as colour and as the ROI-motion plot)"),
              "events": Port("event", "events as they are published")}
    params = {
        "port": Param(int, DEFAULT_PORT, "HTTP port (0: any free port; the URL is logged)", min=0, max=65535),
        "bind": Param(str, "127.0.0.1", "listen address; anything but loopback needs tls_cert, tls_key and "
                                        "token_file"),
        "max_fps": Param(float, 15.0, "frames a second sent to each browser, at most", min=0.5, max=120),
        "quality": Param(int, 80, "JPEG quality", min=10, max=100),
        "flow_max": Param(float, 1.0, "flow magnitude shown at full colour, crop px", min=0.01),
        "stream": Param(str, "", "the stream shown (default: the first seen)"),
        "tls_cert": Param(Path, None, "TLS certificate (PEM) for a non-loopback bind"),
        "tls_key": Param(Path, None, "TLS private key (PEM) for a non-loopback bind"),
        "token_file": Param(Path, None, "file with the access token (16+ characters) for a non-loopback bind"),
    }

    @classmethod
    def bound_endpoints(cls, params: dict[str, Any]) -> dict[str, str]:
        host = params["bind"]
        return {"port": f"tcp://{f'[{host}]' if ':' in host else host}:{params['port']}"} if params["port"] else {}

    @classmethod
    def check_params(cls, params: dict[str, Any]) -> None:
        if not bind_is_loopback(params["bind"]):
            missing = [k for k in ("tls_cert", "tls_key", "token_file") if not params[k]]
            if missing:
                raise UserError(f"param 'bind': {params['bind']} is not loopback: no pixels leave this machine "
                                f"without TLS and a token: set {', '.join(missing)}")
        if bool(params["tls_cert"]) != bool(params["tls_key"]):
            raise UserError("params 'tls_cert' and 'tls_key': set both or neither")

    def setup(self) -> None:
        self.check_params(vars(self.p))
        tls = tls_context(self.p.tls_cert, self.p.tls_key) if self.p.tls_cert else None
        token = read_token(self.p.token_file) if self.p.token_file else None
        connected = self.run_info.get("inputs", list(self.inputs))
        self.state = LiveState(self.p.stream, self.p.flow_max, self.p.quality, has_crops="crops" in connected)
        self.server = LiveServer(self.state, self.p.bind, self.p.port, self.p.max_fps, tls, token)
        self.server.start()
        self.log.info("live view on %s", self.server.url)

    def process(self, port: str, msg: Message) -> None:
        if port == "frames":
            self.state.add_frame(msg)
        elif port == "crops":
            self.state.add_crops(msg)
        elif port == "flows":
            self.state.add_flows(msg)
        else:
            self.state.add_event(msg)

    def end_of_stream(self) -> None:
        self.state.end()

    def teardown(self) -> None:
        if hasattr(self, "server"):
            self.server.stop()
