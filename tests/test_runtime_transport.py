"""The transport on real sockets: codec round trip, zero-copy views, latest-wins drop accounting, end of
stream, size limits, and foreign bytes dropped and counted (in-process and inside a running node)."""

from __future__ import annotations

import os
import signal
import time

import msgpack
import numpy as np
import pytest
import zmq
from fs_testnodes import digest, make_arrays

from edge.runtime.messages import SCHEMA_VERSION, Message
from edge.runtime.transport import ForeignMessage, Input, Output, pack, unpack


def _msg(i: int, **arrays: np.ndarray) -> Message:
    return Message("frame", "cam0", frame=i, t_mono_ns=time.monotonic_ns(), t_wall_ns=time.time_ns(),
                   meta={"source": "t", "nested": {"a": [1, 2.5, "x"]}}, arrays=arrays or make_arrays(i))


def _receive(inp: Input, timeout: float = 3.0) -> Message:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if inp.sock.poll(50):
            msg = inp.receive()
            if msg is not None:
                return msg
    raise TimeoutError(f"nothing received within {timeout} s")


def _connected_pair(ctx, ep, **kw) -> tuple[Output, Input]:
    out = Output(ctx, "cam.frames", ep, **kw)
    inp = Input(ctx, ep, "cam.frames", latest=True, **{k: v for k, v in kw.items() if k == "max_msg_bytes"})
    deadline = time.monotonic() + 3
    while out.poll_subscriptions() < 1:  # the subscription has reached the producer
        assert time.monotonic() < deadline, "subscriber never attached"
        time.sleep(0.005)
    return out, inp


def test_pack_unpack_round_trip_is_exact():
    msg = _msg(3)
    parts = pack("cam.frames", msg)
    assert parts[2] is msg.arrays["image"]  # the array itself goes to zmq: no copy
    topic, back = unpack([bytes(memoryview(p)) for p in parts])
    assert topic == "cam.frames"
    assert (back.type, back.stream, back.frame, back.t_mono_ns, back.meta) == \
        (msg.type, msg.stream, msg.frame, msg.t_mono_ns, msg.meta)
    assert {k: digest(v) for k, v in back.arrays.items()} == {k: digest(v) for k, v in msg.arrays.items()}


def test_meta_with_integer_keys_is_not_mistaken_for_foreign_bytes():
    meta = {"head_motion": {3: 0.25, 7: 1.5}, "ended": [3]}
    _, back = unpack([bytes(memoryview(p)) for p in pack("t", Message("frame", meta=meta))])
    assert back.meta == meta


@pytest.mark.parametrize("kind", ["ipc", "tcp"])
def test_messages_cross_sockets_as_read_only_views(zmq_context, endpoint, kind):
    out, inp = _connected_pair(zmq_context, endpoint("frames", kind))
    try:
        for i in range(3):
            # Paced: libzmq's sender learns what the receiver read with a lag of up to ~1 ms, so with a
            # queue of 2 a burst can drop (counted as gaps) even when the consumer keeps up.
            time.sleep(0.005)
            out.send(_msg(i))
            got = _receive(inp)
            assert got.seq == i and got.frame == i
            assert {k: digest(v) for k, v in got.arrays.items()} == {k: digest(v) for k, v in make_arrays(i).items()}
            assert not got.arrays["image"].flags.writeable
            with pytest.raises(ValueError):
                got.arrays["image"][0, 0, 0] = 1
        assert (out.sent, inp.received, inp.dropped, inp.gaps, inp.foreign) == (3, 3, 0, 0, 0)
    finally:
        out.close(0)
        inp.close()


def test_latest_wins_counts_every_message_it_did_not_deliver(zmq_context, endpoint):
    out, inp = _connected_pair(zmq_context, endpoint())
    try:
        img = np.zeros((240, 320, 3), np.uint8)
        for i in range(50):  # nobody reads: the small queues fill, the rest is dropped
            assert out.send(_msg(i, image=img))
        time.sleep(0.2)
        _receive(inp)  # the consumer wakes up and drains to the newest it has...
        time.sleep(0.05)
        out.send(_msg(50, image=img))  # ...so the next message finds room (a full PUB queue drops it)
        deadline = time.monotonic() + 3
        while _receive(inp).seq != 50:
            assert time.monotonic() < deadline
        # Everything is accounted for: delivered (newest or skipped while draining) + never arrived.
        assert inp.received + inp.gaps == 51
        assert inp.dropped + inp.gaps >= 40
    finally:
        out.close(0)
        inp.close()


def test_draining_never_skips_end_of_stream(zmq_context, endpoint):
    out, inp = _connected_pair(zmq_context, endpoint())
    try:
        tmpl = _msg(0, image=np.zeros((2, 2), np.uint8))
        out.send(tmpl)
        out.send_eos(tmpl, "end of file")
        time.sleep(0.2)
        got = _receive(inp)
        assert got.type == "eos" and got.meta == {"reason": "end of file"} and inp.dropped == 1
    finally:
        out.close(0)
        inp.close()


def test_oversize_messages_are_refused_by_the_sender(zmq_context, endpoint):
    out, inp = _connected_pair(zmq_context, endpoint(), max_msg_bytes=10_000)
    try:
        assert not out.send(_msg(0, image=np.zeros((100, 101), np.uint8)))
        assert (out.oversize, out.dropped) == (1, 1)
        assert out.send(_msg(1, image=np.zeros((10, 10), np.uint8)))
        assert _receive(inp).frame == 1  # the link survived
    finally:
        out.close(0)
        inp.close()


def _foreign(topic: bytes) -> list[list[bytes]]:
    good = msgpack.packb({"v": SCHEMA_VERSION, "type": "frame", "stream": "s", "seq": 0, "frame": 0,
                          "t_mono_ns": 0, "t_wall_ns": 0, "meta": {}, "bufs": [["a", "|u1", [4]]]})
    hdr = msgpack.unpackb(good)
    return [
        [topic],  # no header
        [topic, b"\xc1\xc1 not msgpack"],
        [topic, msgpack.packb([1, 2, 3])],  # not a map
        [topic, msgpack.packb({**hdr, "v": 99}), b"abcd"],  # another schema version
        [topic, good],  # buffer list says 1, got 0
        [topic, good, b"abc"],  # 3 bytes for a (4,) uint8
        [topic, msgpack.packb({**hdr, "bufs": [["a", "|O", [1]]]}), b"12345678"],  # pickled objects
        [topic, msgpack.packb({**hdr, "bufs": [["a", "|u1", [-4]]]}), b"abcd"],
        [topic, msgpack.packb({**hdr, "bufs": [["a", "nonsense", [4]]]}), b"abcd"],
        [topic, msgpack.packb({**hdr, "meta": [1]}), b"abcd"],
        [topic, msgpack.packb({**hdr, "seq": "x"}), b"abcd"],
    ]


def test_unpack_rejects_each_kind_of_foreign_message():
    for parts in _foreign(b"t"):
        with pytest.raises(ForeignMessage):
            unpack(parts)


def test_foreign_bytes_are_counted_and_dropped_by_an_input(socket, zmq_context, endpoint):
    ep = endpoint()
    pub = socket(zmq.XPUB)
    pub.bind(ep)
    inp = Input(zmq_context, ep, "cam.frames", latest=True)
    try:
        assert pub.poll(3000)  # wait for the subscription
        pub.recv()
        junk = _foreign(b"cam.frames")
        for parts in junk:
            pub.send_multipart(parts)
        pub.send_multipart(pack("cam.frames", _msg(5)))
        got = _receive(inp)
        assert got.frame == 5 and inp.foreign == len(junk) and inp.last_error
    finally:
        inp.close()


def test_a_running_node_drops_and_counts_foreign_bytes(run_graph, socket, tmp_path):
    """Kill a producer, take over its endpoint with a foreign publisher: the consumer keeps running,
    counts the junk in its stats, and still processes the valid message that follows."""
    from edge.runtime.stats import snapshot

    out = tmp_path / "rec.jsonl"
    g = run_graph(f"""
    nodes:
      - name: src
        type: test_arrays
        params: {{count: 0, fps: 20}}
        restart: {{policy: on-failure, max_restarts: 1, backoff_s: 60}}
      - {{name: rec, type: test_record, params: {{path: {out}}}}}
    connections: [src.frames -> rec.messages]
    """)
    g.wait_for(lambda: out.exists() and out.read_text().count("\n") >= 3, what="frames")
    ep = g.endpoints()["ports"]["src.frames"]
    os.kill(g.node_pids()["src"], signal.SIGKILL)
    g.wait_for(lambda: "src" not in g.node_pids(), what="the producer to die")
    pub = socket(zmq.XPUB)
    pub.bind(ep)  # the consumer reconnects to whoever listens here now
    assert pub.poll(5000), "consumer did not reconnect"
    pub.recv()
    n_before = out.read_text().count("\n")
    junk = _foreign(b"src.frames")
    for parts in junk:
        pub.send_multipart(parts)
    pub.send_multipart(pack("src.frames", _msg(12345, image=np.zeros((4, 4), np.uint8))))
    g.wait_for(lambda: out.read_text().count("\n") > n_before, what="the valid message after the junk")
    assert '"frame": 12345' in out.read_text().splitlines()[-1]

    def counted():
        s = snapshot(g.run_dir(), timeout_s=3)["nodes"]["rec"]
        return s if s.get("foreign", 0) >= len(junk) else None

    rec = g.wait_for(counted, timeout=10, what="foreign bytes in the stats")
    assert rec["foreign"] == len(junk) and rec["state"] == "running" and rec["errors"] == 0


def test_bench_transport_counts_every_frame_it_sends():
    """The benchmark's plumbing (not its speed): a lossless flood delivers all it sent, in two processes."""
    from edge.bench.transport import run_edge, run_queue

    flood = run_edge("ipc", latest=False, paced=False, seconds=0.3)
    assert flood["n"] == flood["sent"] > 5 and flood["MB_s"] > 0
    paced = run_queue(paced=True, seconds=0.3)
    assert paced["n"] == paced["sent"] >= 8 and 0 < paced["p50_ms"] <= paced["p99_ms"]
