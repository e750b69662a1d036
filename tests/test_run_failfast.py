"""Issue 25 point 5, the runtime half: `facesleuth run` with no camera, a second graph on taken endpoints,
and `calib spot` on clips too short for its noise window are one line and a non-zero exit, before any work.

In-process where the point is the command's own checks; one real graph run shows the supervisor does not
retry a node whose device is missing (exit 1, one start)."""

from __future__ import annotations

import json
import socket
import time

import cv2
import numpy as np
import pytest
from conftest import REPO

from edge.cli import main
from edge.errors import Unavailable
from edge.runtime.graph import load_graph
from edge.runtime.preflight import bound_endpoints, in_use
from nodes.capture import CaptureNode

NO_CAMERA = "/dev/video-facesleuth-none"


def _run(argv: list[str], capsys) -> tuple[int, list[str], float]:
    t0 = time.monotonic()
    try:
        rc = main(argv)
    except SystemExit as e:
        rc = int(e.code or 0)
    return rc, capsys.readouterr().err.splitlines(), time.monotonic() - t0


def test_a_missing_camera_fails_setup_at_once_naming_the_device_and_the_set():
    node = CaptureNode.for_test("cam", {"kind": "camera", "path": NO_CAMERA})
    t0 = time.monotonic()
    with pytest.raises(Unavailable) as e:
        node.setup()
    assert time.monotonic() - t0 < 0.5  # no backoff: the first open decides
    msg = str(e.value)
    assert NO_CAMERA in msg and "not found" in msg and "--set cam.path=" in msg and "\n" not in msg


def test_no_camera_ends_the_run_with_exit_1_and_is_not_retried(run_graph, tmp_path):
    g = run_graph(f"""
    nodes:
      - name: capture
        type: capture
        params: {{kind: camera, path: {NO_CAMERA}}}
        restart: {{policy: on-failure, max_restarts: 5, backoff_s: 0.1}}
      - {{name: rec, type: test_record, params: {{path: {tmp_path / 'r.jsonl'}}}}}
    connections: [capture.frames -> rec.messages]
    """)
    code = g.wait(30)
    err, out = g.stderr(), g.stdout()
    assert code == 1, g.describe()
    assert err.count("started capture (pid") == 1 and "restart 1/" not in err and "retrying" not in err, g.describe()
    assert "Traceback" not in err, g.describe()
    first = out.splitlines()[0]
    assert NO_CAMERA in first and "not retried" in first and "--set capture.path=" in first, first


def test_the_fixed_endpoints_of_the_shipped_graphs_are_known():
    eps = {(b.node, b.key): b.endpoint for b in bound_endpoints(load_graph(REPO / "configs" / "demo.yaml"))}
    assert eps == {("events", "pub"): "tcp://127.0.0.1:5571", ("events", "replay"): "tcp://127.0.0.1:5572"}


def test_a_second_graph_on_taken_endpoints_is_one_line_with_the_set_that_moves_it(capsys, tmp_path):
    with socket.socket() as held:  # what the first graph's events node holds
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        assert in_use(f"tcp://127.0.0.1:{port}")
        graph = tmp_path / "g.yaml"
        graph.write_text((REPO / "configs" / "demo.yaml").read_text())
        rc, lines, dt = _run(["run", str(graph), "--set", f"events.pub=tcp://127.0.0.1:{port}",
                              "--set", f"events.db={tmp_path / 'e.db'}"], capsys)
    assert rc == 2 and len(lines) == 1 and dt < 1.0, (lines, dt)
    line = lines[0]
    assert line.startswith("facesleuth run: error: ") and f"tcp://127.0.0.1:{port} (events.pub) is in use" in line
    suggested = line.split("--set events.pub=")[1].split()[0]
    assert suggested.startswith("tcp://127.0.0.1:") and not in_use(suggested), line
    assert "replay" not in line and not (tmp_path / "e.db").exists()  # the free one is not named; nothing ran
    assert not in_use(f"tcp://127.0.0.1:{port}")  # once the holder is gone the same run would go ahead


def _clip(path, frames: int, fps: float = 30.0) -> None:
    wr = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (64, 48))
    for i in range(frames):
        wr.write(np.full((48, 64, 3), i % 255, np.uint8))
    wr.release()
    path.with_suffix(".json").write_text(json.dumps({"fps": fps, "intervals": [
        {"kind": "micro", "onset": 5, "apex": 8, "offset": 11}]}))


def test_calib_spot_on_clips_too_short_for_the_noise_window_says_so_before_the_grid(capsys, tmp_path):
    import edge.bench.clips  # noqa: F401 - the face/flow/spot chain imported up front: the timing is the check
    _clip(tmp_path / "short.avi", 45)  # 1.5 s at 30 fps; the 4 s window and lag 3 need 123 frames
    rc, lines, dt = _run(["calib", "spot", str(tmp_path), "--out", str(tmp_path / "p.json")], capsys)
    assert rc == 2 and len(lines) == 1 and dt < 1.0, (lines, dt)
    assert "short.avi: 45 frames (1.5 s at 30 fps) is too short" in lines[0] and "at least 123 frames" in lines[0]
    assert not (tmp_path / "p.json").exists()
