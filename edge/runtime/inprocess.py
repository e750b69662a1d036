"""Run a chain of node instances in this process: no sockets, no processes, the same input policies.

    face, flow, spot = (get_node_class(t).for_test(t) for t in ("face", "flow", "spot"))
    for n in (face, flow, spot):
        n.setup()
    intervals = run_chain([face, flow, spot], (("frames", m) for m in frames))

Routing is by port name, as a graph wires the pipeline: a message on port P (from the source or a node)
goes to every later node with an input named P, up to and including the first later node that itself has
an output named P (which makes its own stream P for the nodes after it). So face.crops reaches flow and spot,
flow.flows reaches spot. Each node's declared input sync (edge.runtime.sync) is applied exactly as the node runner
applies it; at the end each node's pending inputs are flushed and its end_of_stream() is called, in chain
order. Unlike the node runner, an exception in process() is raised, not counted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from edge.runtime.messages import Message
from edge.runtime.node import Node
from edge.runtime.sync import InputSync, deliver


def run_chain(nodes: Sequence[Node], source: Iterable[tuple[str, Message]]) -> list[tuple[str, Message]]:
    """Feed `source`'s (port, message) pairs through `nodes` (set up by the caller, who also tears them
    down); returns what the last node emitted, as (port, message). Each node's own emit callback (e.g. the
    `.emitted` list of Node.for_test) still sees everything it emits."""
    syncs = [InputSync(n) for n in nodes]
    last: list[tuple[str, Message]] = []

    def route(i: int, port: str, msg: Message) -> None:  # emitted by nodes[i] (i = -1: the source)
        for j in range(i + 1, len(nodes)):
            if port in nodes[j].inputs:
                for stage, batch in syncs[j].add(port, [msg]):
                    deliver(nodes[j], stage, batch)
            if port in nodes[j].outputs:
                break

    def tee(i: int, own: Callable[[str, Message], None]) -> Callable[[str, Message], None]:
        def emit(port: str, msg: Message) -> None:
            own(port, msg)
            if i == len(nodes) - 1:
                last.append((port, msg))
            route(i, port, msg)

        return emit

    own_emits = [n._emit for n in nodes]
    try:
        for i, n in enumerate(nodes):
            n._emit = tee(i, own_emits[i])
        for port, msg in source:
            route(-1, port, msg)
        for n, sync in zip(nodes, syncs, strict=True):
            for stage, batch in sync.flush():
                deliver(n, stage, batch)
            n.end_of_stream()
    finally:
        for n, own in zip(nodes, own_emits, strict=True):
            n._emit = own
    return last
