"""The face node: frames of a real video file in, `crops` messages out that match the contract and cross
the wire (edge.runtime.transport pack/unpack) intact."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from edge.bench.faceclips import write_clip
from edge.errors import UserError
from edge.runtime.messages import Message, validate
from edge.runtime.node import get_node_class
from edge.runtime.transport import pack, unpack


@pytest.fixture(scope="module")
def clip_frames(tmp_path_factory):
    import cv2

    path = tmp_path_factory.mktemp("facenode") / "two.avi"
    write_clip(path, 30, 2)
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f)  # BGR, as the capture node sends them
    return frames


def test_face_node_emits_contract_crops(clip_frames):
    node = get_node_class("face").for_test(params={"landmarks": "eyes", "detect_every": 3})
    node.setup()
    for k, f in enumerate(clip_frames):
        node.process("frames", Message("frame", "cam0", k, k, time.monotonic_ns(), time.time_ns(),
                                       {"source": "test", "fps": 25.0}, {"image": f}))
    node.end_of_stream()
    node.teardown()
    msgs = [m for port, m in node.emitted if port == "crops"]
    assert len(msgs) == len(clip_frames) + 1, "one message per frame (also with no face) + the final one"
    for m in msgs:
        validate(m)
        n = len(m.arrays["track_ids"])
        assert m.arrays["crops"].shape == (n, 128, 128)
        assert m.arrays["points"].shape == (n, 2, 2)
        assert len(m.meta["head_motion"]) == n
        assert m.meta["crop_size"] == 128 and m.meta["landmarks"] == "eyes"
    assert [len(m.arrays["track_ids"]) for m in msgs[:3]] == [0, 0, 0], "tracks wait for min_hits"
    assert all(sorted(m.arrays["track_ids"].tolist()) == [0, 1] for m in msgs[6:-1])
    assert msgs[10].frame == 10 and msgs[10].stream == "cam0"
    assert sorted(msgs[-1].meta["ended"]) == [0, 1] and len(msgs[-1].arrays["track_ids"]) == 0

    # The wire: pack -> unpack gives the same arrays and meta.
    topic, back = unpack(pack("crops", msgs[10]))
    assert topic == "crops"
    validate(back)
    for name, arr in msgs[10].arrays.items():
        np.testing.assert_array_equal(back.arrays[name], arr)
    assert back.meta == msgs[10].meta


def test_face_node_sends_a_frames_crops_before_its_detection_round(clip_frames):
    """Detection costs ~15-40 ms every few frames: run before the send it was in the latency of every event
    that closed on such a frame, and run inline after it, in the latency of the next frame. The node sends
    the crops first and runs the detector in a thread while the next frame is tracked and sent."""
    node = get_node_class("face").for_test(params={"landmarks": "eyes", "detect_every": 3})
    node.setup()
    tracker = node._first
    gate = threading.Event()
    started: list[int] = []  # crops messages already sent when each detection started / finished
    finished: list[int] = []
    detect = tracker.detector.detect

    def slow(g: np.ndarray) -> list:
        started.append(len(node.emitted))
        gate.wait(10)
        finished.append(len(node.emitted))
        return detect(g)

    tracker.detector.detect = slow
    threading.Timer(1.0, gate.set).start()  # the first round takes a second
    for k, f in enumerate(clip_frames[:10]):
        node.process("frames", Message("frame", "cam0", k, k, time.monotonic_ns(), time.time_ns(),
                                       {"source": "test", "fps": 25.0}, {"image": f}))
    node.end_of_stream()  # waits for the last round
    assert started[0] == 1 and finished[0] == 2, (started, finished)  # frame 1 went out meanwhile
    # frames 0, 3, 6, 9: each round starts after its own frame's crops went out (the thread may start a
    # frame later on a loaded machine: the fresh-clone CI once saw [1, 5, 7, 10])
    assert len(started) == 4 and all(s >= k for s, k in zip(started, (1, 4, 7, 10), strict=True)), started
    assert any(len(m.arrays["track_ids"]) for _, m in node.emitted)  # and faces are still found and tracked


def test_face_node_bad_params_are_one_clear_error():
    cls = get_node_class("face")
    with pytest.raises(UserError, match="detector"):
        cls.resolve_params({"detector": "nope"})
    with pytest.raises(UserError, match="detect_every"):
        cls.resolve_params({"detect_every": 0})
    node = cls.for_test(params={"detector": "yunet", "model": "/nonexistent/yunet.onnx"})
    with pytest.raises(UserError, match="YuNet model file not found"):
        node.setup()


@pytest.mark.slow
def test_face_node_as_a_process_streams_one_still_track(tmp_path):
    """capture -> face as real processes on a real video file; a test subscriber on the face node's pinned
    tcp endpoint sees one track whose crops stay still across the process boundary. A pinned tcp port is
    CURVE-secured, so the graph names a key directory and the subscriber uses its client pair."""
    import socket
    import subprocess
    import sys

    import zmq

    from edge.bench.faceclips import crop_shift
    from edge.runtime.keys import generate, load_curve

    clip = tmp_path / "one.avi"
    write_clip(clip, 40, 1)
    with socket.socket() as s:  # a free loopback port for the pinned endpoint
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    endpoint = f"tcp://127.0.0.1:{port}"
    graph = tmp_path / "face.yaml"
    key_dir = generate(tmp_path / "keys")
    graph.write_text(f"""
name: facetest
keys: {key_dir}
nodes:
  - name: capture
    type: capture
    params: {{kind: file, path: "{clip}", pace: true, fps: 20.0, stream: cam0}}
  - name: face
    type: face
    params: {{landmarks: eyes}}
    endpoints: {{crops: "{endpoint}"}}
  - name: sink
    type: monitor
connections:
  - capture.frames -> face.frames
  - face.crops -> sink.messages
""")
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.linger = 0
    sub.rcvhwm = 10000
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    load_curve(key_dir).apply(sub, server=False)
    sub.connect(endpoint)  # before the graph binds: zmq connects when it appears, no early message lost
    proc = subprocess.Popen([sys.executable, "-m", "edge", "run", str(graph), "--duration", "60"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    msgs = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if not sub.poll(500):
                if proc.poll() is not None:
                    break
                continue
            topic, msg = unpack(sub.recv_multipart(copy=False))
            if msg.type == "eos":
                break
            msgs.append(msg)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        sub.close()
        ctx.term()
    assert proc.returncode == 0, out[-2000:]
    assert len(msgs) >= 30, f"only {len(msgs)} crops messages arrived"
    crops = [m.arrays["crops"][0] for m in msgs if len(m.arrays["track_ids"])]
    ids = {int(t) for m in msgs for t in m.arrays["track_ids"]}
    assert ids == {0} and len(crops) >= 25
    assert max(np.hypot(*crop_shift(crops[0], c)) for c in crops) < 0.3


def test_face_node_crops_carry_the_facial_state(clip_frames):
    """Each crops message carries the faces' state (edge.perception.face.state) as the contract's optional
    arrays, one row per track; the frames' fps times its filters."""
    node = get_node_class("face").for_test(params={"landmarks": "eyes", "detect_every": 3})
    node.setup()
    for k, f in enumerate(clip_frames[:12]):
        node.process("frames", Message("frame", "cam0", k, k, time.monotonic_ns(), time.time_ns(),
                                       {"source": "test", "fps": 25.0}, {"image": f}))
    node.end_of_stream()
    msgs = [m for port, m in node.emitted if port == "crops"]
    assert node.trackers["cam0"].fps == 25.0
    for m in msgs:
        validate(m)
        n = len(m.arrays["track_ids"])
        a = m.arrays
        assert a["eye_open"].shape == (n, 2) and a["mouth_open"].shape == (n,)
        assert a["head_pose"].shape == (n, 3) and a["speech"].shape == (n,)
        assert all(a[k].dtype == np.float32 for k in ("eye_open", "mouth_open", "head_pose", "speech"))
        assert m.meta["pose_source"] == "eye_line"
    faced = [m for m in msgs if len(m.arrays["track_ids"])]
    assert faced, "the clip's faces are tracked"
    for m in faced:
        assert np.isfinite(m.arrays["eye_open"]).all() and ((m.arrays["speech"] >= 0) & (m.arrays["speech"] <= 1)).all()
        assert np.isnan(m.arrays["head_pose"][:, :2]).all() and np.isfinite(m.arrays["head_pose"][:, 2]).all()
    old = Message("crops", arrays={k: v for k, v in faced[0].arrays.items()
                                   if k not in ("eye_open", "mouth_open", "head_pose", "speech")})
    validate(old)  # a producer without the state still meets the contract


def test_track_ids_of_a_restarted_face_node_never_repeat_the_earlier_lives(clip_frames):
    """The runner tells a node how often it was restarted (run_info["restarts"]); each life of the face
    node numbers its tracks in its own range, so downstream never sees a restarted node's track 0 as the
    continuation of the first life's track 0."""
    seen = {}
    for restarts in (0, 1, 2):
        node = get_node_class("face").for_test(params={"landmarks": "eyes", "detect_every": 3})
        node.run_info = {"restarts": restarts}
        node.setup()
        for k, f in enumerate(clip_frames[:12]):
            node.process("frames", Message("frame", "cam0", k, k, time.monotonic_ns(), time.time_ns(),
                                           {"source": "test", "fps": 25.0}, {"image": f}))
        node.end_of_stream()
        node.teardown()
        msgs = [m for port, m in node.emitted if port == "crops"]
        ids = {int(i) for m in msgs for i in m.arrays["track_ids"]}
        assert all(m.arrays["track_ids"].dtype == np.int32 for m in msgs)
        assert sorted(msgs[-1].meta["ended"]) == sorted(ids) and len(ids) == 2
        seen[restarts] = ids
    from nodes.face import TRACK_ID_LIFE as life

    assert seen[0] == {0, 1} and seen[1] == {life, life + 1} and seen[2] == {2 * life, 2 * life + 1}
