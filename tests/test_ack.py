"""Acknowledged delivery on lossless links (issue 27 item 1): nothing a dead consumer held is lost, nothing
is stored twice.

The process tests reproduce the issue's failure: the consumer is stalled (SIGSTOP) while the producer
sends, then killed (SIGKILL) with the messages in its socket buffers; before acknowledgements the
restarted events node received nothing and the log held 1 of 4. Socket-level tests cover the outbox
(backpressure when full, resend to a restarted consumer, duplicates dropped by id).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from edge.events.log import EventLog
from edge.runtime.messages import Message
from edge.runtime.transport import Input, Output


def _stored(db: Path) -> list[dict]:
    with EventLog(db, readonly=True) as log:
        return list(log.query())


def _stall_then_kill(g, victim: str, go: Path, settle_s: float = 0.4) -> int:
    """Every node connected; SIGSTOP `victim`, let the source send (go file), SIGKILL the victim."""
    g.wait_for(lambda: "nodes connected: starting sources" in g.stderr(), what="the graph to start")
    pid = g.node_pids()[victim]
    os.kill(pid, signal.SIGSTOP)
    go.touch()
    time.sleep(settle_s)  # the source sends everything: it sits in the stalled process's socket buffers
    os.kill(pid, signal.SIGKILL)
    return pid


def _events_node(tmp_path: Path, short_tmp: Path) -> str:
    return (f"{{name: events, type: events, params: {{db: {tmp_path / 'ev.db'}, pub: 'ipc://{short_tmp}/p.ipc', "
            f"replay: 'ipc://{short_tmp}/r.ipc', print: false}}, "
            "restart: {policy: on-failure, max_restarts: 2, backoff_s: 0.2}}")


def test_events_node_stalled_then_killed_ends_with_all_4_events_exactly_once(run_graph, tmp_path, short_tmp):
    go = tmp_path / "go"
    g = run_graph(f"""
    name: ack-events
    nodes:
      - {{name: src, type: test_events, params: {{count: 4, rate: 50, go_file: {go}}}}}
      - {_events_node(tmp_path, short_tmp)}
    connections: [src.events -> events.events]
    """)
    pid = _stall_then_kill(g, "events", go)
    assert g.wait(20) == 0, g.describe()
    assert f"events (pid {pid}) exited with code -9" in g.stderr()
    evs = _stored(tmp_path / "ev.db")
    assert [e["onset"]["frame"] for e in evs] == [0, 10, 20, 30], g.describe()
    assert [e["seq"] for e in evs] == [1, 2, 3, 4]


def test_a_classifier_killed_with_intervals_queued_loses_none_and_stores_none_twice(run_graph, tmp_path, short_tmp):
    go = tmp_path / "go"
    g = run_graph(f"""
    name: ack-intervals
    nodes:
      - {{name: spot, type: test_intervals, params: {{count: 6, rate: 100, go_file: {go}}}}}
      - name: cls
        type: test_classify
        restart: {{policy: on-failure, max_restarts: 2, backoff_s: 0.2}}
      - {_events_node(tmp_path, short_tmp)}
    connections: [spot.intervals -> cls.intervals, cls.events -> events.events]
    """)
    pid = _stall_then_kill(g, "cls", go)
    assert g.wait(20) == 0, g.describe()
    assert f"cls (pid {pid}) exited with code -9" in g.stderr()
    evs = _stored(tmp_path / "ev.db")
    assert sorted(e["track_id"] for e in evs) == list(range(6)), g.describe()
    assert [e["seq"] for e in evs] == list(range(1, 7))


def _frame(i: int) -> Message:
    return Message("frame", frame=i, arrays={"image": np.full((4, 4), i, np.uint8)})


def _take(inp: Input, n: int, timeout: float = 3.0, out: Output | None = None) -> list[Message]:
    """Up to `n` messages within `timeout` s (servicing the producer `out` as its node would)."""
    got: list[Message] = []
    deadline = time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        if out is not None:
            out.service()
        if inp.sock.poll(20):
            got += inp.receive_many(100)
    return got


def test_outbox_full_is_backpressure_and_a_restarted_consumer_gets_everything_again(zmq_context, endpoint):
    out = Output(zmq_context, "src.frames", endpoint("pub"), [(endpoint("link"), 3, "dst.frames/0")])
    first = Input(zmq_context, out.links[0].sock.last_endpoint.decode(), "src.frames", latest=False, hwm=3,
                  peer="dst.frames/0")
    try:
        for i in range(3):
            assert out.send(_frame(i))
        # The consumer has them but acknowledges nothing: a fourth is refused (the producer waits), not dropped.
        assert [m.frame for m in _take(first, 3, out=out)] == [0, 1, 2]
        t0 = time.monotonic()
        assert not out.send(_frame(3), block_timeout_s=0.3)
        assert time.monotonic() - t0 >= 0.3 and out.outbox_fill == 3
        first.close()  # the consumer dies with three messages unacknowledged
        second = Input(zmq_context, out.links[0].sock.last_endpoint.decode(), "src.frames", latest=False, hwm=3,
                       peer="dst.frames/0")
        try:
            got = _take(second, 3, out=out)  # its hello arrives: everything unacknowledged goes again
            assert [m.frame for m in got] == [0, 1, 2] and out.resent >= 3
            for m in got:
                second.complete(m.id)
            second.send_acks()
            acked = _wait_acked(out, 3)
            assert sorted(acked) == sorted(m.id for m in got) and out.outbox_fill == 0 and out.drained
            assert out.send(_frame(4), block_timeout_s=1.0)
            (m4,) = _take(second, 1, out=out)
            entry = out.links[0].outbox.entries[m4.id]
            entry.sent_at -= 60  # no acknowledgement in time: sent again, and dropped as a repeat
            out.service()
            assert _take(second, 1, 0.3) == [] and second.duplicates == 1
            second.complete(m4.id)
            second.send_acks()
            assert _wait_acked(out, 1) == [m4.id]
            # The acknowledgement was lost (say) and it comes once more: dropped, and acknowledged again.
            out.links[0].outbox.entries[m4.id] = entry
            out._unacked[m4.id] = 1
            entry.sent_at -= 600
            out.service()
            assert _take(second, 1, 0.3) == [] and second.duplicates == 2
            second.send_acks()
            assert _wait_acked(out, 1) == [m4.id]
        finally:
            second.close()
    finally:
        out.close(0)


def test_a_new_consumer_handles_nothing_sent_before_the_welcome(zmq_context, endpoint):
    """Regression (CI, test_faults flow kill): the producer sent a newer message to a restarted consumer
    before it read the hello; handled first, it overtook the resent older ones, and flow rebuilt its lag
    window from the wrong crops. A raw ROUTER plays the producer, to send in exactly that order."""
    import zmq

    from edge.runtime.delivery import HELLO, HELLO_AGAIN_S, WELCOME
    from edge.runtime.transport import pack

    router = zmq_context.socket(zmq.ROUTER)
    router.bind(endpoint("link"))
    inp = Input(zmq_context, router.last_endpoint.decode(), "src.frames", latest=False, hwm=8, peer="dst.frames/0")
    try:
        assert router.poll(3000) and router.recv_multipart() == [b"dst.frames/0", HELLO]
        msgs = [_frame(i) for i in range(3)]
        for i, m in enumerate(msgs):
            m.id = f"src.{i}"

        def send(m: Message) -> None:
            router.send_multipart([b"dst.frames/0", *pack("src.frames", m)])

        send(msgs[2])  # newer, before the producer read the hello
        time.sleep(HELLO_AGAIN_S + 0.1)
        assert _take(inp, 1, 0.3) == []  # not handled: it comes again with the resend
        # Messages but no welcome for HELLO_AGAIN_S: the consumer says hello again (its first may be lost)
        assert router.poll(3000) and router.recv_multipart() == [b"dst.frames/0", HELLO]
        router.send_multipart([b"dst.frames/0", WELCOME])
        for m in msgs:
            send(m)
        assert [m.frame for m in _take(inp, 3)] == [0, 1, 2] and inp.foreign == 0 and inp.duplicates == 0
    finally:
        inp.close()
        router.close(0)


def _wait_acked(out: Output, n: int, timeout: float = 3.0) -> list[str]:
    acked: list[str] = []
    deadline = time.monotonic() + timeout
    while len(acked) < n and time.monotonic() < deadline:
        acked += out.take_acked()
        time.sleep(0.01)
    return acked


def test_the_log_stores_an_event_once_per_delivery_id(tmp_path):
    with EventLog(tmp_path / "ev.db") as log:
        assert log.append({"stream": "cam0"}, "src.ab.1") == 1
        assert log.append({"stream": "cam0"}, "src.ab.1") == 0
        assert log.append({"stream": "cam0"}, "src.ab.2") == 2
        assert log.append({"stream": "cam0"}) == 3  # no id (another writer): always stored
        assert [e["seq"] for e in log.query()] == [1, 2, 3]


@pytest.mark.parametrize("capacity", [0, 100_001])
def test_outbox_size_is_bounded(capacity):
    from edge.runtime.delivery import Outbox

    with pytest.raises(ValueError, match="outside 1..100000"):
        Outbox(capacity)
