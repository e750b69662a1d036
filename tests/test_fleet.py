"""Fleet operation: several cameras in one graph (configs/multicam.yaml), `facesleuth run` stopping
cleanly on SIGTERM (systemd's stop) with the whole pipeline and the mqtt bridge running, the systemd
unit and the fleet graph."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO

from edge.data.synth import SyntheticVideo, write_clip
from edge.events.log import EventLog

pytestmark = pytest.mark.slow


def test_two_streams_in_one_graph_tag_events_with_their_stream_ids(tmp_path: Path):
    # One clear micro-expression per camera at different times: this test is about stream identity.
    clips = {}
    for cam, t, label, seed in (("cam0", 1.5, "surprise", 31), ("cam1", 3.5, "positive", 32)):
        video = SyntheticVideo("webcam30", seed=seed, duration_s=5.5,
                               script=[{"t": t, "kind": "micro", "label": label, "amplitude_px": 3.0}])
        clips[cam] = (tmp_path / f"{cam}.avi", t)
        write_clip(video, clips[cam][0])
    db = tmp_path / "ev.db"
    out = subprocess.run(
        [sys.executable, "-m", "edge", "run", str(REPO / "configs" / "multicam.yaml"),
         "--set", f"cam0.path={clips['cam0'][0]}", "--set", f"cam1.path={clips['cam1'][0]}",
         "--set", f"events.db={db}", "--set", "events.pub=tcp://127.0.0.1:*",
         "--set", "events.replay=tcp://127.0.0.1:*"],
        capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    with EventLog(db, readonly=True) as log:
        events = list(log.query())
    assert {e["stream"] for e in events} == {"cam0", "cam1"}, out.stdout[-3000:]
    for e in events:  # each event at the time its own camera showed the expression
        onset_s = e["onset"]["frame"] / 30.0
        assert abs(onset_s - clips[e["stream"]][1]) < 0.5, (e["stream"], onset_s)
    with EventLog(db, readonly=True) as log:
        assert [e["track_id"] for e in log.query(stream="cam1")]  # query by stream works


def test_sigterm_stops_the_full_pipeline_with_mqtt_bridge_within_5s(tmp_path: Path, run_graph):
    graph = (REPO / "configs" / "demo.yaml").read_text()
    assert "events.events" in graph
    # The demo graph plus an mqtt bridge to a broker that is not there (it retries in the background).
    text = graph.replace("connections:\n", "  - {name: mqtt, type: mqtt, params: {broker: 'mqtt://127.0.0.1:9', "
                         f"db: {tmp_path / 'ev.db'}}}}}\nconnections:\n  - events.stored -> mqtt.events\n", 1)
    g = run_graph(text, "--set", f"events.db={tmp_path / 'ev.db'}", "--set", "events.pub=tcp://127.0.0.1:*",
                  "--set", "events.replay=tcp://127.0.0.1:*")
    g.wait_for(lambda: "all" in g.stderr() and "starting sources" in g.stderr(), 90, "every node started")
    time.sleep(3.0)  # frames flowing through every node
    pids = g.node_pids()
    assert {"capture", "face", "flow", "spot", "classify", "events", "mqtt"} <= set(pids), pids
    code, elapsed = g.stop(20)
    assert code == 0, g.describe()
    assert elapsed < 5.0, f"stop took {elapsed:.1f} s\n{g.describe()}"
    assert "Traceback" not in g.stderr(), g.stderr()[-4000:]


def test_fleet_graph_and_systemd_unit(tmp_path: Path):
    env = {**os.environ, "STATE_DIRECTORY": str(tmp_path / "state"), "FACESLEUTH_MQTT_BROKER": "mqtts://b.example",
           "FACESLEUTH_DEVICE": "jetson-07"}
    out = subprocess.run([sys.executable, "-m", "edge", "graph", "show", str(REPO / "configs" / "fleet.yaml"),
                          "--show-params"], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert f"{tmp_path / 'state'}/events.db" in out.stdout and "mqtts://b.example" in out.stdout
    assert "jetson-07" in out.stdout
    unit = (REPO / "configs" / "systemd" / "facesleuth@.service").read_text()
    for line in ("Restart=on-failure", "StateDirectory=facesleuth/%i", "KillSignal=SIGTERM",
                 "StandardOutput=journal", "ExecStart=/opt/facesleuth/.venv/bin/facesleuth run /etc/facesleuth/%i.yaml"):
        assert line in unit.splitlines(), line
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not installed: the unit's syntax is not checked")
    exe = Path(sys.executable).parent / "facesleuth"
    local = tmp_path / "facesleuth@fleet.service"
    local.write_text(unit.replace("/opt/facesleuth/.venv/bin/facesleuth", str(exe)))
    res = subprocess.run([analyze, "verify", str(local)], capture_output=True, text=True, timeout=60)
    problems = [ln for ln in (res.stdout + res.stderr).splitlines() if "facesleuth@fleet.service" in ln]
    assert not problems, problems


def test_classify_batches_intervals_from_several_streams_in_one_call():
    from edge.data.synth import make_samples
    from edge.runtime.messages import Message
    from edge.runtime.node import get_node_class

    node = get_node_class("classify").for_test(params={"runtime": "torch-cpu"})
    node.setup()
    calls = []
    predict = node.predictor.predict
    node.predictor.predict = lambda x: calls.append(len(x)) or predict(x)
    onset, apex, meta = make_samples(3, "lab200", seed=5)
    msgs = [Message("intervals", stream, frame=100, arrays={"onset": onset[i], "apex": apex[i]},
                    meta={"kind": "micro", "track_id": i, "onset": 10, "apex": 14, "offset": 20})
            for i, stream in enumerate(("cam0", "cam1", "cam2"))]
    node.process_batch("intervals", msgs)
    assert calls == [3]  # one classifier call for the three streams' intervals
    events = [m.meta for _, m in node.emitted]
    assert [(e["stream"], e["track_id"]) for e in events] == [("cam0", 0), ("cam1", 1), ("cam2", 2)]
    assert all(abs(sum(e["scores"].values()) - 1) < 1e-3 for e in events)


def test_bench_copies_the_per_camera_chain_for_each_stream():
    from edge.bench.pipeline import replicate_streams
    from edge.runtime.graph import load_graph

    g = replicate_streams(load_graph(REPO / "configs" / "demo.yaml"), 3)
    caps = [g.nodes[f"capture_s{i}"] for i in range(3)]
    assert [c.params["stream"] for c in caps] == ["demo0", "demo1", "demo2"]
    assert len({c.params["synthetic"]["seed"] for c in caps}) == 3  # three different faces and scripts
    into_classify = sorted(lk.src for lk in g.links if lk.dst == "classify")
    assert into_classify == ["spot_s0", "spot_s1", "spot_s2"]
    assert {"classify", "events"} <= set(g.nodes) and "capture" not in g.nodes


@pytest.mark.parametrize("graph", sorted(p.name for p in (REPO / "configs").glob("*.yaml")))
def test_every_shipped_graph_validates(graph: str):
    from edge.runtime.graph import load_graph

    g = load_graph(REPO / "configs" / graph)
    assert g.nodes and g.links
