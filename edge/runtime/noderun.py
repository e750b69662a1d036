"""The process that hosts one node: `python -m edge.runtime.noderun SPEC.json` (started by edge.runtime.supervisor).

It builds the node, binds its outputs and connects its inputs, reports `ready` to the supervisor once
every expected subscriber is attached (so no message is lost to a slow joiner), waits for `start`
(sources only), then runs the node's loop and reports stats every second. Messages reach `process()` in
the order the node's input policy gives (edge.runtime.sync). End of stream: a source that returns, or a node whose
every input link delivered `eos`, flushes (what the input policy holds back, then `end_of_stream()`),
sends `eos` on its outputs and exits 0. SIGTERM/SIGINT stop it; `teardown()` always runs.

The control protocol (a DEALER to the supervisor's ROUTER) and the stats record are in edge.runtime.control.
"""

from __future__ import annotations

import os
import signal


def _exit_before_main(signum: int, frame: object) -> None:
    """A stop while this module still imports (numpy, zmq: a second or more on a busy device): nothing is
    set up yet, so leave at once and quietly (Python's own SIGINT handler would print a traceback)."""
    os._exit(128 + signum)


signal.signal(signal.SIGINT, _exit_before_main)
signal.signal(signal.SIGTERM, _exit_before_main)

import json  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections import deque  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import zmq  # noqa: E402

from edge.errors import EXIT_BAD_INPUT, FacesleuthError, NodeFailed, Unavailable  # noqa: E402
from edge.runtime import checkpoint  # noqa: E402
from edge.runtime.control import (  # noqa: E402
    CONTROL_ID_ENV,
    NODE_EXIT_UNAVAILABLE,
    RESTARTS_ENV,
    ControlError,
    NodeStats,
    Op,
    encode,
    parse,
)
from edge.runtime.messages import Message  # noqa: E402
from edge.runtime.node import Node, get_node_class  # noqa: E402
from edge.runtime.sync import InputSync, deliver  # noqa: E402
from edge.runtime.transport import LATEST_HWM, Curve, Input, Output, context, new_poller  # noqa: E402
from edge.runtime.zap import ZapHandler  # noqa: E402

STATS_PERIOD_S = 1.0
READY_TIMEOUT_S = 20.0
BATCH_MAX = 64  # messages handed to process_batch() at once (lossless inputs)
DRAIN_QUIET_S = 0.2  # after every input ended: stop once nothing arrived for this long
FAILING_STREAK_MAX = 100  # process() raising the same exception type this many times in a row: the node
# is broken for this input (e.g. an allocation that can never succeed), not unlucky: it fails


class Failing(NodeFailed):
    """process() failed the same way on every one of the last FAILING_STREAK_MAX messages."""


class _Latency:
    """Processing time per message, last 1024 samples, reported as p50/p99 in ms."""

    def __init__(self) -> None:
        self.samples: deque[float] = deque(maxlen=1024)

    def add(self, seconds: float) -> None:
        self.samples.append(seconds)

    def percentiles(self) -> tuple[float, float]:
        if not self.samples:
            return 0.0, 0.0
        a = np.fromiter(self.samples, float) * 1e3
        return float(np.percentile(a, 50)), float(np.percentile(a, 99))


class NodeProcess:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.name = spec["name"]
        self.log = logging.getLogger(f"node.{self.name}")
        self.stop_requested = False
        self.in_setup = False  # a stop signal during setup (model loading, camera opening) exits at once
        self.ctx = context()
        try:
            self._build(spec)
        except FacesleuthError as e:  # e.g. a pinned endpoint in use: the supervisor hears why
            if hasattr(self, "control"):
                self._send_control(Op.FAILED, reason=str(e))
            if getattr(self, "zap", None) is not None:
                self.zap.close()
            self.ctx.destroy()  # each socket's own linger: the control socket's lets the report out
            raise
        except BaseException:
            if getattr(self, "zap", None) is not None:
                self.zap.close()
            self.ctx.destroy(0)
            raise

    def _build(self, spec: dict[str, Any]) -> None:
        self.control = self.ctx.socket(zmq.DEALER)
        self.control.linger = 1000
        # NAME/TOKEN from the supervisor (a new token per spawn); the bare name when run by hand
        self.control.identity = os.environ.get(CONTROL_ID_ENV, self.name).encode()
        self.control.connect(spec["control"])
        curve = Curve(**{k: v.encode() if isinstance(v, str) else v for k, v in spec["curve"].items()}) \
            if spec.get("curve") else None  # keys travel in the 0600 spec file of the private run dir
        self.zap = None
        if spec.get("allowed_clients") is not None:  # before any server binds: libzmq lets all in without it
            run_keys = frozenset(k.encode() for k in spec["allowed_clients"])
            if spec.get("allowed_dir"):  # the graph's key directory: its clients as they are at each handshake
                from edge.runtime.keys import AllowList

                listed = AllowList(spec["allowed_dir"])
                self.zap = ZapHandler(self.ctx, lambda: run_keys | listed())
            else:
                self.zap = ZapHandler(self.ctx, run_keys)
        self.outputs = {
            port: Output(self.ctx, o["topic"], o["pub"], [tuple(x) for x in o.get("push", [])],
                         hwm=o.get("hwm", LATEST_HWM), max_msg_bytes=spec["max_msg_bytes"], curve=curve)
            for port, o in spec["outputs"].items()
        }
        self.inputs: list[tuple[str, Input]] = []
        self._queue: dict[int, int] = {}  # id(input) -> its link's queue (the producer's outbox capacity)
        # Node.ack_retain(): the newest handled messages of each lossless input left unacknowledged (ids, oldest
        # first), so that a restarted process is sent them again and rebuilds the state they made.
        self._retained: dict[int, deque[str]] = {}
        self.input_src: list[str] = []  # producer node of each input link
        for port, links in spec["inputs"].items():
            for link in links:
                hwm = link.get("queue", LATEST_HWM) if not link["latest"] else LATEST_HWM
                link_curve = curve.for_server(link["server_key"].encode()) \
                    if curve is not None and link.get("server_key") else curve  # the producer's server key
                self.inputs.append((port, Input(self.ctx, link["endpoint"], link["topic"], link["latest"], hwm=hwm,
                                                max_msg_bytes=spec["max_msg_bytes"], curve=link_curve,
                                                peer=link.get("peer", ""))))
                self._queue[id(self.inputs[-1][1])] = int(hwm)
                self.input_src.append(link.get("src", ""))
        self.links_ended: set[int] = set()  # in-band eos received
        self.producers_ended: set[str] = set()  # relayed by the supervisor
        self.processed = 0
        self.errors = 0
        self.control_dropped = 0
        self._streak: tuple[str, int] = ("", 0)  # exception type raised by the last process() calls, and how often
        self.latency = _Latency()
        self.t_start = time.monotonic()
        self._last_stats = 0.0
        self._template = Message("eos", stream=spec.get("stream", "cam0"))
        cls = get_node_class(spec["type"])
        self.node: Node = cls(self.name, spec["params"], self._emit, lambda: self.stop_requested)
        self.node.run_info = {"graph": spec.get("graph", ""), "stats": spec.get("stats"),
                              "inputs": sorted({port for port, _ in self.inputs}),  # the connected ones
                              "restarts": int(os.environ.get(RESTARTS_ENV, "0"))}
        self.sync = InputSync(self.node)
        self.retain = self.node.ack_retain(spec["params"])
        # Acknowledged delivery (edge.runtime.delivery): what is left to do before an input message
        # counts as handled, per id: (its input, deliveries to process() still due, ids of the messages
        # emitted from it that are not acknowledged yet).
        self.ack_downstream = self.node.ack_after == "downstream"
        self._handling: dict[str, tuple[Input, list[int], set[str]]] = {}
        self._emitted_from: dict[str, str] = {}  # id of an unacknowledged emitted message -> its cause
        self._delivering: set[str] = set()  # ids of the batch process() has now
        self._derived: dict[str, int] = {}  # messages derived so far from each of them
        # Checkpoints (edge.runtime.checkpoint): handled inputs held until the next one, per input; the
        # ids of the last two batches acknowledged with one; ids handled in part or waiting on downstream.
        self.ckpt_every = self.node.checkpoint_every(spec["params"])
        self.ckpt_path = Path(spec["checkpoint"]) if self.ckpt_every and spec.get("checkpoint") else None
        self._held: dict[int, list[str]] = {}
        self._batches: deque[list[list[str]]] = deque(maxlen=2)
        self._touched: set[str] = set()
        self._in_delivery = False
        self.checkpoints = 0
        self._ckpt_failed = False

    # -- control channel ------------------------------------------------------------------------------
    def _send_control(self, op: Op, **kw: Any) -> None:
        self.control.send(encode(op, **kw))

    def _read_control(self) -> None:
        while self.control.poll(0):
            parts = self.control.recv_multipart()
            try:
                if len(parts) != 1:
                    raise ControlError(f"{len(parts)} frames, expected 1")
                op, msg = parse(parts[0])
            except ControlError as e:
                self.control_dropped += 1
                self.log.warning("control: dropped a message: %s", e)
                continue
            if op is Op.STOP:
                self.stop_requested = True
            elif op is Op.UPSTREAM_EOS:
                self.producers_ended.add(msg.get("node", ""))
            elif op is Op.START:
                self.started = True

    def _emit(self, port: str, msg: Message) -> None:
        self._template = msg
        out = self.outputs[port]
        cause = msg.cause if msg.cause in self._delivering else ""
        if out.acked_links and not msg.id:
            if cause:  # the same id again if this node handles a resent `cause` again (restarted)
                k = self._derived.get(cause, 0)
                self._derived[cause] = k + 1
                msg.id = f"{cause}>{self.name}.{k}"
            else:
                msg.id = out.next_id()
        if out.send(msg, stop=lambda: self.stop_requested) and out.acked_links and cause and self.ack_downstream:
            self._handling[cause][2].add(msg.id)
            self._emitted_from[msg.id] = cause
        if out.acked_links:
            self._service_acks()
        self._maybe_stats()

    # -- acknowledged delivery ----------------------------------------------------------------------------
    def _service_acks(self) -> None:
        """Acknowledgements from downstream release the inputs they came from; then ours go upstream."""
        for out in self.outputs.values():
            for msg_id in out.take_acked():
                cause = self._emitted_from.pop(msg_id, None)
                if cause is not None and cause in self._handling:
                    self._handling[cause][2].discard(msg_id)
                    self._maybe_complete(cause)
        self._maybe_checkpoint()
        for _, inp in self.inputs:
            inp.send_acks()

    def _maybe_complete(self, msg_id: str) -> None:
        inp, due, waiting = self._handling[msg_id]
        if due[0] <= 0 and not waiting:
            del self._handling[msg_id]
            self._touched.discard(msg_id)
            self._release(inp, msg_id)

    def _release(self, inp: Input, msg_id: str) -> None:
        """Acknowledge a handled message, or keep it among the node's `ack_retain` newest of its input. At most
        the link's queue - 1 are kept: the producer's outbox must keep room to send what releases them."""
        if self.ckpt_path is not None:  # acknowledged with the next checkpoint
            self._held.setdefault(self._index(inp), []).append(msg_id)
            return
        keep = min(self.retain, self._queue.get(id(inp), 1) - 1)
        if keep <= 0:
            inp.complete(msg_id)
            return
        held = self._retained.setdefault(id(inp), deque())
        held.append(msg_id)
        while len(held) > keep:
            inp.complete(held.popleft())

    def _release_retained(self) -> None:
        """End of stream: no state is needed any more, everything held is acknowledged, and what is
        released from now on (downstream acknowledging the last results) at once."""
        self.retain, self.ckpt_path = 0, None
        for _, inp in self.inputs:
            for msg_id in self._retained.pop(id(inp), ()):
                inp.complete(msg_id)
        for k, ids in self._held.items():
            for msg_id in ids:
                self.inputs[k][1].complete(msg_id)
        self._held = {}

    # -- checkpoints (edge.runtime.checkpoint) ------------------------------------------------------------
    def _index(self, inp: Input) -> int:
        return next(k for k, (_, i) in enumerate(self.inputs) if i is inp)

    def _maybe_checkpoint(self) -> None:
        """Between messages: checkpoint once a batch is handled (acknowledged downstream, or waiting only
        on that) and nothing is handled in part; past checkpoint.SLACK more, the oldest go without
        (edge.runtime.checkpoint)."""
        if self.ckpt_path is None or self._in_delivery or not (self._held or self._touched):
            return
        waiting = self._waiting()
        if waiting is not None:
            counts = [len(self._held.get(k, ())) + len(waiting.get(k, ())) for k in range(len(self.inputs))]
            if max(counts) >= self.ckpt_every:
                self._checkpoint(waiting)
                return
        for k, ids in self._held.items():
            while len(ids) >= self.ckpt_every + checkpoint.SLACK:
                self.inputs[k][1].complete(ids.pop(0))

    def _waiting(self) -> dict[int, list[str]] | None:
        """The handled inputs that wait only on downstream's acknowledgements, by input; None while one
        is handled in part (a later stage of frame-order delivery is due): no moment to checkpoint."""
        waiting: dict[int, list[str]] = {}
        for msg_id in self._touched:
            inp, due, _ = self._handling[msg_id]
            if due[0] > 0:
                return None
            waiting.setdefault(self._index(inp), []).append(msg_id)
        return waiting

    def _outboxes(self) -> dict[str, list[list[tuple[str, list]]]]:
        """Every output's unacknowledged messages, per link: saved with a checkpoint, so that the inputs
        they came from can be acknowledged with it (a restarted process sends them again)."""
        return {port: out.unacknowledged() for port, out in self.outputs.items() if out.acked_links}

    def _checkpoint(self, waiting: dict[int, list[str]]) -> None:
        assert self.ckpt_path is not None
        batch = [list(self._held.get(k, ())) + list(waiting.get(k, ())) for k in range(len(self.inputs))]
        done = [[i for b in (*self._batches, batch) for i in b[k]] for k in range(len(self.inputs))]
        try:
            t0 = time.perf_counter()
            size = checkpoint.save(self.ckpt_path, {"node": self.node.save_state(), "outboxes": self._outboxes()},
                                   done)
            if not self.checkpoints:
                self.log.info("checkpoint every %d inputs: %.1f MB, %.1f ms", self.ckpt_every, size / 1e6,
                              (time.perf_counter() - t0) * 1e3)
            self.checkpoints += 1
        except Exception as e:  # a full disk, or a state pickle refuses: go on (a restart starts from scratch)
            if not self._ckpt_failed:
                self.log.warning("checkpoint not written (%s): a restart will not restore this state", e)
            self._ckpt_failed = True
            self.ckpt_path.unlink(missing_ok=True)  # an older one would not match what is acknowledged now
            batch = [list(self._held.get(k, ())) for k in range(len(self.inputs))]
            waiting = {}  # their results are in no checkpoint: they wait for downstream as without one
        self._batches.append(batch)
        # Their results wait in the checkpoint's outboxes now: downstream's acknowledgements of them
        # release nothing any more.
        for ids in waiting.values():
            for msg_id in ids:
                del self._handling[msg_id]
                self._touched.discard(msg_id)
        self._emitted_from = {m: c for m, c in self._emitted_from.items() if c in self._handling}
        for k, ids in enumerate(batch):
            for msg_id in ids:
                self.inputs[k][1].complete(msg_id)
        self._held = {}

    def _restore(self) -> None:
        """A restarted process goes on from its predecessor's last checkpoint; a first one removes any."""
        if self.ckpt_path is None or not self.ckpt_path.exists():
            return
        if not self.node.run_info.get("restarts"):
            self.ckpt_path.unlink(missing_ok=True)
            return
        try:
            state, done = checkpoint.load(self.ckpt_path)
            self.node.load_state(state["node"])
            for port, per_link in state["outboxes"].items():
                self.outputs[port].restore(per_link)
        except Exception as e:  # unreadable, or a state this node's code no longer takes: never a crash loop
            self.log.warning("checkpoint %s not restored (%s): starting from scratch", self.ckpt_path, e)
            return
        for (_, inp), ids in zip(self.inputs, done, strict=False):
            inp.receipts.remember(ids)
        self.log.info("restored its state from the last checkpoint (%d input(s) before it dropped if resent)",
                      sum(map(len, done)))

    def _drain_outputs(self) -> None:
        """After end of stream: wait until downstream acknowledged everything (a consumer restarting
        meanwhile gets it all again), acknowledging our inputs as it comes; a stop ends the wait."""
        t_log = time.monotonic()
        while not self.stop_requested and not all(o.drained for o in self.outputs.values()):
            self._service_acks()
            socks = [s for o in self.outputs.values() for s in o.sockets()]
            zmq.select([*socks, self.control], [], [], 0.05)
            self._read_control()
            self._maybe_stats()
            if time.monotonic() - t_log > 10.0:
                t_log = time.monotonic()
                self.log.warning("end of stream: waiting for %d message(s) to be acknowledged downstream",
                                 sum(o.outbox_fill for o in self.outputs.values()))
        self._service_acks()

    def stats(self) -> dict[str, Any]:
        """This node's NodeStats as its wire map."""
        p50, p99 = self.latency.percentiles()
        elapsed = max(1e-9, time.monotonic() - self.t_start)
        sent = sum(o.sent for o in self.outputs.values())
        return NodeStats(
            node=self.name, type=self.spec["type"],
            messages_in=sum(i.received for _, i in self.inputs), messages_out=sent,
            fps=(self.processed if self.inputs else sent) / elapsed, p50_ms=p50, p99_ms=p99,
            dropped_in=sum(i.dropped + i.gaps for _, i in self.inputs),
            dropped_out=sum(o.dropped for o in self.outputs.values()),
            foreign=sum(i.foreign for _, i in self.inputs) + sum(o.foreign for o in self.outputs.values())
            + self.control_dropped + self.node.rejected() + (self.zap.denied if self.zap is not None else 0),
            errors=self.errors,
            outbox=sum(o.outbox_fill for o in self.outputs.values()),
            resent=sum(o.resent for o in self.outputs.values()),
            duplicates=sum(i.duplicates for _, i in self.inputs),
        ).to_dict()

    def _maybe_stats(self) -> None:
        now = time.monotonic()
        if now - self._last_stats >= STATS_PERIOD_S:
            self._last_stats = now
            self._send_control(Op.STATS, stats=self.stats())
            self._read_control()

    # -- lifecycle ------------------------------------------------------------------------------------
    def wait_ready(self) -> None:
        expected = self.spec.get("expected_subs", {})
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not self.stop_requested:
            missing = {p: n for p, n in expected.items() if self.outputs[p].poll_subscriptions() < n}
            if not missing:
                break
            if time.monotonic() > deadline:
                self.log.warning("subscribers missing after %.0f s on %s; starting anyway",
                                 READY_TIMEOUT_S, ", ".join(missing))
                break
            time.sleep(0.005)
        self.started = False
        self._send_control(Op.READY)
        if self.node.is_source():
            while not self.started and not self.stop_requested:
                if self.control.poll(100):
                    self._read_control()

    def run(self) -> int:
        try:
            self.in_setup = True
            self.node.setup()
            self.in_setup = False
            self._restore()
        except FacesleuthError as e:
            self.log.error("setup failed: %s", e)
            self._send_control(Op.FAILED, reason=str(e))
            # Setup refused its input (exit 2: not retried), found a capability missing (not retried either),
            # or gave up on a failing resource (NodeFailed: exit 1, the restart policy applies).
            if isinstance(e, NodeFailed):
                return 1
            return NODE_EXIT_UNAVAILABLE if isinstance(e, Unavailable) else EXIT_BAD_INPUT
        except Exception as e:  # a bug or an unexpected OS error: one line (the traceback with -v)
            self.log.error("setup failed: %s: %s", type(e).__name__, e, exc_info=self.log.isEnabledFor(logging.DEBUG))
            self._send_control(Op.FAILED, reason=f"{type(e).__name__}: {e}")
            return 1
        try:
            self.wait_ready()
            if self.node.is_source():
                self.node.run_source()
                ended = not self.stop_requested
            else:
                ended = self._loop()
            if ended:
                for stage, batch in self.sync.flush():
                    self._deliver(stage, batch)
                self.node.end_of_stream()
                self._release_retained()
                for out in self.outputs.values():
                    out.send_eos(self._template, "end of stream")
                self._drain_outputs()  # the supervisor hears of the end once downstream has everything
                for _, inp in self.inputs:  # and upstream, that its end was handled (Input.eos_ids)
                    inp.complete_eos()
                    inp.send_acks()
                if not self.stop_requested:
                    self._send_control(Op.EOS, stats=self.stats())
            return 0
        except FacesleuthError as e:
            self.log.error("%s", e)
            self._send_control(Op.FAILED, reason=str(e))
            return 1
        except Exception as e:
            self.log.error("failed: %s: %s", type(e).__name__, e, exc_info=self.log.isEnabledFor(logging.DEBUG))
            self._send_control(Op.FAILED, reason=f"{type(e).__name__}: {e}")
            return 1
        finally:
            try:
                self.node.teardown()
            finally:
                self._send_control(Op.STATS, stats=self.stats())
                for o in self.outputs.values():
                    o.close()
                for _, i in self.inputs:
                    i.close()
                self.control.close()
                if self.zap is not None:
                    self.zap.close()
                self.ctx.term()

    def _all_inputs_ended(self) -> bool:
        return all(i in self.links_ended or src in self.producers_ended
                   for i, src in enumerate(self.input_src))

    def _loop(self) -> bool:
        """Process messages until stopped (False) or every input has ended and is drained (True)."""
        by_sock = {inp.sock: (k, port, inp) for k, (port, inp) in enumerate(self.inputs)}
        poller = new_poller([i for _, i in self.inputs])
        poller.register(self.control, zmq.POLLIN)
        for out in self.outputs.values():
            for s in out.sockets():
                poller.register(s, zmq.POLLIN)
        quiet_since: float | None = None
        while not self.stop_requested:
            ready = dict(poller.poll(50))
            if self.control in ready:
                self._read_control()
            got = False
            for sock in ready:
                if sock not in by_sock:  # the control socket, or acknowledgements from downstream
                    continue
                k, port, inp = by_sock[sock]
                msgs = [inp.receive()] if inp.latest else inp.receive_many(BATCH_MAX)
                msgs = [m for m in msgs if m is not None]
                got = got or bool(msgs)
                if msgs and msgs[-1].type == "eos":
                    self.links_ended.add(k)
                    msgs.pop()
                if msgs:
                    self._process(port, msgs, inp)
            self._service_acks()
            self._maybe_stats()
            if self._all_inputs_ended():
                # Drain: what the producers sent before ending may still be in flight.
                if got or quiet_since is None:
                    quiet_since = time.monotonic()
                elif time.monotonic() - quiet_since > DRAIN_QUIET_S:
                    return True
        return False

    def _process(self, port: str, msgs: list[Message], inp: Input | None = None) -> None:
        if inp is not None and not inp.latest:
            for m in msgs:
                if m.id:
                    stages = len(self.node.sync_stages(port, m)) if self.sync.frame_order else 1
                    self._handling[m.id] = (inp, [stages], set())
        t0 = time.perf_counter()
        for stage, batch in self.sync.add(port, msgs):
            self._deliver(stage, batch)
        dt = (time.perf_counter() - t0) / len(msgs)
        for _ in msgs:
            self.latency.add(dt)
        self.processed += len(msgs)

    def _deliver(self, stage: str, msgs: list[Message]) -> None:
        self._delivering = {m.id for m in msgs if m.id in self._handling}
        self._in_delivery = True  # no checkpoint while process() runs (it may service acknowledgements)
        try:
            self._deliver_to_node(stage, msgs)
        except NodeFailed:  # e.g. the event log cannot be written: unacknowledged, the next process gets it
            self._delivering = set()
            raise
        finally:
            self._in_delivery = False
        # Handled, also where process() raised and the error was counted: a message that fails is not retried.
        for msg_id in self._delivering:
            self._handling[msg_id][1][0] -= 1
            self._touched.add(msg_id)
            self._maybe_complete(msg_id)
        self._delivering, self._derived = set(), {}
        self._maybe_checkpoint()

    def _deliver_to_node(self, stage: str, msgs: list[Message]) -> None:
        try:
            deliver(self.node, stage, msgs)
            self._streak = ("", 0)
            return
        except NodeFailed:
            raise
        except FacesleuthError as e:
            self.log.error("%s", e)
            error = e
        except Exception as e:  # a bug in one message must not take the stream down
            self.log.error("process() failed on %s: %s: %s", stage, type(e).__name__, e,
                           exc_info=self.log.isEnabledFor(logging.DEBUG))
            error = e
        self.errors += 1
        kind = type(error).__name__
        n = self._streak[1] + len(msgs) if self._streak[0] == kind else len(msgs)
        self._streak = (kind, n)
        if n >= FAILING_STREAK_MAX:
            raise Failing(f"process() failed on {n} messages in a row, the same way each time "
                          f"({kind}: {error}): giving up")


def _die_with_parent() -> None:
    """Linux: get SIGTERM if the supervisor dies, so a killed runner leaves no orphans."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    spec = json.loads(Path(argv[0]).read_text())
    logging.basicConfig(
        level=spec.get("log_level", "INFO"),
        format=f"%(asctime)s {spec['name']} %(levelname)s %(message)s", datefmt="%H:%M:%S",
    )
    _die_with_parent()
    proc: NodeProcess | None = None

    def on_signal(signum: int, frame: object) -> None:
        if proc is None or proc.in_setup:  # still importing / setting up: nothing to flush, exit now
            raise SystemExit(0)
        proc.stop_requested = True

    # Installed before the node's (possibly heavy: torch) imports, so a stop is never ignored.
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        proc = NodeProcess(spec)
    except FacesleuthError as e:
        logging.getLogger(f"node.{spec['name']}").error("%s", e)
        return e.exit_code
    rc = proc.run()
    # The work is done; interpreter shutdown (torch's is slow) resets Python-level handlers to the default,
    # and the supervisor's SIGINT, sent with `stop`, would then kill the exiting process (exit -2). Ignored
    # handlers are left alone by the shutdown; SIGKILL still ends a process that hangs here.
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, signal.SIG_IGN)
    return rc


if __name__ == "__main__":
    sys.exit(main())
