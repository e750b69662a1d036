"""Checks `facesleuth run` makes before it starts any node: the fixed endpoints a graph binds are free.

A second graph started while one runs (two demos, a demo beside a camera graph) would otherwise start
every node, load its models, and only then fail when the events node cannot bind 5571. Here it is one
line naming the endpoint and the `--set` that moves it, exit 2, before any process starts.

What is checked: the endpoints pinned in the graph file (`nodes.N.endpoints.PORT`) and the ones nodes
bind themselves, as their type declares them (Node.bound_endpoints: the events node's `pub` and
`replay`, the view node's HTTP port). Endpoints the supervisor picks (ipc files in a fresh run
directory, free tcp ports) cannot be taken. A check passed here can still lose a race with a program
that binds the port a moment later; the node's own bind then says so (edge.runtime.transport._bind).
"""

from __future__ import annotations

import errno
import socket
from dataclasses import dataclass
from pathlib import Path

from edge.errors import UserError
from edge.runtime.graph import Graph

# How far above a taken port to look for a free one to suggest.
SUGGEST_SPAN = 100


@dataclass(frozen=True)
class Bound:
    """One endpoint a node will bind: `key` is the param that sets it, or `endpoints.PORT` when pinned."""

    node: str
    key: str
    endpoint: str
    port_param: bool = False  # the param is a bare port number (the view's `port`), not an endpoint


def bound_endpoints(graph: Graph) -> list[Bound]:
    """Every fixed endpoint `graph`'s nodes bind, in node order."""
    out = []
    for n in graph.nodes.values():
        out += [Bound(n.name, f"endpoints.{port}", ep) for port, ep in n.endpoints.items()]
        for key, ep in n.cls.bound_endpoints(n.params).items():
            out.append(Bound(n.name, key, ep, isinstance(n.params.get(key), int)))
    return out


def _tcp_address(endpoint: str) -> tuple[int, str, int] | None:
    """(family, host, port) of a tcp:// endpoint with a fixed numeric port, else None."""
    if not endpoint.startswith("tcp://"):
        return None
    host, _, port = endpoint[len("tcp://"):].rpartition(":")
    if not port.isdigit() or int(port) == 0:
        return None
    host = host.strip("[]")
    host = {"*": "0.0.0.0", "localhost": "127.0.0.1"}.get(host, host)
    return (socket.AF_INET6 if ":" in host else socket.AF_INET), host, int(port)


def in_use(endpoint: str) -> bool:
    """Whether another program holds `endpoint` now (tcp: a listener on its port; ipc: a live socket
    file). Anything else that would make the bind fail (an address not on this machine) is left to the
    node's own bind, which names it."""
    addr = _tcp_address(endpoint)
    if addr is not None:
        family, host, port = addr
        with socket.socket(family, socket.SOCK_STREAM) as s:
            # As libzmq binds (SO_REUSEADDR on Linux): a port in TIME_WAIT after a run ended is free.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, port))
            except OSError as e:
                return e.errno == errno.EADDRINUSE
        return False
    if endpoint.startswith("ipc://"):
        path = Path(endpoint[len("ipc://"):])
        if not path.is_socket():
            return False
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            try:
                s.connect(str(path))
            except OSError:
                return False  # a stale file from a run that is gone: libzmq's bind replaces it
        return True
    return False


def _suggest(b: Bound, avoid: set[int]) -> str:
    """The value for `--set NODE.KEY=` that moves `b` to a free port near its own."""
    family, host, port = _tcp_address(b.endpoint)  # type: ignore[misc] - only tcp endpoints are suggested for
    for cand in range(port + 1, min(port + SUGGEST_SPAN, 65536)):
        if cand in avoid:
            continue
        ep = b.endpoint.rsplit(":", 1)[0] + f":{cand}"
        if not in_use(ep):
            avoid.add(cand)
            return str(cand) if b.port_param else ep
    return "PORT" if b.port_param else b.endpoint.rsplit(":", 1)[0] + ":PORT"


def check_endpoints_free(graph: Graph) -> None:
    """Raise UserError (one line, exit 2) naming every fixed endpoint of `graph` another program holds,
    and how to move each: `--set` for a param, the graph file's line for a pinned endpoint."""
    bound = bound_endpoints(graph)
    taken = [b for b in bound if in_use(b.endpoint)]
    if not taken:
        return
    avoid = {a[2] for a in map(_tcp_address, (b.endpoint for b in bound)) if a}
    what = ", ".join(f"{b.endpoint} ({b.node}.{b.key})" for b in taken)
    sets = [f"--set {b.node}.{b.key}={_suggest(b, avoid) if _tcp_address(b.endpoint) else 'ENDPOINT'}"
            for b in taken if not b.key.startswith("endpoints.")]
    edits = [f"nodes.{b.node}.{b.key}" for b in taken if b.key.startswith("endpoints.")]
    how = ([f"move {'it' if len(sets) == 1 else 'them'} with {' '.join(sets)}"] if sets else []) + \
          ([f"edit {', '.join(edits)} in {graph.path}"] if edits else [])
    raise UserError(f"{what} {'is' if len(taken) == 1 else 'are'} in use (another graph running? "
                    f"`facesleuth stats` shows it): {'; '.join(how)}")
