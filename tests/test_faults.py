"""Fault injection (issue 27): one fault of each kind in a batch job of real processes, judged by the
invariant of `facesleuth bench faults` (edge/bench/faults.py): the run ends by itself with exit 0, and its
log holds exactly the events of an undisturbed run, none twice, seq without a gap.

The job is the cheapest graph with the same links as the pipeline's tail (intervals -> classify -> events,
acknowledged): the bench runs the whole pipeline on a video, 15 s a run, too slow for the suite.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import need

from edge.bench.faults import Fault, Job, RunResult, run_once, table

TIMEOUT_S = 40.0  # a run past this has hung (an undisturbed one takes about 2 s)

GRAPH = """\
name: faults-tiny
nodes:
  - {name: src, type: test_intervals, params: {count: 8, rate: 20}}
  - name: cls
    type: test_classify
    restart: {policy: on-failure, max_restarts: 3, backoff_s: 0.2}
  - name: events
    type: events
    restart: {policy: on-failure, max_restarts: 3, backoff_s: 0.2}
connections: [src.intervals -> cls.intervals, cls.events -> events.events]
"""


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory, plugin_env: dict[str, str]) -> Job:
    graph = tmp_path_factory.mktemp("faults") / "tiny.yaml"
    graph.write_text(GRAPH)
    return Job(graph, {}, {"cls": ("src",), "events": ("cls",)}, env=plugin_env)


@pytest.fixture(scope="module")
def reference() -> RunResult:
    """The undisturbed run's log, known by construction (one event per interval: frame 10 i, track i), and
    the nodes' lives in it as measured here (about 0.6 s and 0.8 s from the sources' start): the moments
    of the faults are fractions of these. The bench runs its reference; this saves the suite a run."""
    events = [{"stream": "cam0", "track_id": i, "onset": {"frame": 10 * i}, "apex": {"frame": 10 * i},
               "offset": {"frame": 10 * i}, "kind": "micro", "label": "surprise"} for i in range(8)]
    return RunResult(None, "none", "-", rc=0, events=events, lifetimes={"cls": 0.6, "events": 0.8})


def _run(job: Job, reference: RunResult, tmp_path: Path, fault: Fault) -> RunResult:
    r = run_once(job, tmp_path / "run", fault, reference, TIMEOUT_S)
    assert r.injected, f"{fault.describe()}: not injected ({r.note})\n{r.log_tail}"
    assert r.survived, (f"{fault.describe()}: exit {r.rc}, hung {r.hung}, lost {r.lost}, duplicated "
                        f"{r.duplicated}, gaps {r.gaps}\n{r.log_tail}")
    assert [e["seq"] for e in r.events] == list(range(1, 9))
    return r


@pytest.mark.parametrize("fault", [
    Fault(1, "kill9", "cls", at=0.5, pause_s=0.0),
    Fault(2, "stopkill", "events", at=0.3, pause_s=0.6),
    Fault(3, "eos-restart", "events", at=0.0, pause_s=0.0),
], ids=lambda f: f"{f.kind}-{f.node}")
def test_a_killed_node_loses_no_event_and_stores_none_twice(job, reference, tmp_path, fault):
    r = _run(job, reference, tmp_path, fault)
    assert f"{fault.node}: restart 1/3" in r.log_tail


def test_a_full_disk_under_the_events_node_holds_the_stream_until_there_is_room(job, reference, tmp_path):
    r = _run(job, reference, tmp_path, Fault(4, "diskfull", "events", at=0.2, pause_s=1.0))
    assert r.note == "writes failed", r.log_tail  # the fault did bite
    assert "writes work again" in r.log_tail and "restart 1/" not in r.log_tail


def test_a_log_read_only_when_the_events_node_restarts_is_retried_not_bad_input(job, reference, tmp_path):
    """Regression: the restarted events node called a log that turned read-only mid-run bad input (exit 2,
    not retried), and the run ended with the events after it lost."""
    import os

    if os.geteuid() == 0:
        need("chattr", shutil.which("chattr") is not None, "root, and no chattr to make the log read-only")
    r = _run(job, reference, tmp_path, Fault(5, "readonly", "events", at=0.3, pause_s=1.0))
    assert "is read-only" in r.log_tail and "retrying for up to" in r.log_tail, r.log_tail
    assert "writable again after" in r.log_tail


FLOW_GRAPH = """\
name: faults-flow
nodes:
  - {name: src, type: test_crops, params: {count: 24, rate: 30}}
  - name: flow
    type: flow
    params: {backend: farneback, lag: 3}
    restart: {policy: on-failure, max_restarts: 3, backoff_s: 0.2}
  - {name: fev, type: test_flow_events}
  - name: events
    type: events
    restart: {policy: on-failure, max_restarts: 3, backoff_s: 0.2}
connections:  # as in configs/video.yaml: crops and flows lossless, short queues
  - {from: src.crops, to: flow.crops, delivery: lossless, queue: 8}
  - {from: flow.flows, to: fev.flows, delivery: lossless, queue: 8}
  - fev.events -> events.events
"""


def _flow_reference() -> RunResult:
    """What the flow graph logs undisturbed, computed here with the same backend: an event per crop after
    the first, its label the mean |flow| against the crop 3 back (or the oldest, while fewer)."""
    import numpy as np
    from fs_testnodes import CropsSource

    from edge.perception.flow import LagBuffer, create_flow

    src = CropsSource.for_test("src", {"count": 24, "rate": 1000})
    src.run_source()
    flow, buf, events = create_flow("farneback"), LagBuffer(3), []
    for _, msg in src.emitted:
        ref = buf.push(0, msg.frame, np.array(msg.arrays["crops"][0]))
        if ref is not None:
            f = flow.calc(ref[1], np.array(msg.arrays["crops"][0]))
            events.append({"stream": "cam0", "track_id": 0, "onset": {"frame": msg.frame}, "apex": {"frame": ref[0]},
                           "offset": {"frame": msg.frame}, "kind": "micro", "label": f"{np.abs(f).mean():.2f}"})
    return RunResult(None, "none", "-", rc=0, events=events, lifetimes={"flow": 0.9})


def test_a_killed_flow_node_rebuilds_its_lag_window_and_logs_the_same_events(tmp_path, plugin_env):
    """Regression: a restarted flow process had no reference crops, so its first flows were taken against
    younger ones (other events) or not at all (lost). The last `lag` crops now stay unacknowledged
    (Node.ack_retain), so the producer sends them to the new process again."""
    graph = tmp_path / "flow.yaml"
    graph.write_text(FLOW_GRAPH)
    job = Job(graph, {}, {"flow": ("src",)}, env=plugin_env)
    reference = _flow_reference()
    assert len(reference.events) == 23 and len({e["label"] for e in reference.events}) > 1
    r = run_once(job, tmp_path / "run", Fault(6, "kill9", "flow", at=0.5, pause_s=0.0), reference, TIMEOUT_S)
    assert r.injected and "flow: restart 1/3" in r.log_tail, r.log_tail
    assert r.survived, f"exit {r.rc}, lost {r.lost}, duplicated {r.duplicated}, gaps {r.gaps}\n{r.log_tail}"


TALLY_GRAPH = """\
name: faults-tally
nodes:
  - {name: src, type: test_intervals, params: {count: 30, rate: 30}}
  - name: tally
    type: test_tally
    params: {checkpoint_every: CKPT}
    restart: {policy: on-failure, max_restarts: 3, backoff_s: 0.2}
  - {name: events, type: events}
connections:
  - {from: src.intervals, to: tally.intervals, delivery: lossless, queue: 12}
  - tally.events -> events.events
"""


@pytest.mark.parametrize("every", [3, 0], ids=["checkpoints", "none"])
def test_a_killed_node_goes_on_from_its_checkpoint(tmp_path, plugin_env, every):
    """tally labels each event with how many intervals it has seen: a restarted process without the dead
    one's state counts from 0 again (the control: every=0 loses and changes events), with checkpoints it
    goes on from the last one and the log is the undisturbed one."""
    graph = tmp_path / "tally.yaml"
    graph.write_text(TALLY_GRAPH.replace("CKPT", str(every)))
    job = Job(graph, {}, {"tally": ("src",)}, env=plugin_env)
    events = [{"stream": "cam0", "track_id": i, "onset": {"frame": 10 * i}, "apex": {"frame": 10 * i},
               "offset": {"frame": 10 * i}, "kind": "micro", "label": str(i + 1)} for i in range(30)]
    reference = RunResult(None, "none", "-", rc=0, events=events, lifetimes={"tally": 1.0})
    r = run_once(job, tmp_path / "run", Fault(7, "kill9", "tally", at=0.5, pause_s=0.0), reference, TIMEOUT_S)
    assert r.injected and "tally: restart 1/3" in r.log_tail, r.log_tail
    if every:
        assert "restored its state from the last checkpoint" in r.log_tail, r.log_tail
        assert r.survived, f"exit {r.rc}, lost {r.lost}, duplicated {r.duplicated}, gaps {r.gaps}\n{r.log_tail}"
    else:
        assert r.rc == 0 and r.lost > 0 and r.duplicated > 0, r.log_tail


def test_a_spot_killed_mid_clip_goes_on_from_its_checkpoint_and_logs_the_same_events(tmp_path):
    """The whole pipeline on bench faults' clip: spot killed at 40 % of its life (bench faults seed 49, which
    lost an event before spot's checkpoints) restores its state and the log is the undisturbed run's."""
    from edge.bench.faults import make_clip, video_job

    job = video_job(make_clip(tmp_path / "clip.avi"))
    reference = run_once(job, tmp_path / "reference", None, None, 120.0)
    assert reference.rc == 0 and reference.events, reference.log_tail
    r = run_once(job, tmp_path / "run", Fault(49, "kill9", "spot", at=0.4, pause_s=0.0), reference, 120.0)
    log = (tmp_path / "run" / "run.log").read_text()
    assert r.injected and "spot: restart 1/" in log, r.log_tail
    assert "restored its state from the last checkpoint" in log, log[-4000:]
    assert r.survived, f"exit {r.rc}, lost {r.lost}, duplicated {r.duplicated}, gaps {r.gaps}\n{r.log_tail}"


def test_a_face_killed_mid_clip_goes_on_from_its_checkpoint_and_logs_the_same_events(tmp_path):
    """bench faults seed 2's fault (face killed at its seeded moment; before face's checkpoints the restart
    started new tracks and the log lost 3 events and changed 2): the trackers are restored, the tracks keep
    their ids, and the log is the undisturbed run's."""
    from edge.bench.faults import draw, make_clip, video_job

    fault = draw(2)
    assert (fault.kind, fault.node) == ("kill9", "face")
    job = video_job(make_clip(tmp_path / "clip.avi"))
    reference = run_once(job, tmp_path / "reference", None, None, 120.0)
    assert reference.rc == 0 and reference.events, reference.log_tail
    r = run_once(job, tmp_path / "run", fault, reference, 120.0)
    log = (tmp_path / "run" / "run.log").read_text()
    assert r.injected and "face: restart 1/" in log, r.log_tail
    assert "restored its state from the last checkpoint" in log, log[-4000:]
    assert r.survived, f"exit {r.rc}, lost {r.lost}, duplicated {r.duplicated}, gaps {r.gaps}\n{r.log_tail}"


def test_the_table_counts_failures_by_kind_and_node():
    ok = RunResult(1, "kill9", "cls", injected=True, rc=0)
    lost = RunResult(2, "kill9", "cls", injected=True, rc=0, lost=2)
    hung = RunResult(3, "diskfull", "events", injected=True, hung=True)
    rows = {(r["fault"], r["node"]): r for r in table([ok, lost, hung])}
    assert rows[("kill9", "cls")] | {} == {"fault": "kill9", "node": "cls", "runs": 2, "injected": 2, "survived": 1,
                                          "lost": 2, "duplicated": 0, "hung": 0, "exit!=0": 0, "failed seeds": "2"}
    assert rows[("diskfull", "events")]["hung"] == 1 and rows[("diskfull", "events")]["failed seeds"] == "3"


def test_a_restart_window_without_room_upstream_is_refused_before_the_run(write_graph):
    """flow keeps its last `lag` crops unacknowledged, and face (acknowledging after downstream; here without
    checkpoints of its own) keeps the frames they came from: a capture queue of `lag` or less would leave
    the batch job waiting forever."""
    from edge.runtime.graph import GraphError, load_graph

    text = """
    nodes:
      - {name: src, type: test_arrays, params: {count: 3}}
      - {name: face, type: face, params: {checkpoint_every: 0}}
      - {name: flow, type: flow, params: {lag: LAG}}
      - {name: rec, type: test_record, params: {path: r.jsonl}}
    connections:
      - {from: src.frames, to: face.frames, delivery: lossless, queue: 4}
      - {from: face.crops, to: flow.crops, delivery: lossless, queue: 8}
      - {from: flow.flows, to: rec.messages, delivery: lossless}
    """
    assert load_graph(write_graph(text.replace("LAG", "3"))).nodes["flow"].params["lag"] == 3
    with pytest.raises(GraphError, match=r":7: connections src.frames -> face.frames: queue 4 must be above 4: flow"):
        load_graph(write_graph(text.replace("LAG", "4")))
