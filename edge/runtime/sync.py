"""Input synchronisation: the order in which a node's process() sees what its inputs deliver.

A node class declares its policy (edge.runtime.node.Node.input_sync):

- "arrival" (the default): each input's messages as they come, a lossless input's queued ones at once
  (process_batch).
- "frame_order": per stream, the inputs merged back into frame order. Each link delivers in frame order,
  but two links are not in order with each other: when both are ready at once a node can read frame N's
  flows before frame N's crops (8 % of flows in a batch job here), and a node that needs the crops first
  (the spot node's head-motion check) then gave different results from run to run. A message can be
  handed over at more than one stage (Node.sync_stages); within a frame, stages go in `Node.input_order`
  (default: the order the inputs are declared in), ties in arrival order.

Both the node runner (edge.runtime.noderun) and the in-process runner (edge.runtime.inprocess) apply it through
InputSync and hand the result to the node with `deliver`.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterable
from typing import TYPE_CHECKING, Generic, TypeVar

from edge.runtime.messages import Message

if TYPE_CHECKING:
    from edge.runtime.node import Node

ARRIVAL = "arrival"
FRAME_ORDER = "frame_order"
POLICIES = (ARRIVAL, FRAME_ORDER)
MAX_PENDING = 512  # per stream: items a stalled input (a node restarting) may hold back

T = TypeVar("T")


class FrameMerge(Generic[T]):
    """Items from several ports merged into (frame, rank) order.

    An item waits until every port has reached its frame (nothing for that frame can still come) and leaves
    sorted by (frame, rank), ties in arrival order. A stalled port holds at most `max_pending` items; a frame
    counter that goes back (a restarted source) flushes what is pending first.
    """

    def __init__(self, ports: Iterable[str], max_pending: int = MAX_PENDING) -> None:
        self.last: dict[str, int | None] = dict.fromkeys(ports)
        self.max_pending = max_pending
        self._heap: list[tuple[int, int, int, T]] = []
        self._seq = itertools.count()  # ties keep arrival order (and never compare the items)

    def add(self, port: str, frame: int, items: Iterable[tuple[int, T]]) -> list[T]:
        """One message's items (rank, item) at `frame` from `port`; returns the items now due, in order."""
        last = self.last.get(port)
        out = self.flush() if last is not None and frame < last else []
        for rank, item in items:
            heapq.heappush(self._heap, (frame, rank, next(self._seq), item))
        self.last[port] = frame
        marks = list(self.last.values())
        mark = None if None in marks else min(marks)
        while self._heap and ((mark is not None and self._heap[0][0] <= mark) or len(self._heap) > self.max_pending):
            out.append(heapq.heappop(self._heap)[3])
        return out

    def flush(self) -> list[T]:
        """Everything pending, in order (end of stream, or a frame counter that went back)."""
        out = [heapq.heappop(self._heap)[3] for _ in range(len(self._heap))]
        self.last = dict.fromkeys(self.last)
        return out


Batch = tuple[str, list[Message]]  # (stage: the port, or a node's own stage name; messages)


class InputSync:
    """A node's declared input policy over what its connected `ports` deliver (default: the runner's
    `run_info["inputs"]`, else every declared input). `add` returns the batches due now, `flush` the pending
    ones (before end_of_stream)."""

    def __init__(self, node: Node, ports: Iterable[str] | None = None, max_pending: int = MAX_PENDING) -> None:
        if node.input_sync not in POLICIES:
            raise ValueError(f"{type(node).__name__}.input_sync: {node.input_sync!r} is not one of "
                             f"{', '.join(POLICIES)}")
        self.node = node
        self.frame_order = node.input_sync == FRAME_ORDER
        self.ports = list(ports if ports is not None else node.run_info.get("inputs", node.inputs))
        self.rank = {stage: i for i, stage in enumerate(node.input_order or tuple(node.inputs))}
        self.max_pending = max_pending
        self.merges: dict[str, FrameMerge[tuple[str, Message]]] = {}  # per stream

    def add(self, port: str, msgs: list[Message]) -> list[Batch]:
        """What `port` delivered (in its order); returns the batches to hand to the node now, in order."""
        if not self.frame_order:
            return [(port, msgs)]
        due: list[tuple[str, Message]] = []
        for msg in msgs:
            merge = self.merges.get(msg.stream)
            if merge is None:
                merge = self.merges[msg.stream] = FrameMerge(self.ports, self.max_pending)
            stages = self.node.sync_stages(port, msg)
            due += merge.add(port, msg.frame, [(self.rank[s], (s, msg)) for s in stages])
        return _batches(due)

    def flush(self) -> list[Batch]:
        """Everything still pending, in order."""
        return _batches([item for merge in self.merges.values() for item in merge.flush()])


def _batches(items: list[tuple[str, Message]]) -> list[Batch]:
    """Consecutive items of one stage as one batch."""
    out: list[Batch] = []
    for stage, msg in items:
        if out and out[-1][0] == stage:
            out[-1][1].append(msg)
        else:
            out.append((stage, [msg]))
    return out


def deliver(node: Node, stage: str, msgs: list[Message]) -> None:
    """Hand one batch to the node: process() for one message, process_batch() for several."""
    if len(msgs) == 1:
        node.process(stage, msgs[0])
    else:
        node.process_batch(stage, msgs)
