"""`facesleuth run GRAPH --view [PORT]`: a `view` node added to a loaded graph, subscribed to its streams.

What it subscribes to: the first crops output (the face boxes are in the pixels of the frames that node
sees, so the frames are the ones linked into it), the first flows output, and the events as stored
(an `events` node's `stored`: with their sequence numbers) or else the first event output. Frames,
crops and flows are latest-wins links, events lossless, as in any graph.
"""

from __future__ import annotations

import socket

from edge.errors import UserError
from edge.runtime.graph import Graph, Link, NodeSpec, Restart
from edge.runtime.node import get_node_class

# The page can go down and come back without taking the pipeline with it.
VIEW_RESTART = Restart(policy="on-failure", max_restarts=3, backoff_s=0.5)


def _check_port_free(host: str, port: int) -> None:
    """Fail now, in one line, if the port is taken (not after every node has started)."""
    if port == 0:
        return
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            raise UserError(f"--view: port {port} on {host} is not free ({e.strerror}): give another, "
                            "e.g. --view 8571, or 0 for any free port") from None


def add_view(graph: Graph, port: int | None = None) -> str:
    """Add a view node to `graph` (on `port`, or the node's default) wired to its streams; its name."""
    views = [n.name for n in graph.nodes.values() if n.type == "view"]
    if views:
        raise UserError(f"--view: graph {graph.name} has a view node already ({views[0]}): drop --view, or "
                        f"move it with --set {views[0]}.port=N")
    cls = get_node_class("view")
    params = cls.resolve_params({} if port is None else {"port": port})
    outputs = [(n, p, spec.type) for n in graph.nodes.values() for p, spec in n.cls.outputs.items()]

    def first(kind: str, node_type: str | None = None, port_name: str | None = None) -> tuple[str, str] | None:
        return next(((n.name, p) for n, p, t in outputs if t == kind and node_type in (None, n.type)
                     and port_name in (None, p)), None)

    crops = first("crops")
    frames = next(((lk.src, lk.src_port) for lk in graph.links if crops and lk.dst == crops[0] and lk.type == "frame"),
                  None) or first("frame")
    if frames is None:
        raise UserError(f"--view: graph {graph.name} has no frame stream to show")
    sources = {"frames": frames, "crops": crops, "flows": first("flows"),
               "events": first("event", "events", "stored") or first("event")}
    _check_port_free(params["bind"], params["port"])
    name = next(n for n in ("view", *(f"view{i}" for i in range(2, 100))) if n not in graph.nodes)
    graph.nodes[name] = NodeSpec(name, "view", cls, params, VIEW_RESTART)
    for port_name, src in sources.items():
        if src is not None:
            kind = cls.inputs[port_name].type
            graph.links.append(Link(src[0], src[1], name, port_name, kind,
                                    "lossless" if kind == "event" else "latest", 1000))
    return name
