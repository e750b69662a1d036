"""The whole pipeline as real processes on synthetic clips written as real video files (issue: spotting,
classification and events): batch job on a file, distractors, two faces, a classify node killed mid-clip."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge.data.synth import SyntheticVideo, write_clip
from edge.events.log import EventLog
from nodes.scorecard import score

ROOT = Path(__file__).resolve().parents[1]
VIDEO_GRAPH = ROOT / "configs" / "video.yaml"

pytestmark = pytest.mark.slow


def _clip(tmp: Path, name: str, script: list[dict], duration: float, faces: int = 1, seed: int = 11,
          **overrides: float) -> tuple[Path, list[dict]]:
    video = SyntheticVideo("webcam30", seed=seed, duration_s=duration, faces=faces, script=script,
                           overrides=overrides or None)
    doc = write_clip(video, tmp / f"{name}.avi")
    return tmp / f"{name}.avi", doc["intervals"]


def _video_cmd(clip: Path, db: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "edge", "run", str(VIDEO_GRAPH), "--set", f"capture.path={clip}",
            "--set", f"events.db={db}", "--set", "events.pub=tcp://127.0.0.1:*",
            "--set", "events.replay=tcp://127.0.0.1:*", *extra]


def _run_video(clip: Path, db: Path, *extra: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(_video_cmd(clip, db, *extra), capture_output=True, text=True, timeout=timeout,
                          cwd=clip.parent)


def _events(db: Path) -> list[dict]:
    with EventLog(db, readonly=True) as log:
        return list(log.query())


@pytest.mark.parametrize("amplitude,floor", [(1.0, 0.9), (0.5, 0.75)], ids=["1px", "half_px"])
def test_small_micro_expressions_under_sensor_noise(tmp_path, amplitude, floor):
    """The batch job (`facesleuth run configs/video.yaml --set capture.path=FILE`) and the issue's
    sensitivity targets through the real processes on written video files: F1 >= 0.9 where
    micro movements reach 1 px at apex, >= 0.75 at 0.5 px, both under sigma = 3 sensor noise, among a blink,
    a head movement and a macro expression per clip (the bench's suite: 5 micro-expressions a clip).
    The job is deterministic (the framework merges the spot node's inputs in frame order), so these files give the same
    events on every run; at 0.5 px that is F1 0.75 here (6 of 10 found, no false event): 0.5 px under
    sigma 3 is at the flow's noise limit, where each micro-expression is found or missed on a small margin."""
    from edge.bench.spotting import make_video

    truth, events = [], []
    seeds = (0, 1000)  # the first clip of the bench's rows of seeds 0 and 1000
    docs = [write_clip(make_video(amplitude, 3.0, seed=seed, duration_s=16.0), tmp_path / f"small{seed}.avi")
            for seed in seeds]
    # Both batch jobs at once: each keeps about one core busy, and their results do not depend on timing.
    jobs = []
    for seed in seeds:
        with (tmp_path / f"run{seed}.log").open("w") as log:  # the child keeps its own copy of the handle
            jobs.append(subprocess.Popen(_video_cmd(tmp_path / f"small{seed}.avi", tmp_path / f"ev{seed}.db"),
                                         cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT))
    for seed, job in zip(seeds, jobs, strict=True):
        log = (tmp_path / f"run{seed}.log").read_text() if job.wait(timeout=240) == 0 else ""
        assert "every stream ended" in log, (tmp_path / f"run{seed}.log").read_text()[-3000:]  # ended by itself
        logged = _events(tmp_path / f"ev{seed}.db")
        assert [e["seq"] for e in logged] == list(range(1, len(logged) + 1))
        # A file read unpaced runs on the media clock: file time against wall time is no latency.
        assert logged and all(e["clock"] == "media" and e["latency_ms"] is None for e in logged), logged[:1]
    for i, (seed, doc) in enumerate(zip(seeds, docs, strict=True)):
        # The clips one after the other on one timeline: the scorecard matches frames, so shift each.
        shift = 100_000 * i
        truth += [dict(t, onset=t["onset"] + shift, offset=t["offset"] + shift) for t in doc["intervals"]]
        for e in _events(tmp_path / f"ev{seed}.db"):
            e = dict(e)
            for k in ("onset", "apex", "offset"):
                e[k] = dict(e[k], frame=e[k]["frame"] + shift)
            events.append(e)
    s = score(truth, events)
    assert s["micro_truth"] == 5 * len(seeds) and s["f1"] >= floor, {k: s[k] for k in ("tp", "fp", "fn", "f1")}
    if amplitude >= 1.0:  # the shipped weights label what was found (at 0.5 px they see mostly noise)
        assert s["label_accuracy"] is not None and s["label_accuracy"] >= 0.8 - 1e-9, s


def test_distractors_alone_give_no_micro_events(tmp_path):
    script = [{"t": 1.0, "kind": "blink"}, {"t": 3.0, "kind": "head"},
              {"t": 5.5, "kind": "macro", "label": "positive", "duration_s": 2.0},
              {"t": 9.0, "kind": "blink"}, {"t": 10.5, "kind": "head"}]
    clip, _ = _clip(tmp_path, "distract", script, duration=12.5, seed=5)
    out = _run_video(clip, tmp_path / "ev.db")
    assert out.returncode == 0, out.stderr[-3000:]
    assert [e for e in _events(tmp_path / "ev.db") if e["kind"] == "micro"] == []


def test_two_faces_give_events_with_their_own_track_ids(tmp_path):
    # Clear expressions (2.5 px), two per face: this test is about track identity, not sensitivity (a
    # webcam head that drifts during one of them may have it discarded for rigid motion, as it should).
    script = [{"t": 1.5, "kind": "micro", "label": "surprise", "amplitude_px": 2.5, "face": 0},
              {"t": 2.7, "kind": "micro", "label": "surprise", "amplitude_px": 2.5, "face": 1},
              {"t": 4.0, "kind": "micro", "label": "surprise", "amplitude_px": 2.5, "face": 0},
              {"t": 5.2, "kind": "micro", "label": "surprise", "amplitude_px": 2.5, "face": 1}]
    clip, truth = _clip(tmp_path, "two", script, duration=7.0, faces=2, seed=3)
    out = _run_video(clip, tmp_path / "ev.db")
    assert out.returncode == 0, out.stderr[-3000:]
    micro = [e for e in _events(tmp_path / "ev.db") if e["kind"] == "micro"]
    by_face: dict[int, list[dict]] = {0: [], 1: []}
    for t in truth:
        by_face[t["face"]] += [e for e in micro if e["onset"]["frame"] <= t["offset"] and e["offset"]["frame"] >= t["onset"]]
    assert by_face[0] and by_face[1], (truth, micro)
    # Face 0 sits in the left half of the frame, face 1 in the right: each event carries its own track.
    tracks = {f: {e["track_id"] for e in evs} for f, evs in by_face.items()}
    assert len(tracks[0]) == len(tracks[1]) == 1 and tracks[0] != tracks[1], tracks
    assert max(e["box"][0] for e in by_face[0]) < min(e["box"][0] for e in by_face[1])


def test_classify_killed_mid_clip_restarts_and_the_log_keeps_every_event(tmp_path):
    script = [{"t": 1.0 + 1.6 * i, "kind": "micro", "label": "surprise", "amplitude_px": 1.5} for i in range(6)]
    clip, _ = _clip(tmp_path, "kill", script, duration=11.0, seed=9)
    graph = tmp_path / "kill.yaml"
    g = VIDEO_GRAPH.read_text()
    # Paced like a camera, and a scorecard that counts what classify produced on its own link.
    g = g.replace("pace: false", "pace: true").replace(
        "  - classify.events -> events.events",
        "  - classify.events -> events.events\n  - classify.events -> scorecard.events")
    g = g.replace("connections:", f"""  - name: scorecard
    type: scorecard
    params: {{truth: {tmp_path / 'kill.json'}, out: {tmp_path / 'score.json'}}}
connections:""")
    graph.write_text(g)
    db = tmp_path / "ev.db"
    proc = subprocess.Popen([sys.executable, "-m", "edge", "run", str(graph), "--set", f"capture.path={clip}",
                             "--set", f"events.db={db}", "--set", "events.pub=tcp://127.0.0.1:*",
                             "--set", "events.replay=tcp://127.0.0.1:*"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        run_dir = None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not _events_so_far(db):
            time.sleep(0.2)
        assert db.is_file() and _events(db), "no event before the kill"
        for spec in Path("/tmp").glob(f"facesleuth-{os.getuid()}/kill*/classify.json"):
            run_dir = spec.parent
        pid = _pid_of("classify", run_dir)
        os.kill(pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-3000:]
    assert "classify" in err and "restart 1/3" in err
    summary = json.loads((tmp_path / "score.json").read_text())
    logged = _events(db)
    # Every event classify produced (as counted on its other link) is in the durable log, gap-free.
    assert len(logged) == summary["micro_events"] + summary["other_events"]
    assert [e["seq"] for e in logged] == list(range(1, len(logged) + 1))
    # Paced like a camera: each event's latency comes with its breakdown by stage, which adds up to it.
    for e in logged:
        st = e["stages_ms"]
        assert set(st) == {"confirm", "perception", "classify", "events"}, st
        assert st["confirm"] >= 0 and st["perception"] > 0 and st["classify"] > 0, st
        assert sum(st.values()) == pytest.approx(e["latency_ms"], abs=0.05), (st, e["latency_ms"])


def _events_so_far(db: Path) -> list[dict]:
    """Events logged so far; [] while the events node is still creating its database."""
    from edge.errors import UserError

    try:
        return _events(db) if db.is_file() else []
    except UserError:
        return []


def _pid_of(node: str, run_dir: Path | None) -> int:
    import psutil

    for p in psutil.process_iter(["cmdline"]):
        cmd = p.info["cmdline"] or []
        if "edge.runtime.noderun" in cmd and cmd[-1].endswith(f"/{node}.json") and (
                run_dir is None or cmd[-1].startswith(str(run_dir))):
            return p.pid
    raise AssertionError(f"no running {node} node")


def test_bench_pipeline_on_a_file_reports_media_clock_events(tmp_path):
    """`facesleuth bench pipeline configs/video.yaml` on a recorded file: the batch job's events run on the
    media clock (no latency), and the bench reports them instead of failing on the missing latencies."""
    script = [{"t": 1.5, "kind": "micro", "label": "surprise", "amplitude_px": 2.5}]
    clip, _ = _clip(tmp_path, "bench", script, duration=3.5)
    out = subprocess.run([sys.executable, "-m", "edge", "bench", "pipeline", str(VIDEO_GRAPH), "--duration", "120",
                          "--set", f"capture.path={clip}", "--set", "events.pub=tcp://127.0.0.1:*",
                          "--set", "events.replay=tcp://127.0.0.1:*", "--json", str(tmp_path / "bench.json")],
                         capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    doc = json.loads((tmp_path / "bench.json").read_text())
    assert doc["events"] >= 1 and doc["event_latency_p99_ms"] is None, doc
    face = next(r for r in doc["rows"] if r["type"] == "face")
    assert face["in"] == 105, face  # every frame of the 3.5-s clip at 30 fps, none dropped (lossless links)
    assert all(r["rss_MB"] > 10 for r in doc["rows"]), doc["rows"]  # each node process's memory was sampled
