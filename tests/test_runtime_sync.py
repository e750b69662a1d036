"""Input synchronisation (edge.runtime.sync) and the in-process chain runner (edge.runtime.inprocess)."""

from __future__ import annotations

from typing import ClassVar

import pytest

from edge.runtime.inprocess import run_chain
from edge.runtime.messages import Message
from edge.runtime.node import Node, Port
from edge.runtime.sync import FrameMerge, InputSync


def test_frame_merge_releases_a_frame_once_every_input_reached_it():
    o = FrameMerge(["crops", "flows"], max_pending=4)
    assert o.add("flows", 5, [(1, ("flow", 5))]) == []               # crops of frame 5 may still come
    assert o.add("crops", 5, [(0, ("info", 5)), (2, ("end", 5))]) == [("info", 5), ("flow", 5), ("end", 5)]
    assert o.add("crops", 6, [(0, ("info", 6))]) == []
    assert o.add("flows", 7, [(1, ("flow", 7))]) == [("info", 6)]    # no flows message for 6 will come now
    assert o.add("crops", 8, [(0, ("info", 8))]) == [("flow", 7)]
    for f in (9, 10, 11):                                             # the flows link stalls: at most 4 wait
        assert o.add("crops", f, [(0, ("info", f))]) == []
    assert o.add("crops", 12, [(0, ("info", 12))]) == [("info", 8)]
    assert o.add("crops", 0, [(0, ("info", 0))]) == [("info", f) for f in (9, 10, 11, 12)]  # counter reset
    assert o.flush() == [("info", 0)]


def test_frame_merge_ties_keep_arrival_order_and_never_compare_items():
    o = FrameMerge(["a", "b"])
    unorderable = [object(), object(), object()]
    assert o.add("a", 3, [(0, unorderable[0]), (0, unorderable[1])]) == []
    assert o.add("b", 3, [(0, unorderable[2])]) == unorderable


def test_frame_merge_bounds_what_a_stalled_input_holds():
    o = FrameMerge(["a", "b"], max_pending=3)
    out = [item for f in range(10) for item in o.add("a", f, [(0, f)])]
    assert out == list(range(7)) and o.flush() == [7, 8, 9]


def test_frame_merge_flushes_when_a_frame_counter_goes_back():
    o = FrameMerge(["a", "b"])
    assert o.add("a", 10, [(0, "a10")]) == []
    assert o.add("a", 2, [(0, "a2")]) == ["a10"]      # a restarted source: what was pending goes first
    assert o.add("b", 2, [(0, "b2")]) == ["a2", "b2"]


class Merge(Node):
    """Records what process() sees; a `left` message with meta late=True comes back at stage `after`."""

    inputs: ClassVar = {"left": Port("any"), "right": Port("any")}
    outputs: ClassVar = {"out": Port("any")}
    input_sync = "frame_order"
    input_order = ("left", "right", "after")

    def setup(self) -> None:
        self.seen: list[tuple[str, str, int]] = []

    def sync_stages(self, port: str, msg: Message) -> list[str]:
        return [port, "after"] if msg.meta.get("late") else [port]

    def process(self, port: str, msg: Message) -> None:
        self.seen.append((port, msg.stream, msg.frame))
        self.emit("out", msg.derive("frame", {"stage": port}))


def _m(frame: int, stream: str = "cam0", **meta: object) -> Message:
    return Message("frame", stream, frame=frame, meta=dict(meta))


def test_frame_order_policy_merges_by_frame_then_declared_stage_per_stream():
    node = Merge.for_test()
    node.setup()
    sync = InputSync(node)
    got = []
    for port, msg in [("right", _m(1)), ("right", _m(1, "cam1")), ("left", _m(1, late=True)), ("left", _m(2)),
                      ("right", _m(2)), ("left", _m(1, "cam1"))]:
        got += [(stage, m.stream, m.frame) for stage, batch in sync.add(port, [msg]) for m in batch]
    assert got == [("left", "cam0", 1), ("right", "cam0", 1), ("after", "cam0", 1),
                   ("left", "cam0", 2), ("right", "cam0", 2), ("left", "cam1", 1), ("right", "cam1", 1)]
    assert sync.flush() == []


def test_only_connected_inputs_are_waited_for_and_arrival_passes_through():
    node = Merge.for_test()
    node.run_info = {"inputs": ["left"]}
    assert [(s, [m.frame for m in b]) for s, b in InputSync(node).add("left", [_m(4), _m(5)])] == [("left", [4, 5])]
    node = Merge.for_test()
    node.input_sync = "arrival"
    batch = [_m(9), _m(3)]
    assert InputSync(node).add("right", batch) == [("right", batch)]
    node.input_sync = "by_magic"
    with pytest.raises(ValueError, match="by_magic"):
        InputSync(node)


class Double(Node):
    """frames -> right (a copy); at the end of the stream one more right message, frame 100."""

    inputs: ClassVar = {"frames": Port("any")}
    outputs: ClassVar = {"right": Port("any")}

    def process(self, port: str, msg: Message) -> None:
        self.emit("right", msg.derive("frame", {"by": "double"}))

    def end_of_stream(self) -> None:
        self.emit("right", _m(100))


def test_run_chain_routes_by_port_name_applies_the_policy_and_ends_in_order():
    double, merge = Double.for_test("double"), Merge.for_test("merge")
    merge.setup()
    # The source's `frames` reach double, its `left` go past double to merge; its `right` stop at double,
    # which makes the `right` stream of the nodes after it. Frame 1's right arrives before its left.
    source = [("frames", _m(1)), ("right", _m(50)), ("left", _m(1, late=True)), ("frames", _m(2)),
              ("left", _m(2)), ("left", _m(3))]
    out = run_chain([double, merge], source)
    assert merge.seen == [("left", "cam0", 1), ("right", "cam0", 1), ("after", "cam0", 1),
                          ("left", "cam0", 2), ("right", "cam0", 2),
                          ("left", "cam0", 3), ("right", "cam0", 100)]  # double's end_of_stream, then the flush
    assert [m.meta["stage"] for _, m in out] == [s for s, _, _ in merge.seen]
    assert [p for p, _ in double.emitted] == ["right"] * 3  # a node's own emit callback still sees it all
    assert [p for p, _ in merge.emitted] == ["out"] * 7
