"""The Python API: analyze_video returns the batch graph's events on the same file (one real
`facesleuth run configs/video.yaml` process), params are validated as --set, `import edge` is cheap, and
subscribe() repairs a forced gap through replay."""

from __future__ import annotations

import importlib.util
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_analyze import write_small_clip

import edge
from edge.errors import UserError
from edge.events.log import EventLog
from edge.runtime.messages import Message
from nodes.events import EventsSink

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _key(e) -> tuple:
    return (e.kind, e.label, e.track_id, e.onset_frame, e.apex_frame, e.offset_frame, round(e.confidence, 3))


def test_analyze_video_returns_the_batch_graphs_events(tmp_path):
    clip = tmp_path / "clip.avi"
    write_small_clip(clip)
    db = tmp_path / "run.db"
    # The batch graph as real processes, started first: it runs beside the in-process call below.
    run = subprocess.Popen([sys.executable, "-m", "edge", "run", str(ROOT / "configs" / "video.yaml"),
                            "--set", f"capture.path={clip}", "--set", f"events.db={db}",
                            "--set", "events.pub=tcp://127.0.0.1:*", "--set", "events.replay=tcp://127.0.0.1:*"],
                           cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        result = edge.analyze_video(clip, frames=False)
        log = run.communicate(timeout=240)[0]
    finally:
        run.kill()
    assert run.returncode == 0, log[-3000:]
    with EventLog(db, readonly=True) as ev_log:
        logged = [edge.Event.from_dict(e) for e in ev_log.query()]
    assert result.events and [_key(e) for e in result.events] == [_key(e) for e in logged]
    assert result.frames is None and result.n_frames == 90 and result.fps == 30
    ev = result.events[0]
    assert isinstance(ev, edge.Event) and ev.onset_s == pytest.approx(ev.onset_frame / 30, abs=1e-3)
    assert ev.label in ev.scores and ev.rois and len(ev.box) == 4 and ev.fields["seq"] == ev.seq
    with pytest.raises(AttributeError):
        ev.label = "x"  # frozen
    if importlib.util.find_spec("pandas") is None:
        with pytest.raises(UserError, match="pip install pandas"):
            result.to_pandas()
    else:
        df = result.to_pandas()
        assert list(df["label"]) == [e.label for e in result.events]


@pytest.mark.parametrize("params,words", [({"spot.k_on": -1}, "k_on"), ({"spot": {"nope": 1}}, "nope"),
                                          ({"nonode.x": 1}, "nonode"), ({"capture.path": "x.mp4"}, "set by analyze")])
def test_bad_params_are_refused_before_any_work(tmp_path, params, words):
    t0 = time.monotonic()
    with pytest.raises(UserError, match=words):
        edge.analyze_video(_tiny_clip(tmp_path), **params)
    assert time.monotonic() - t0 < 5


def test_a_bad_path_is_refused(tmp_path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(UserError, match="cannot read video"):
        edge.analyze_video(tmp_path / "empty.mp4")
    with pytest.raises(UserError, match="not found"):
        edge.analyze_video(tmp_path / "missing.mp4")


def _tiny_clip(tmp: Path) -> Path:
    import cv2
    import numpy as np

    path = tmp / "tiny.avi"
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30, (64, 64))
    for _ in range(3):
        w.write(np.zeros((64, 64, 3), np.uint8))
    w.release()
    return path


def test_import_edge_is_cheap():
    code = "import sys, edge; print(json.dumps(sorted(m for m in ('numpy', 'zmq', 'cv2', 'torch') if m in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", "import json; " + code], capture_output=True, text=True,
                         cwd=ROOT, timeout=60)
    assert out.returncode == 0 and json.loads(out.stdout) == [], out.stderr


def _event(i: int) -> Message:
    meta = {"stream": "cam0", "track_id": 0, "kind": "micro", "label": "surprise",
            "scores": {"negative": 0.1, "positive": 0.1, "surprise": 0.8}, "confidence": 0.8,
            "onset": {"frame": 10 * i, "t_wall_ns": 10 * i * 10**9}, "apex": {"frame": 10 * i + 3},
            "offset": {"frame": 10 * i + 7}}
    return Message("event", "cam0", frame=10 * i + 7, t_mono_ns=time.monotonic_ns(), meta=meta)


def test_subscribe_repairs_a_forced_gap_through_replay(tmp_path):
    pub, rep = f"tcp://127.0.0.1:{_free_port()}", f"tcp://127.0.0.1:{_free_port()}"
    sink = EventsSink.for_test("events", {"db": str(tmp_path / "ev.db"), "pub": pub, "replay": rep, "print": False})
    sink.setup()
    try:
        events = edge.subscribe(pub, since=0, replay=rep, timeout_s=3)
        time.sleep(0.3)  # the subscription reaches the publisher
        sink.process("events", _event(0))
        first = next(events)
        # Two events are logged but never published (as if the PUB dropped them), then one is published:
        # only the replay endpoint can deliver 2 and 3.
        sink.log_db.append(dict(_event(1).meta))
        sink.log_db.append(dict(_event(2).meta))
        sink.process("events", _event(3))
        rest = [next(events) for _ in range(3)]
        events.close()
    finally:
        sink.teardown()
    got = [first, *rest]
    assert [e.seq for e in got] == [1, 2, 3, 4]
    assert all(isinstance(e, edge.Event) and e.label == "surprise" for e in got)
    assert [e.onset_frame for e in got] == [0, 10, 20, 30] and got[1].onset_s == 10.0
