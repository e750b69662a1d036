"""Acknowledged delivery on lossless links: the producer's outbox and the consumer's receipts.

At-least-once on the wire, exactly once where it counts (the model is the MQTT bridge towards its
broker, and the ZeroMQ guide's reliable request-reply): every message on a lossless link carries an id;
the producer keeps each one in a bounded `Outbox` until the consumer acknowledges it, and sends it again
when the consumer says `hello` (a new consumer process: what sat in the dead one's socket buffers is
gone) or when no acknowledgement came within the resend timeout (doubled per resend, so a stalled
consumer is not flooded). A full outbox is backpressure: the producer stops taking input, it never drops.
The consumer's `Receipts` drop what it has already seen by id (a resend whose first copy did arrive) and
say again what it had already acknowledged (the acknowledgement may be what was lost). An in-band end of
stream is acknowledged last, once the consumer has ended (transport.Input.eos_ids): the producer then
still holds it while anything before it is unacknowledged, and a restarted consumer gets it again.
The producer answers a hello with `welcome`, then the resend: a new consumer handles nothing that
arrives before the welcome (the producer may have sent newer messages to the new process before it read
the hello; handled first, they would overtake the resent older ones, and a node that rebuilds state
from its last inputs, flow's lag window, would rebuild it from the wrong ones). Those early messages are
unacknowledged, so the resend holds them again, in order. A consumer that gets messages but no welcome
(its hello went to a producer process that died) says hello again.

Frames on a link (a ROUTER in the producer, which binds; a DEALER in the consumer, whose routing id is the
link's name, so a restarted consumer takes the old one's place):

    producer -> consumer   [topic, header, *buffers]      a message (edge.runtime.transport), header["id"]
    producer -> consumer   [b"welcome"]                    the answer to a hello: the resend follows
    consumer -> producer   [b"hello"]                      a new consumer process: send me what is unacked
                           [b"ack", msgpack([id, ...])]    these are durably handled
"""

from __future__ import annotations

import secrets
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

HELLO = b"hello"
WELCOME = b"welcome"
HELLO_AGAIN_S = 0.5  # a consumer getting messages but no welcome for this long says hello again
ACK = b"ack"
OUTBOX_DEFAULT = 1000  # unacknowledged messages per lossless link (the link's `queue`)
OUTBOX_MAX = 100_000  # more would only hide a consumer that is gone for good, in the producer's memory
RESEND_AFTER_S = 5.0  # no acknowledgement within this: send again (then 10, 20, ... up to RESEND_MAX_S)
RESEND_MAX_S = 60.0
RECEIPTS_MIN = 4096  # ids a consumer remembers having acknowledged (at least; 4 x the link's queue)


def new_token() -> str:
    """A random token for the ids of one producer process (48 bits: unique across the runs of a log)."""
    return secrets.token_hex(6)


@dataclass
class Entry:
    parts: list[Any]  # [topic, header, *arrays]: the arrays are the emitted ones (never modified)
    sent_at: float | None = None  # monotonic time of the last send; None: not sent yet (no consumer)
    resend_s: float = RESEND_AFTER_S
    sends: int = 0


class Outbox:
    """The unacknowledged messages of one lossless link, oldest first, at most `capacity`."""

    def __init__(self, capacity: int = OUTBOX_DEFAULT, resend_after_s: float = RESEND_AFTER_S) -> None:
        if not 1 <= capacity <= OUTBOX_MAX:
            raise ValueError(f"outbox capacity {capacity} outside 1..{OUTBOX_MAX}")
        self.capacity = capacity
        self.resend_after_s = resend_after_s
        self.entries: OrderedDict[str, Entry] = OrderedDict()
        self.resent = 0

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def full(self) -> bool:
        return len(self.entries) >= self.capacity

    def add(self, msg_id: str, parts: list[Any]) -> Entry:
        entry = Entry(parts, resend_s=self.resend_after_s)
        self.entries[msg_id] = entry
        return entry

    def ack(self, ids: list[str]) -> list[str]:
        """Remove the acknowledged ids; returns those that were held (a late duplicate ack is ignored)."""
        return [i for i in ids if self.entries.pop(i, None) is not None]

    def due(self, now: float, everything: bool = False) -> list[tuple[str, Entry]]:
        """What to send now, in order: entries never sent, those past their resend time, or (after a
        consumer's hello) `everything`."""
        return [(i, e) for i, e in self.entries.items()
                if everything or e.sent_at is None or now - e.sent_at >= e.resend_s]

    def mark_sent(self, entry: Entry, now: float) -> None:
        if entry.sends:
            self.resent += 1
            entry.resend_s = min(2 * entry.resend_s, RESEND_MAX_S)
        entry.sends += 1
        entry.sent_at = now


class Receipts:
    """A consumer's view of one link: which ids are being handled, which it acknowledged, what to ack."""

    def __init__(self, remember: int = RECEIPTS_MIN) -> None:
        self.remember_n = remember
        self.pending: set[str] = set()  # received, not yet durably handled
        self.done: OrderedDict[str, None] = OrderedDict()  # acknowledged (the newest `remember`)
        self.to_ack: list[str] = []
        self.duplicates = 0

    def admit(self, msg_id: str) -> bool:
        """True for a message to handle; False for a duplicate (acknowledged again if it was done)."""
        if not msg_id:
            return True  # a producer without ids (another tool): nothing to dedup or acknowledge
        if msg_id in self.done:
            self.duplicates += 1
            self.to_ack.append(msg_id)
            return False
        if msg_id in self.pending:
            self.duplicates += 1
            return False
        self.pending.add(msg_id)
        return True

    def remember(self, ids: list[str]) -> None:
        """Count `ids` as acknowledged already (a restored checkpoint holds them): a resend is a repeat."""
        for msg_id in ids:
            self.done[msg_id] = None
        while len(self.done) > self.remember_n:
            self.done.popitem(last=False)

    def complete(self, msg_id: str) -> None:
        """`msg_id` is durably handled: acknowledge it (with the next `take()`)."""
        if not msg_id:
            return
        self.pending.discard(msg_id)
        self.done[msg_id] = None
        while len(self.done) > self.remember_n:
            self.done.popitem(last=False)
        self.to_ack.append(msg_id)

    def take(self) -> list[str]:
        out, self.to_ack = self.to_ack, []
        return out

