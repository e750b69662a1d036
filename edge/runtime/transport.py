"""Where frames cross a process boundary: pack/unpack and the socket wrappers. Nothing else imports zmq
for data.

Wire format: multipart `[topic, header, *buffers]`; the header is msgpack (edge.runtime.messages describes it),
each buffer the raw bytes of one C-contiguous ndarray. Nothing is pickled, so any language with ZeroMQ
and msgpack reads every stream.

Zero copy: `pack()` returns the arrays themselves (made C-contiguous) and `send_multipart(copy=False)`
hands their memory to libzmq, which holds a reference until the bytes are sent. A sender must therefore
not modify an array after emitting it: every node builds a fresh array per message (pooled buffers would
need `track=True` and waiting on the tracker). Parts under ~64 KiB are copied by pyzmq anyway, which is
cheaper for small messages. Received arrays are read-only `np.frombuffer` views on the zmq frames.

Two delivery modes per link:

- latest-wins (frames, crops, flows): the producer's XPUB keeps a small queue (SNDHWM) per subscriber
  and drops for that subscriber alone when it is full, so the producer's memory never grows. The consumer
  drains its socket and keeps only the newest message; it counts what it skipped and what never arrived
  (sequence gaps). We do NOT use ZMQ_CONFLATE: it keeps one *part* of a multipart message, so it would cut our
  `[topic, header, buffers]` messages apart.
- lossless (intervals, events): acknowledged delivery (edge.runtime.delivery), a ROUTER per link in the
  producer and a DEALER in the consumer. The producer keeps every message in a bounded outbox (the
  link's `queue`) until the consumer acknowledges it as durably handled, sends it again to a restarted
  consumer or after a timeout, and blocks (backpressure) while the outbox is full; the consumer drops
  duplicates by message id. A consumer killed with messages in its socket buffers loses none of them.

Endpoints: producers bind, consumers connect. `ipc://` paths live in the run directory (Linux limits them
to 107 bytes); `tcp://127.0.0.1:*` otherwise. A non-loopback tcp bind needs CURVE keys (edge.runtime.keys).
With tcp every link is CURVE-secured, with keys made per run, and each node's ZAP handler lets in only the
graph's own client keys (edge.runtime.zap): loopback is reachable by every user of the host.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import zmq

from edge.errors import UserError
from edge.runtime.delivery import (
    ACK,
    HELLO,
    HELLO_AGAIN_S,
    OUTBOX_MAX,
    RECEIPTS_MIN,
    WELCOME,
    Entry,
    Outbox,
    Receipts,
    new_token,
)
from edge.runtime.messages import SCHEMA_VERSION, Message
from edge.runtime.zap import DOMAIN as ZAP_DOMAIN

log = logging.getLogger(__name__)

DEFAULT_MAX_MSG_BYTES = 64 * 1024 * 1024
LATEST_HWM = 4  # per-subscriber queue of a latest-wins link; libzmq learns of reads ~1 ms late, so
# a queue of 2 dropped bursts even behind an idle consumer
IPC_PATH_MAX = 107
MAX_ID_CHARS = 1024  # a message id grows by one node name and a counter per lossless hop


class ForeignMessage(ValueError):
    """Bytes on a socket that are not a valid FaceSleuth message (counted and dropped by receivers)."""


# ---------------------------------------------------------------------------------------------- codec


def pack(topic: str, msg: Message) -> list[Any]:
    """Message -> multipart parts `[topic, header, *buffers]` (buffers are the arrays, not copies)."""
    bufs, arrays = [], []
    for name, arr in msg.arrays.items():
        arr = np.asarray(arr)
        if not arr.flags.c_contiguous:  # (np.ascontiguousarray alone would turn a 0-d array into 1-d)
            arr = np.ascontiguousarray(arr)
        bufs.append([name, arr.dtype.str, list(arr.shape)])
        arrays.append(arr)
    header = {
        "v": SCHEMA_VERSION, "type": msg.type, "stream": msg.stream, "seq": int(msg.seq),
        "frame": int(msg.frame), "t_mono_ns": int(msg.t_mono_ns), "t_wall_ns": int(msg.t_wall_ns),
        "meta": msg.meta, "bufs": bufs,
    }
    if msg.id:
        header["id"] = msg.id  # lossless links (edge.runtime.delivery); an added key: schema 1 still
    return [topic.encode(), msgpack.packb(header, use_bin_type=True), *arrays]


_HEADER_KEYS = ("v", "type", "stream", "seq", "frame", "t_mono_ns", "t_wall_ns", "meta", "bufs")


def unpack(parts: Sequence[zmq.Frame | bytes | memoryview]) -> tuple[str, Message]:
    """Multipart parts -> (topic, Message). Raises ForeignMessage on anything malformed."""
    if len(parts) < 2:
        raise ForeignMessage(f"{len(parts)} part(s), expected [topic, header, *buffers]")
    raw = [p.buffer if isinstance(p, zmq.Frame) else memoryview(p) for p in parts]
    try:
        topic = bytes(raw[0]).decode()
        header = msgpack.unpackb(raw[1], raw=False, strict_map_key=False)  # meta may map ints (track ids)
    except Exception as e:  # msgpack raises several types for garbage
        raise ForeignMessage(f"undecodable header ({type(e).__name__})") from None
    if not isinstance(header, dict) or any(k not in header for k in _HEADER_KEYS):
        raise ForeignMessage("header is not a FaceSleuth header map")
    if header["v"] != SCHEMA_VERSION:
        raise ForeignMessage(f"schema version {header['v']!r}, this build speaks {SCHEMA_VERSION}")
    specs = header["bufs"]
    if not isinstance(specs, list) or len(specs) != len(raw) - 2:
        raise ForeignMessage("buffer list does not match the message parts")
    arrays = {}
    for spec, buf in zip(specs, raw[2:], strict=True):
        try:
            name, dtype, shape = spec
            dt = np.dtype(dtype)
            if dt.hasobject:
                raise TypeError("object dtype")
            shape = tuple(int(s) for s in shape)
            if any(s < 0 for s in shape):
                raise ValueError("negative dimension")
            expected = dt.itemsize * int(np.prod(shape, dtype=np.int64))
        except Exception as e:
            raise ForeignMessage(f"bad buffer spec {spec!r} ({e})") from None
        if expected != buf.nbytes:
            raise ForeignMessage(f"buffer {name!r}: {buf.nbytes} bytes for {dtype}{list(shape)}")
        arr = np.frombuffer(buf, dtype=dt).reshape(shape)
        arr.flags.writeable = False  # a view on the zmq frame: copy before writing
        arrays[str(name)] = arr
    meta = header["meta"]
    if not isinstance(meta, dict):
        raise ForeignMessage("header meta is not a map")
    msg_id = header.get("id", "")
    if not isinstance(msg_id, str) or len(msg_id) > MAX_ID_CHARS:
        raise ForeignMessage("header id is not a string of at most 1024 characters")
    try:
        msg = Message(str(header["type"]), str(header["stream"]), int(header["seq"]), int(header["frame"]),
                      int(header["t_mono_ns"]), int(header["t_wall_ns"]), meta, arrays, id=msg_id)
    except (TypeError, ValueError) as e:
        raise ForeignMessage(f"bad header field ({e})") from None
    return topic, msg


# ------------------------------------------------------------------------------------------ endpoints


def ipc_endpoint(run_dir: str | Path, name: str) -> str:
    """`ipc://RUN_DIR/NAME.ipc`, checked against the Linux path limit."""
    path = str(Path(run_dir) / f"{name}.ipc")
    if len(path) > IPC_PATH_MAX:
        raise ValueError(f"ipc path too long ({len(path)} > {IPC_PATH_MAX} bytes): {path}")
    return f"ipc://{path}"


def is_loopback(endpoint: str) -> bool:
    """True for ipc/inproc endpoints and tcp on 127.0.0.0/8, ::1 or localhost; False for every other
    transport (tipc, pgm, epgm, udp, ws, vmci reach other hosts)."""
    if endpoint.startswith(("ipc://", "inproc://")):
        return True
    if not endpoint.startswith("tcp://"):
        return False
    host = endpoint[len("tcp://"):].rsplit(":", 1)[0].strip("[]")
    return host == "localhost" or host.startswith("127.") or host == "::1"


def ipc_path(endpoint: str) -> Path | None:
    return Path(endpoint[len("ipc://"):]) if endpoint.startswith("ipc://") else None


@dataclass
class Curve:
    """CURVE key material (Z85 bytes). Binding sockets are servers, connecting ones clients."""

    server_public: bytes
    server_secret: bytes | None
    client_public: bytes
    client_secret: bytes

    def for_server(self, server_public: bytes) -> Curve:
        """The same client pair, for connecting to the server whose public key is `server_public`."""
        return Curve(server_public, None, self.client_public, self.client_secret)

    def apply(self, sock: zmq.Socket, server: bool) -> None:
        if server:
            if self.server_secret is None:
                raise ValueError("a CURVE server needs the server secret key")
            sock.curve_secretkey = self.server_secret
            sock.curve_publickey = self.server_public
            sock.curve_server = True
            sock.zap_domain = ZAP_DOMAIN  # the context's ZAP handler (edge.runtime.zap) checks client keys
        else:
            sock.curve_secretkey = self.client_secret
            sock.curve_publickey = self.client_public
            sock.curve_serverkey = self.server_public


def _socket(ctx: zmq.Context, kind: int, max_msg_bytes: int, curve: Curve | None, server: bool) -> zmq.Socket:
    s = ctx.socket(kind)
    s.linger = 0
    s.setsockopt(zmq.MAXMSGSIZE, max_msg_bytes)
    if curve is not None:
        curve.apply(s, server)
    return s


def _bind(sock: zmq.Socket, endpoint: str, what: str) -> None:
    """bind, or a UserError naming the endpoint (e.g. a pinned one that another program holds)."""
    try:
        sock.bind(endpoint)
    except zmq.ZMQError as e:
        raise UserError(f"{what}: cannot bind {endpoint}: {e}") from None


# --------------------------------------------------------------------------------------------- output


class AckedLink:
    """The producer's end of one lossless link: a ROUTER bound at `endpoint` that sends to the consumer
    whose routing id is `peer`, keeping every message in an Outbox until it is acknowledged
    (edge.runtime.delivery has the protocol)."""

    def __init__(self, ctx: zmq.Context, endpoint: str, peer: bytes, capacity: int, topic: str,
                 max_msg_bytes: int, curve: Curve | None) -> None:
        self.peer = peer
        self.outbox = Outbox(capacity)
        self.sock = _socket(ctx, zmq.ROUTER, max_msg_bytes, curve, server=True)
        self.sock.setsockopt(zmq.ROUTER_MANDATORY, 1)  # an unknown peer is an error (kept, sent later), not a drop
        self.sock.setsockopt(zmq.ROUTER_HANDOVER, 1)  # a restarted consumer takes over its routing id
        self.sock.sndhwm = capacity + 16  # the outbox bounds what is in flight, not libzmq
        self.sock.rcvhwm = 0  # hellos and acks are small and must never be dropped
        _bind(self.sock, endpoint, topic)
        self.foreign = 0
        self.hellos = 0

    def _send(self, entry: Entry, now: float) -> bool:
        try:
            self.sock.send_multipart([self.peer, *entry.parts], flags=zmq.NOBLOCK, copy=False)
        except zmq.Again:  # the consumer's queue is full (stalled): try again later
            return False
        except zmq.ZMQError as e:
            if e.errno == zmq.EHOSTUNREACH:  # no consumer connected (starting, restarting): its hello resends
                return False
            raise
        self.outbox.mark_sent(entry, now)
        return True

    def flush(self, everything: bool = False) -> None:
        """Send what is due, in order, stopping at the first that cannot go."""
        now = time.monotonic()
        for _, entry in self.outbox.due(now, everything):
            if not self._send(entry, now):
                break

    def read(self) -> list[str]:
        """Handle the consumer's hellos and acks; returns the ids acknowledged now."""
        acked: list[str] = []
        hello = False
        while True:
            try:
                parts = self.sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            if len(parts) == 2 and parts[1] == HELLO and parts[0] == self.peer:
                hello = True
            elif len(parts) == 3 and parts[1] == ACK and parts[0] == self.peer:
                try:
                    ids = msgpack.unpackb(parts[2], raw=False)
                    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
                        raise ValueError("not a list of ids")
                except Exception:  # msgpack raises several types for garbage
                    self.foreign += 1
                    continue
                acked += self.outbox.ack(ids)
            else:
                self.foreign += 1
        if hello:  # a new consumer process: what the old one had queued is gone
            self.hellos += 1
            if self._welcome():
                self.flush(everything=True)
        return acked

    def _welcome(self) -> bool:
        """Tell a new consumer that the resend starts here (edge.runtime.delivery: why)."""
        try:
            self.sock.send_multipart([self.peer, WELCOME], flags=zmq.NOBLOCK)
        except zmq.Again:  # its queue is full: it has not read the hello's predecessors yet; it will say hello again
            return False
        except zmq.ZMQError as e:
            if e.errno == zmq.EHOSTUNREACH:  # gone again before the answer
                return False
            raise
        return True


class Output:
    """One output port: an XPUB (latest-wins subscribers and taps) plus one acknowledged link per lossless
    consumer (AckedLink).

    Args:
        ctx: the process's zmq context.
        topic: topic frame for every message of this port.
        pub_endpoint: where the XPUB binds.
        push_endpoints: per lossless link (bind endpoint, outbox size[, consumer routing id]).
    """

    def __init__(self, ctx: zmq.Context, topic: str, pub_endpoint: str,
                 push_endpoints: Sequence[tuple[Any, ...]] = (), hwm: int = LATEST_HWM,
                 max_msg_bytes: int = DEFAULT_MAX_MSG_BYTES, curve: Curve | None = None) -> None:
        self.topic = topic
        self.pub = _socket(ctx, zmq.XPUB, max_msg_bytes, curve, server=True)
        self.pub.sndhwm = hwm
        # No XPUB_NODROP: with it, one slow subscriber (a debugging tap, say) would make the producer
        # drop for every subscriber. Without it each subscriber has its own small queue; what a slow
        # one misses shows up as sequence gaps it counts (Input.gaps).
        self.pub.setsockopt(zmq.XPUB_VERBOSE, 1)  # see every (re)subscription, for readiness
        self.links: list[AckedLink] = []
        try:
            _bind(self.pub, pub_endpoint, topic)
            for k, (ep, queue, *peer) in enumerate(push_endpoints):
                routing_id = (peer[0] if peer else f"{topic}/{k}").encode()
                self.links.append(AckedLink(ctx, ep, routing_id, max(1, min(int(queue), OUTBOX_MAX)), topic,
                                            max_msg_bytes, curve))
        except UserError:
            self.close(0)
            raise
        self.max_msg_bytes = max_msg_bytes
        self.subscriptions = 0
        self.sent = 0
        self.dropped = 0
        self.oversize = 0
        self._seq: dict[str, int] = {}
        self._token = f"{topic}.{new_token()}"  # ids of the messages that derive from no acknowledged one
        self._count = 0
        self._unacked: dict[str, int] = {}  # id -> links that have not acknowledged it yet
        self._acked: list[str] = []  # ids every link acknowledged, for take_acked()

    @property
    def acked_links(self) -> bool:
        return bool(self.links)

    @property
    def outbox_fill(self) -> int:
        """Messages held for acknowledgement now (the fullest link's outbox)."""
        return max((len(lk.outbox) for lk in self.links), default=0)

    @property
    def resent(self) -> int:
        return sum(lk.outbox.resent for lk in self.links)

    @property
    def foreign(self) -> int:
        return sum(lk.foreign for lk in self.links)

    def sockets(self) -> list[zmq.Socket]:
        """The sockets a node's poller must watch (acknowledgements arrive there)."""
        return [lk.sock for lk in self.links]

    def poll_subscriptions(self) -> int:
        """Read pending (un)subscribe notices; returns the number of subscriptions seen so far."""
        while True:
            try:
                note = self.pub.recv(zmq.NOBLOCK)
            except zmq.Again:
                return self.subscriptions
            if note[:1] == b"\x01":
                self.subscriptions += 1

    def service(self) -> None:
        """Read acknowledgements and hellos, send what is due (never sent, or past its resend time)."""
        for lk in self.links:
            for msg_id in lk.read():
                left = self._unacked.get(msg_id, 0) - 1
                if left > 0:
                    self._unacked[msg_id] = left
                elif self._unacked.pop(msg_id, None) is not None:
                    self._acked.append(msg_id)
            lk.flush()

    def take_acked(self) -> list[str]:
        """Ids acknowledged by every lossless link since the last call."""
        self.service()
        out, self._acked = self._acked, []
        return out

    @property
    def drained(self) -> bool:
        return not self._unacked

    def unacknowledged(self) -> list[list[tuple[str, list[Any]]]]:
        """Per link, the (id, parts) it has not acknowledged, oldest first (a node's checkpoint keeps them)."""
        return [[(i, e.parts) for i, e in lk.outbox.entries.items()] for lk in self.links]

    def restore(self, per_link: list[list[tuple[str, list[Any]]]]) -> None:
        """Hold unacknowledged() of a dead process of this node again, to send when each consumer says
        hello (one that had a message already drops the repeat by id)."""
        for lk, entries in zip(self.links, per_link, strict=True):
            for msg_id, parts in entries:
                lk.outbox.add(msg_id, parts)
                self._unacked[msg_id] = self._unacked.get(msg_id, 0) + 1

    def _wait_room(self, stop: Any, timeout_s: float | None) -> bool:
        """Backpressure: wait until every link's outbox has room (acknowledgements come in meanwhile)."""
        t0 = time.monotonic()
        while True:
            self.service()
            if not any(lk.outbox.full for lk in self.links):
                return True
            if (stop is not None and stop()) or (timeout_s is not None and time.monotonic() - t0 > timeout_s):
                return False
            zmq.select([lk.sock for lk in self.links], [], [], 0.05)

    def next_id(self) -> str:
        self._count += 1
        return f"{self._token}.{self._count}"

    def send(self, msg: Message, stop: Any = None, block_timeout_s: float | None = None) -> bool:
        """Send on every link. Latest-wins links never block (a full queue is a counted drop); a lossless
        link keeps the message until it is acknowledged, and blocks while its outbox is full, until there
        is room or `stop()` is true. Returns False if dropped anywhere."""
        msg.seq = self._seq.get(msg.stream, 0)
        self._seq[msg.stream] = msg.seq + 1
        if self.links and not msg.id:
            msg.id = self.next_id()
        parts = pack(self.topic, msg)
        size = sum(p.nbytes if isinstance(p, np.ndarray) else len(p) for p in parts)
        if size > self.max_msg_bytes:
            # Receivers would disconnect us (MAXMSGSIZE) and lose the stream: refuse here, loudly.
            self.oversize += 1
            self.dropped += 1
            if self.oversize == 1 or self.oversize % 100 == 0:
                log.error("%s: message of %d bytes exceeds max_msg_bytes %d: dropped (%d so far)",
                          self.topic, size, self.max_msg_bytes, self.oversize)
            return False
        ok = True
        try:
            self.pub.send_multipart(parts, flags=zmq.NOBLOCK, copy=False)
        except zmq.Again:  # cannot happen on a PUB without NODROP; kept for other socket options
            ok = False
        if self.links:
            if self._wait_room(stop, block_timeout_s):
                self._unacked[msg.id] = len(self.links)
                for lk in self.links:
                    lk.outbox.add(msg.id, parts)
                    lk.flush()
            else:
                ok = False
        if ok:
            self.sent += 1
        else:
            self.dropped += 1
        if self.sent % 64 == 0:
            self.poll_subscriptions()
        return ok

    def send_eos(self, template: Message, reason: str, timeout_s: float = 2.0) -> None:
        """End of stream on every link: acknowledged like any message on lossless links (wait for it with
        `drained`). A latest-wins subscriber whose queue is full can miss it; the supervisor therefore also
        relays end of stream on the control channel (edge.runtime.noderun)."""
        eos = template.derive("eos", {"reason": reason})
        eos.seq = self._seq.get(eos.stream, 0)
        if self.links:
            eos.id = self.next_id()
        parts = pack(self.topic, eos)
        self.pub.send_multipart(parts, flags=zmq.NOBLOCK)
        if self.links and self._wait_room(None, timeout_s):
            self._unacked[eos.id] = len(self.links)
            for lk in self.links:
                lk.outbox.add(eos.id, parts)
                lk.flush()

    def close(self, linger_ms: int = 1000) -> None:
        """Close, giving queued messages `linger_ms` to leave (so a finished source's tail arrives)."""
        self.pub.close(linger=linger_ms)
        for lk in self.links:
            lk.sock.close(linger=linger_ms)


# ---------------------------------------------------------------------------------------------- input


class Input:
    """One input port: a SUB (latest-wins) or a DEALER (lossless, acknowledged) connected to a producer.

    `receive()` returns the next message to process: for latest-wins the newest one queued (the older
    ones are counted in `dropped`), for lossless the oldest. Foreign bytes are counted in `foreign`
    and dropped; the last reason is kept in `last_error`. A lossless input drops what it has already seen
    (by message id, counted in `duplicates`); `complete(id)` says a message is durably handled, and
    `send_acks()` tells the producer.
    """

    def __init__(self, ctx: zmq.Context, endpoint: str, topic: str, latest: bool,
                 hwm: int = LATEST_HWM, max_msg_bytes: int = DEFAULT_MAX_MSG_BYTES,
                 curve: Curve | None = None, peer: str = "") -> None:
        self.latest = latest
        self.sock = _socket(ctx, zmq.SUB if latest else zmq.DEALER, max_msg_bytes, curve, server=False)
        # Latest-wins: a small queue; lossless: the link's outbox (the producer bounds what is in flight)
        self.sock.rcvhwm = max(1, int(hwm)) if latest else max(1, int(hwm)) + 16
        self.receipts = Receipts(max(RECEIPTS_MIN, 4 * int(hwm)))
        if latest:
            self.sock.setsockopt(zmq.SUBSCRIBE, topic.encode())
        else:
            self.sock.routing_id = (peer or f"{topic}/0").encode()
            self.sock.linger = 1000  # the last acknowledgements get out after close
        self.sock.connect(endpoint)
        # Lossless: a new process says hello (queued until connected) and handles nothing before the welcome
        self.welcomed = latest
        self._hello_at = 0.0
        if not latest:
            self._hello()
        self.received = 0
        self.dropped = 0
        self.foreign = 0
        self.gaps = 0
        self.last_error = ""
        self.last_topic = ""
        self._last_seq: dict[str, int] = {}
        # In-band end-of-stream ids received, not yet acknowledged: acknowledging one at once would let the
        # producer forget it while the messages before it are still being handled here, and a restart of
        # this process would then be sent those again but never the end (the producer, still waiting for
        # their acknowledgements, has not reported its end either): a batch job that never ends.
        self.eos_ids: list[str] = []

    @property
    def duplicates(self) -> int:
        return self.receipts.duplicates

    def _hello(self) -> None:
        """Ask the producer for everything unacknowledged (delivery protocol)."""
        try:
            self.sock.send(HELLO, zmq.NOBLOCK)
        except zmq.Again:
            pass  # the producer is away: said again when its messages come without a welcome
        self._hello_at = time.monotonic()

    def complete(self, msg_id: str) -> None:
        """The message `msg_id` is durably handled (acknowledged with the next send_acks())."""
        self.receipts.complete(msg_id)

    def complete_eos(self) -> None:
        """This node has handled everything before the end of stream: acknowledge the end too."""
        for msg_id in self.eos_ids:
            self.receipts.complete(msg_id)
        self.eos_ids.clear()

    def send_acks(self) -> None:
        ids = self.receipts.take()
        if self.latest or not ids:
            return
        try:
            self.sock.send_multipart([ACK, msgpack.packb(ids, use_bin_type=True)], zmq.NOBLOCK)
        except zmq.Again:  # the producer is away: acknowledge again with the next ones
            self.receipts.to_ack[:0] = ids

    def _recv_one(self) -> Message | None:
        """One message without blocking; None when nothing is queued. Foreign bytes -> counted, skipped."""
        while True:
            try:
                parts = self.sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return None
            if not self.latest and len(parts) == 1 and parts[0].bytes == WELCOME:
                self.welcomed = True  # what follows is the resend, in order
                continue
            if not self.welcomed:
                # Sent before the producer read our hello: resent after the welcome (delivery protocol)
                if time.monotonic() - self._hello_at >= HELLO_AGAIN_S:
                    self._hello()
                continue
            try:
                self.last_topic, msg = unpack(parts)
            except ForeignMessage as e:
                self.foreign += 1
                self.last_error = str(e)
                continue
            if not self.latest:
                if not self.receipts.admit(msg.id):
                    continue  # a resend of what arrived already
                if msg.type == "eos":
                    self.eos_ids.append(msg.id)  # acknowledged once this node has ended (complete_eos)
            prev = self._last_seq.get(msg.stream)
            if prev is not None and msg.seq > prev + 1:
                self.gaps += msg.seq - prev - 1  # dropped upstream (producer HWM)
            self._last_seq[msg.stream] = msg.seq
            self.received += msg.type != "eos"
            return msg

    def receive(self) -> Message | None:
        msg = self._recv_one()
        if msg is None or not self.latest or msg.type == "eos":
            return msg
        while True:  # drain: latest wins, but never skip past an end-of-stream
            nxt = self._recv_one()
            if nxt is None:
                return msg
            self.dropped += 1
            msg = nxt
            if msg.type == "eos":
                return msg

    def receive_many(self, limit: int) -> list[Message]:
        """Every queued message in order, up to `limit`, stopping after an end-of-stream (lossless
        inputs; also taps on a latest-wins link that must show each message, e.g. `facesleuth subscribe`)."""
        out: list[Message] = []
        while len(out) < limit:
            msg = self._recv_one()
            if msg is None:
                break
            out.append(msg)
            if msg.type == "eos":
                break
        return out

    def close(self) -> None:
        self.send_acks()
        self.sock.close(linger=0 if self.latest else 1000)


def poll_inputs(poller: zmq.Poller, timeout_ms: int) -> list[zmq.Socket]:
    """Sockets with a message ready (thin wrapper so nodes need not import zmq)."""
    return [s for s, _ in poller.poll(timeout_ms)]


def new_poller(inputs: Sequence[Input]) -> zmq.Poller:
    p = zmq.Poller()
    for i in inputs:
        p.register(i.sock, zmq.POLLIN)
    return p


def context() -> zmq.Context:
    """A fresh zmq context for this process (call after fork/spawn)."""
    return zmq.Context()


# -------------------------------------------------------------------------------- the public event stream


REPLAY_LIMIT_DEFAULT = 1000  # events per replay answer when the request names no limit
REPLAY_LIMIT_MAX = 10000  # and at most this many, whatever it names
REPLAY_REQUEST_MAX = 4096  # bytes; larger requests get an error reply
_REPLAY_HARD_MAX = 64 * 1024  # libzmq drops the connection of a client sending more than this at once
_REPLAY_KEYS = {"since", "limit"}


def replay_request(body: bytes, max_bytes: int = REPLAY_REQUEST_MAX, max_limit: int = REPLAY_LIMIT_MAX) -> tuple[int, int]:
    """(since, limit) of one replay request `{"since": int >= 0, "limit": int}`, both optional; the limit
    is clamped to 1..max_limit (-1 or 0 ask for one event, not for all). ValueError naming what is wrong."""
    if len(body) > max_bytes:
        raise ValueError(f"request of {len(body)} bytes (at most {max_bytes})")
    try:
        req = msgpack.unpackb(body, raw=False)
    except Exception as e:  # msgpack raises several types for garbage
        raise ValueError(f"not msgpack ({type(e).__name__})") from None
    if not isinstance(req, dict):
        raise ValueError(f"a {type(req).__name__}, expected a map {{since: int, limit: int}}")
    unknown = sorted(map(repr, set(req) - _REPLAY_KEYS))
    if unknown:
        raise ValueError(f"unknown key(s) {', '.join(unknown)} (known: since, limit)")
    since, limit = req.get("since", 0), req.get("limit", REPLAY_LIMIT_DEFAULT)
    for key, value in (("since", since), ("limit", limit)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{key} must be an int, got {type(value).__name__}")
    if since < 0:
        raise ValueError(f"since must be >= 0, got {since}")
    return since, min(max(limit, 1), max_limit)


class EventServer:
    """The public `mer.event` stream: a PUB socket sending `[b"mer.event", msgpack(event)]` and a replay
    endpoint (ROUTER) answering `msgpack({"since": N, "limit": M})` with
    `msgpack({"events": [...], "last_seq": L})`, or `{"error": "..."}` for anything else (checked by
    `replay_request`; counted in `bad_requests`). DEALER and REQ clients are both answered (a REQ
    client's empty delimiter frame is kept in the reply).

    Two frames and plain msgpack maps, so any language with ZeroMQ and msgpack reads it. The replay
    endpoint is served by a thread reading the durable event log (`since(seq, limit)` callable).
    """

    def __init__(self, ctx: zmq.Context, pub_endpoint: str, replay_endpoint: str,
                 since: Any, last_seq: Any, curve: Curve | None = None,
                 max_request_bytes: int = REPLAY_REQUEST_MAX, max_limit: int = REPLAY_LIMIT_MAX) -> None:
        import threading

        self.pub = _socket(ctx, zmq.PUB, DEFAULT_MAX_MSG_BYTES, curve, server=True)
        self.pub.sndhwm = 10000
        self._replay = _socket(ctx, zmq.ROUTER, max(_REPLAY_HARD_MAX, max_request_bytes + 64), curve, server=True)
        try:
            _bind(self.pub, pub_endpoint, "mer.event")
            _bind(self._replay, replay_endpoint, "replay")
        except UserError:
            self.pub.close(0)
            self._replay.close(0)
            raise
        self._since, self._last_seq = since, last_seq
        self.max_request_bytes, self.max_limit = max_request_bytes, max_limit
        self.requests = 0
        self.bad_requests = 0
        self.last_error = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="replay", daemon=True)
        self._thread.start()

    def publish(self, event: dict[str, Any]) -> None:
        self.pub.send_multipart([EVENT_TOPIC_BYTES, msgpack.packb(event, use_bin_type=True)])

    def _answer(self, parts: list[bytes]) -> dict[str, Any]:
        # [identity, body] from a DEALER, [identity, b"", body] from a REQ
        if len(parts) not in (2, 3) or (len(parts) == 3 and parts[1]):
            raise ValueError(f"{len(parts) - 1} frames, expected one request frame")
        since, limit = replay_request(parts[-1], self.max_request_bytes, self.max_limit)
        return {"events": self._since(since, limit), "last_seq": self._last_seq()}

    def _serve(self) -> None:
        while not self._stop.is_set():
            if not self._replay.poll(100):
                continue
            try:
                parts = self._replay.recv_multipart(zmq.NOBLOCK)
            except zmq.ZMQError:
                continue
            try:
                reply = self._answer(parts)
                self.requests += 1
            except ValueError as e:
                self.bad_requests += 1
                self.last_error = str(e)
                reply = {"error": f"bad replay request: {e}"}
            except Exception as e:  # the log failing (disk, lock): the client hears it, the server goes on
                log.warning("replay failed: %s: %s", type(e).__name__, e)
                reply = {"error": f"replay failed: {type(e).__name__}: {e}"}
            envelope = parts[:2] if len(parts) == 3 and not parts[1] else parts[:1]
            try:
                self._replay.send_multipart([*envelope, msgpack.packb(reply, use_bin_type=True)], zmq.NOBLOCK)
            except zmq.ZMQError:
                pass

    def close(self, linger_ms: int = 1000) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._replay.close(0)
        self.pub.close(linger=linger_ms)


EVENT_TOPIC_BYTES = b"mer.event"


class EventClient:
    """Subscriber to the public event stream with gap repair through the replay endpoint.

    `events()` yields every event exactly once, in sequence order: on a gap (or on start with
    `since`), it asks the replay endpoint for what it missed.
    """

    def __init__(self, ctx: zmq.Context, pub_endpoint: str, replay_endpoint: str, since: int | None = None,
                 curve: Curve | None = None) -> None:
        self.ctx, self.replay_endpoint, self.curve = ctx, replay_endpoint, curve
        self.sub = _socket(ctx, zmq.SUB, DEFAULT_MAX_MSG_BYTES, curve, server=False)
        self.sub.setsockopt(zmq.SUBSCRIBE, EVENT_TOPIC_BYTES)
        self.sub.connect(pub_endpoint)
        self.last_seq = since
        self.repaired = 0
        self.foreign = 0

    def replay(self, since: int, timeout_s: float = 5.0) -> list[dict[str, Any]]:
        """Events with seq > since from the replay endpoint (raises TimeoutError, RuntimeError)."""
        out: list[dict[str, Any]] = []
        while True:
            req = _socket(self.ctx, zmq.DEALER, DEFAULT_MAX_MSG_BYTES, self.curve, server=False)
            try:
                req.connect(self.replay_endpoint)
                req.send(msgpack.packb({"since": since, "limit": 1000}))
                if not req.poll(int(timeout_s * 1000)):
                    raise TimeoutError(f"no answer from replay endpoint {self.replay_endpoint}")
                reply = msgpack.unpackb(req.recv(), raw=False)
            finally:
                req.close(0)
            if "error" in reply:
                raise RuntimeError(reply["error"])
            batch = reply["events"]
            out.extend(batch)
            if not batch or batch[-1]["seq"] >= reply["last_seq"]:
                return out
            since = batch[-1]["seq"]

    def events(self, timeout_s: float | None = None):  # -> Iterator[dict]
        """Yield events in order, repairing gaps; stop after `timeout_s` without any event."""
        if self.last_seq is not None:
            for ev in self.replay(self.last_seq):
                self.last_seq = ev["seq"]
                yield ev
        while True:
            if not self.sub.poll(None if timeout_s is None else int(timeout_s * 1000)):
                return
            parts = self.sub.recv_multipart()
            try:
                ev = msgpack.unpackb(parts[1], raw=False)
                seq = int(ev["seq"])
            except Exception:
                self.foreign += 1
                continue
            if self.last_seq is not None and seq <= self.last_seq:
                continue  # already delivered (replayed)
            if self.last_seq is not None and seq > self.last_seq + 1:
                for missed in self.replay(self.last_seq):
                    if missed["seq"] < seq:
                        self.repaired += 1
                        self.last_seq = missed["seq"]
                        yield missed
            self.last_seq = seq
            yield ev

    def close(self) -> None:
        self.sub.close(0)
