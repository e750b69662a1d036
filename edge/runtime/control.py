"""The supervisor <-> node control protocol and the stats record, as data in one place.

Control messages travel between each node's DEALER (identity: the node name) and the supervisor's ROUTER
(edge.runtime.supervisor) as one msgpack map `{"op": OP, **fields}`:

    node -> supervisor   ready                     every expected subscriber is attached
                         stats    {stats: map}     every second, and once more on exit (NodeStats)
                         eos      {stats: map}     end of stream: flushed, eos sent on every output
                         failed   {reason: str}    setup or the loop failed (one line)
    supervisor -> node   start                     sources: every node is ready, begin
                         stop                      stop now (SIGINT follows)
                         upstream_eos {node: str}  producer `node` has ended (in-band eos can be dropped)

Every field is checked (`parse`): the op must be known, the fields those of its op with their types (a
stats map only NodeStats wire keys, each of its type, numbers >= 0), the payload at most
MAX_CONTROL_BYTES. Anything else is a ControlError, which both ends count and drop: a stray or hostile
client on the control socket never stops a graph. Each node process's DEALER identity is `NAME/TOKEN`,
a token the supervisor makes per spawn (environment FACESLEUTH_CONTROL_ID), so a client that borrows a
node's name, or an old process of a restarted node, is an unknown sender.

The supervisor publishes one stats snapshot a second on its stats endpoint:
`[b"stats", msgpack({"graph": str, "t_wall_ns": int, "nodes": {name: NodeRecord map},
"control_dropped": int})]` (control messages it dropped so far; edge.runtime.stats
reads it; the mqtt node's heartbeat carries part of it).
"""

from __future__ import annotations

from dataclasses import Field, dataclass, field, fields
from enum import Enum
from typing import Any

import msgpack

STATS_TOPIC = b"stats"
MAX_CONTROL_BYTES = 64 * 1024  # a stats report is ~300 bytes; larger messages are refused by libzmq
CONTROL_ID_ENV = "FACESLEUTH_CONTROL_ID"
RESTARTS_ENV = "FACESLEUTH_RESTARTS"  # how often the supervisor has restarted this node (Node.run_info["restarts"])
# A node process's exit code when its setup found a device or capability missing (Unavailable: no camera,
# no GStreamer): restarting would fail the same way, so the supervisor does not retry it and the run
# exits 1 (failed), where a setup refusing its input exits 2 (bad input: edge.errors.EXIT_BAD_INPUT).
NODE_EXIT_UNAVAILABLE = 4


class Op(str, Enum):  # not StrEnum: Python 3.10 (JetPack 6) has none
    READY = "ready"
    STATS = "stats"
    EOS = "eos"
    FAILED = "failed"
    START = "start"
    STOP = "stop"
    UPSTREAM_EOS = "upstream_eos"


def encode(op: Op, **kw: Any) -> bytes:
    """One control message: `{"op": op, **kw}` as msgpack."""
    return msgpack.packb({"op": op.value, **kw}, use_bin_type=True)


class ControlError(ValueError):
    """A payload on the control channel that is not a valid control message (the reason, one line)."""


# The fields each op carries, all required (stats maps are checked against NodeStats on top).
_OP_FIELDS: dict[Op, dict[str, type]] = {
    Op.READY: {}, Op.STATS: {"stats": dict}, Op.EOS: {"stats": dict}, Op.FAILED: {"reason": str},
    Op.START: {}, Op.STOP: {}, Op.UPSTREAM_EOS: {"node": str},
}


def parse(payload: bytes) -> tuple[Op, dict[str, Any]]:
    """(op, the whole map) of one control message, every field checked; ControlError otherwise."""
    if len(payload) > MAX_CONTROL_BYTES:
        raise ControlError(f"{len(payload)} bytes (at most {MAX_CONTROL_BYTES})")
    try:
        msg = msgpack.unpackb(payload, raw=False)
    except Exception as e:  # msgpack raises several types for garbage
        raise ControlError(f"not msgpack ({type(e).__name__})") from None
    if not isinstance(msg, dict):
        raise ControlError(f"a {type(msg).__name__}, not a map")
    try:
        op = Op(msg.get("op"))
    except ValueError:
        raise ControlError(f"unknown op {msg.get('op')!r}") from None
    want = _OP_FIELDS[op]
    extra = sorted(map(str, set(msg) - set(want) - {"op"}))
    if extra:
        raise ControlError(f"{op.value}: unknown field(s) {', '.join(extra)}")
    for key, kind in want.items():
        if not isinstance(msg.get(key), kind):
            raise ControlError(f"{op.value}: {key} must be a {kind.__name__}, got {type(msg.get(key)).__name__}")
    if "stats" in want:
        NodeStats.check(msg["stats"])
    return op, msg


def decode(payload: bytes) -> tuple[Op, dict[str, Any]] | None:
    """`parse`, with None for anything that is not a valid control message."""
    try:
        return parse(payload)
    except ControlError:
        return None


def _stat(default: Any = 0, unit: str = "", wire: str = "", counter: bool = False) -> Any:
    """A stats field: `wire` is its key in the msgpack map when not the field name; `counter` marks the
    fields a fleet heartbeat carries."""
    return field(default=default, metadata={"wire": wire, "unit": unit, "counter": counter})


def _wire(f: Field) -> str:
    return f.metadata["wire"] or f.name


_KINDS: dict[str, tuple[type, ...]] = {"str": (str,), "int": (int,), "float": (int, float)}
_KIND_NAMES = {(str,): "a str", (int,): "an int", (int, float): "a number"}


@dataclass
class NodeStats:
    """What a node process reports about itself (op `stats` and `eos`)."""

    node: str = _stat("")
    type: str = _stat("")
    messages_in: int = _stat(wire="in", unit="messages received", counter=True)
    messages_out: int = _stat(wire="out", unit="messages sent", counter=True)
    fps: float = _stat(0.0, "messages processed (a source: sent) per s since start", counter=True)
    p50_ms: float = _stat(0.0, "ms of process() per message, over the last 1024")
    p99_ms: float = _stat(0.0, "ms of process() per message, over the last 1024")
    dropped_in: int = _stat(unit="messages dropped or missing (seq gaps) on the inputs", counter=True)
    dropped_out: int = _stat(unit="messages dropped by full output queues", counter=True)
    foreign: int = _stat(unit="messages rejected (other schema, too large, undecodable): inputs, control, "
                              "the node's own endpoints (replay); and clients refused for their CURVE key")
    errors: int = _stat(unit="process() calls that raised", counter=True)
    outbox: int = _stat(unit="messages on lossless links not acknowledged yet (the fullest link's outbox)")
    resent: int = _stat(unit="messages sent again on lossless links (consumer restarted, or no ack in time)")
    duplicates: int = _stat(unit="messages received again on lossless inputs and dropped (by id)")

    def to_dict(self) -> dict[str, Any]:
        """The wire map (keys as in `wire`, e.g. "in")."""
        return {_wire(f): getattr(self, f.name) for f in fields(self)}

    @classmethod
    def check(cls, d: dict[str, Any]) -> None:
        """ControlError unless `d` is a wire map of this class: known keys only, each of its field's type
        (str; int; float, which takes an int too), numbers finite and >= 0."""
        kinds = {_wire(f): _KINDS[str(f.type)] for f in fields(cls)}
        for key, value in d.items():
            if key not in kinds:
                raise ControlError(f"stats: unknown key {key!r}")
            if isinstance(value, bool) or not isinstance(value, kinds[key]):
                raise ControlError(f"stats: {key} must be {_KIND_NAMES[kinds[key]]}, got {type(value).__name__}")
            if not isinstance(value, str) and not 0 <= value < float("inf"):
                raise ControlError(f"stats: {key} = {value!r} is not a finite number >= 0")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NodeStats:
        """From a wire map: missing keys take the defaults, unknown keys are ignored."""
        return cls(**{f.name: d[_wire(f)] for f in fields(cls) if _wire(f) in d})


@dataclass
class NodeRecord(NodeStats):
    """A node in the supervisor's snapshot: its last report plus what the supervisor knows."""

    restarts: int = _stat(unit="restarts so far", counter=True)
    state: str = _stat("", "running | restarting | ended | failed | stopped", counter=True)
    pid: int | None = _stat(None, "process id while running")

    @classmethod
    def wire_map(cls, reported: dict[str, Any], *, restarts: int, state: str, pid: int | None) -> dict[str, Any]:
        """A node's map in the snapshot: its last report (a NodeStats wire map, empty before the first) and
        the supervisor's fields."""
        own = cls(restarts=restarts, state=state, pid=pid).to_dict()
        theirs = set(_wire_keys(NodeStats))
        return {**reported, **{k: v for k, v in own.items() if k not in theirs}}


def _wire_keys(cls: type[NodeStats], counters_only: bool = False) -> tuple[str, ...]:
    return tuple(_wire(f) for f in fields(cls) if f.metadata["counter"] or not counters_only)


def counters(record: dict[str, Any]) -> dict[str, Any]:
    """The heartbeat counters of one node's snapshot map (only the keys it holds)."""
    return {k: record[k] for k in _wire_keys(NodeRecord, counters_only=True) if k in record}
