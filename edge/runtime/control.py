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

The supervisor publishes one stats snapshot a second on its stats endpoint:
`[b"stats", msgpack({"graph": str, "t_wall_ns": int, "nodes": {name: NodeRecord map}})]` (edge.runtime.stats
reads it; the mqtt node's heartbeat carries part of it).
"""

from __future__ import annotations

from dataclasses import Field, dataclass, field, fields
from enum import Enum
from typing import Any

import msgpack

STATS_TOPIC = b"stats"


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


def decode(payload: bytes) -> tuple[Op, dict[str, Any]] | None:
    """(op, the whole map) of one control message; None for anything that is not one (ignored by both ends)."""
    try:
        msg = msgpack.unpackb(payload, raw=False)
        return Op(msg["op"]), msg
    except Exception:
        return None


def _stat(default: Any = 0, unit: str = "", wire: str = "", counter: bool = False) -> Any:
    """A stats field: `wire` is its key in the msgpack map when not the field name; `counter` marks the
    fields a fleet heartbeat carries."""
    return field(default=default, metadata={"wire": wire, "unit": unit, "counter": counter})


def _wire(f: Field) -> str:
    return f.metadata["wire"] or f.name


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
    foreign: int = _stat(unit="messages rejected (other schema, too large, undecodable)")
    errors: int = _stat(unit="process() calls that raised", counter=True)

    def to_dict(self) -> dict[str, Any]:
        """The wire map (keys as in `wire`, e.g. "in")."""
        return {_wire(f): getattr(self, f.name) for f in fields(self)}

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
