"""`facesleuth run` with real node processes: byte-exact delivery, end of stream, restarts, shutdown,
failure, a slow consumer's effect on the producer's memory."""

from __future__ import annotations

import json
import os
import select
import signal
import socket as pysocket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from fs_testnodes import digest, make_arrays

from edge.errors import UserError
from edge.runtime.stats import COLUMNS, find_run_dir


def _records(path: Path) -> list[dict]:
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    return [json.loads(s) for s in lines if s.endswith("}")]  # the last line may be half written


def test_three_nodes_pass_arrays_byte_exact_and_the_source_ends_the_graph(run_graph, tmp_path):
    out = tmp_path / "rec.jsonl"
    g = run_graph(f"""
    name: exact
    nodes:
      - {{name: src, type: test_arrays, params: {{count: 40, height: 120, width: 160}}}}
      - {{name: mid, type: test_relay}}
      - {{name: rec, type: test_record, params: {{path: {out}}}}}
    connections:
      - {{from: src.frames, to: mid.frames, delivery: lossless}}
      - {{from: mid.frames, to: rec.messages, delivery: lossless}}
    """)
    assert g.wait(30) == 0, g.describe()
    recs = _records(out)
    assert [r["frame"] for r in recs] == list(range(40)), g.describe()
    assert [r["seq"] for r in recs] == list(range(40))  # the relay's own per-stream sequence
    for r in recs:
        expected = {k: digest(v) for k, v in make_arrays(r["frame"], 120, 160).items()}
        assert r["arrays"] == expected, f"frame {r['frame']} changed in transit"
    summary = g.stdout()
    assert "every stream ended" in summary and "FAILED" not in summary
    assert not list(g.root.rglob("*.ipc")), "ipc files left behind"


def test_sigkilled_node_is_restarted_and_the_stream_resumes(run_graph, tmp_path):
    out = tmp_path / "rec.jsonl"
    g = run_graph(f"""
    nodes:
      - {{name: src, type: test_arrays, params: {{count: 0, fps: 50}}}}
      - name: mid
        type: test_relay
        restart: {{policy: on-failure, max_restarts: 2, backoff_s: 0.2}}
      - {{name: rec, type: test_record, params: {{path: {out}}}}}
    connections: [src.frames -> mid.frames, mid.frames -> rec.messages]
    """)
    g.wait_for(lambda: len(_records(out)) >= 10, what="frames through the relay")
    first = g.node_pids()["mid"]
    os.kill(first, signal.SIGKILL)
    g.wait_for(lambda: g.node_pids().get("mid", first) != first, what="a new relay process")
    n_before = len(_records(out))
    g.wait_for(lambda: len(_records(out)) >= n_before + 10, what="frames after the restart")
    recs = _records(out)
    assert recs[-1]["frame"] > recs[n_before - 1]["frame"]  # the stream resumed, newer frames
    g.terminate()
    assert g.proc.returncode == 0, g.describe()  # SIGTERM is a clean stop
    assert f"mid (pid {first}) exited with code -9" in g.stderr()
    assert "restart 1/2" in g.stderr()
    row = next(line for line in g.stdout().splitlines() if line.strip().startswith("mid "))
    assert row.split()[3] == "1", row  # restarts column


def test_sigterm_stops_everything_within_5s_without_orphans_or_ipc_files(run_graph, tmp_path):
    out = tmp_path / "rec.jsonl"
    g = run_graph(f"""
    nodes:
      - {{name: cam, type: pattern, params: {{width: 160, height: 120, fps: 30}}}}
      - {{name: shrink, type: resize, params: {{width: 80, height: 60}}}}
      - {{name: rec, type: test_record, params: {{path: {out}}}}}
    connections: [cam.frames -> shrink.frames, shrink.frames -> rec.messages]
    """)
    g.wait_for(lambda: len(_records(out)) >= 5, what="frames")
    pids = g.node_pids()
    assert sorted(pids) == ["cam", "rec", "shrink"]
    run_dir = g.run_dir()
    assert list(run_dir.glob("*.ipc"))
    code, elapsed = g.stop(10)
    assert code == 0, g.describe()
    assert elapsed < 5.0, f"stop took {elapsed:.1f} s"
    alive = [p for p in pids.values() if psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"]
    assert not alive, f"orphan node processes: {alive}"
    assert not run_dir.exists() and not list(g.root.rglob("*.ipc"))
    assert "graph " in g.stdout() and "SIGTERM" in g.stdout()
    for name in pids:
        assert f"{name} (pid {pids[name]}) exited with code" in g.stderr()


def test_node_that_fails_for_good_makes_run_exit_1(run_graph, tmp_path):
    g = run_graph(f"""
    nodes:
      - name: bad
        type: test_crash
        params: {{after_s: 0.2, code: 7}}
        restart: {{policy: on-failure, max_restarts: 1, backoff_s: 0.1}}
      - {{name: rec, type: test_record, params: {{path: {tmp_path / 'r.jsonl'}}}}}
    connections: [bad.frames -> rec.messages]
    """)
    assert g.wait(30) == 1, g.describe()
    err = g.stderr()
    assert err.count("started bad (pid") == 2 and err.count("exited with code 7") == 2  # run + one restart
    assert "bad failed for good (exit code 7)" in g.stdout()
    row = next(line for line in g.stdout().splitlines() if line.strip().startswith("bad "))
    assert row.split()[1:4] == ["FAILED", "7,7", "1"], row


@pytest.mark.slow
def test_slow_consumer_keeps_producer_memory_flat_and_duration_stops(run_graph, tmp_path):
    """A flooding 1280x720 source into a consumer that takes 0.2 s per frame: with an unbounded queue
    the producer would grow by ~2.7 MB per frame it is ahead; latest-wins keeps it flat."""
    out = tmp_path / "rec.jsonl"
    g = run_graph(f"""
    nodes:
      - {{name: cam, type: pattern, params: {{fps: 0, height: 720, width: 1280}}}}
      - {{name: slow, type: test_record, params: {{path: {out}, delay_s: 0.2}}}}
    connections: [cam.frames -> slow.messages]
    """, "--duration", "6")
    g.wait_for(lambda: len(_records(out)) >= 2, what="the consumer's first frames")
    cam = psutil.Process(g.node_pids()["cam"])
    time.sleep(0.5)
    rss = []
    for _ in range(12):
        rss.append(cam.memory_info().rss)
        time.sleep(0.25)
    assert g.wait(15) == 0, g.describe()
    row = next(line for line in g.stdout().splitlines() if line.strip().startswith("cam "))
    sent = int(row.split()[5])
    consumed = len(_records(out))
    assert sent > 5 * consumed, f"the producer was not faster than the consumer ({sent} vs {consumed})"
    growth_mb = (max(rss) - rss[0]) / 2**20
    assert growth_mb < 20, f"producer RSS grew {growth_mb:.0f} MB in 3 s: {[r >> 20 for r in rss]} MB"
    assert "duration 6 s reached" in g.stdout()
    assert time.monotonic() - g.t_start < 6 + 10


def test_stats_and_subscribe_on_a_running_graph(run_graph, tmp_path, plugin_env):
    out = tmp_path / "rec.jsonl"
    g = run_graph(f"""
    nodes:
      - {{name: cam, type: pattern, params: {{width: 160, height: 120, fps: 30}}}}
      - {{name: shrink, type: resize, params: {{width: 80, height: 60}}}}
      - {{name: rec, type: test_record, params: {{path: {out}}}}}
    connections: [cam.frames -> shrink.frames, shrink.frames -> rec.messages]
    """)
    g.wait_for(lambda: len(_records(out)) >= 5, what="frames")
    cli = [sys.executable, "-m", "edge"]
    env = g.env  # its TMPDIR: `latest` points at this run

    def stats_json():
        r = subprocess.run([*cli, "stats", "--once", "--json"], capture_output=True, text=True, env=env, timeout=30)
        assert r.returncode == 0, r.stderr
        rows = {n["node"]: n for n in json.loads(r.stdout)["nodes"]}
        # A few frames through every node (a snapshot taken after the first frame has no latency yet; one
        # taken before a node's first report, once a second, has only the supervisor's keys for it).
        ready = all(rows.get(n, {}).get(k, 0) >= 5 for n, k in (("rec", "in"), ("shrink", "out")))
        return rows if ready else None

    rows = g.wait_for(stats_json, what="stats with traffic")
    assert set(rows) == {"cam", "shrink", "rec"} and all(r["state"] == "running" for r in rows.values())
    assert rows["shrink"]["out"] > 0 and rows["cam"]["fps"] > 5 and rows["shrink"]["p99_ms"] > 0
    r = subprocess.run([*cli, "stats", "--once"], capture_output=True, text=True, env=env, timeout=30)
    assert r.returncode == 0 and r.stdout.splitlines()[1].split()[:4] == list(COLUMNS[:4]), r.stdout

    r = subprocess.run([*cli, "subscribe", "shrink.frames", "--count", "3", "--json", "--timeout", "10"],
                       capture_output=True, text=True, env=env, timeout=30)
    assert r.returncode == 0, r.stderr
    msgs = [json.loads(s) for s in r.stdout.splitlines()]
    assert len(msgs) == 3 and [m["frame"] for m in msgs] == sorted(m["frame"] for m in msgs)
    img = msgs[0]["arrays"]["image"]
    assert img["dtype"] == "|u1" and img["shape"] == [60, 80] and 0 <= img["min"] <= img["mean"] <= img["max"]
    assert msgs[0]["meta"]["source"] == "pattern" and msgs[0]["latency_ms"] >= 0
    r = subprocess.run([*cli, "subscribe", g.endpoints()["ports"]["cam.frames"], "--count", "1"],
                       capture_output=True, text=True, env=env, timeout=30)
    assert r.returncode == 0 and r.stdout.startswith("cam.frames frame seq=") and "image=|u1[120, 160, 3]" in r.stdout
    r = subprocess.run([*cli, "subscribe", "shrink.nosuch"], capture_output=True, text=True, env=env, timeout=30)
    assert r.returncode == 2 and "no output port 'shrink.nosuch'" in r.stderr and "cam.frames" in r.stderr
    live = subprocess.Popen([*cli, "stats", "--json", "--timeout", "1.5"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        # Two snapshots (read as they come: the command's start-up takes seconds on a loaded machine), then
        # the graph goes away under the live view.
        first = [live.stdout.readline() for _ in range(2)]
        g.terminate()
        live_out, live_err = live.communicate(timeout=15)
        live_out = "".join(first) + live_out
    finally:
        live.kill()
    assert live.returncode == 0 and "stopped" in live_err, live_err
    snaps = [json.loads(s) for s in live_out.splitlines()]
    assert len(snaps) >= 2 and all(len(s["nodes"]) == 3 for s in snaps)
    for cmd in (["stats", "--once"], ["subscribe", "cam.frames"]):
        r = subprocess.run([*cli, *cmd], capture_output=True, text=True, env=env, timeout=30)
        assert r.returncode == 2 and "no running graph" in r.stderr, r.stderr


def test_a_killed_runner_leaves_a_run_that_stats_and_subscribe_refuse_and_the_next_run_removes(
        run_graph, tmp_path, write_graph):
    out = tmp_path / "rec.jsonl"
    g = run_graph(f"""
    nodes:
      - {{name: cam, type: test_arrays, params: {{count: 0, fps: 20, height: 8, width: 8}}}}
      - {{name: rec, type: test_record, params: {{path: {out}}}}}
    connections: [cam.frames -> rec.messages]
    """)
    g.wait_for(lambda: len(_records(out)) >= 2, what="frames")
    run_dir = g.run_dir()
    specs = {p.name: p.stat().st_mode & 0o777 for p in run_dir.glob("*.json") if p.name != "endpoints.json"}
    assert specs == {"cam.json": 0o600, "rec.json": 0o600}
    assert run_dir.stat().st_mode & 0o077 == 0
    cli = [sys.executable, "-m", "edge"]
    tap = subprocess.Popen([*cli, "subscribe", "cam.frames"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, env=g.env)
    try:
        assert select.select([tap.stdout], [], [], 20)[0], "the tap printed nothing"
        assert tap.stdout.readline().startswith("cam.frames frame")
        runner = g.proc.pid
        os.kill(runner, signal.SIGKILL)
        g.proc.wait(10)
        _, tap_err = tap.communicate(timeout=15)  # a tap waiting on the dead graph ends by itself
    finally:
        tap.kill()
    assert tap.returncode == 1 and f"its runner (pid {runner}) is gone" in tap_err, tap_err
    assert run_dir.is_dir() and (g.runs_root / "latest").is_symlink()  # what SIGKILL leaves
    r = subprocess.run([*cli, "subscribe", "cam.frames"], capture_output=True, text=True, env=g.env, timeout=30)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert f"is not running (its runner, pid {runner}, is gone)" in r.stderr
    with pytest.raises(UserError, match="is not running"):  # what `facesleuth stats` resolves the run with
        find_run_dir(run_dir)
    short = write_graph(f"""
    nodes:
      - {{name: cam, type: test_arrays, params: {{count: 3, height: 8, width: 8}}}}
      - {{name: rec, type: test_record, params: {{path: {tmp_path / 'second.jsonl'}}}}}
    connections: [cam.frames -> rec.messages]
    """, "second.yaml")
    r = subprocess.run([*cli, "run", str(short)], capture_output=True, text=True, env=g.env, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "removed the run directory of a runner that is gone" in r.stderr
    assert not run_dir.exists() and not (g.runs_root / "latest").is_symlink()
    assert list(g.runs_root.iterdir()) == []


def test_bad_input_is_exit_2_in_one_line_and_not_retried(run_graph, tmp_path):
    """A log that is not SQLite: setup refuses, the node is not restarted (the same input fails the same
    way), the run exits 2, no traceback. A pinned endpoint that another program holds is refused before any
    node starts (edge.runtime.preflight; its --set advice: tests/test_run_failfast.py)."""
    (tmp_path / "junk.db").write_bytes(b"this is no database\n" * 20)
    retry = "restart: {policy: on-failure, max_restarts: 3, backoff_s: 0.1}"
    bad_log = run_graph(f"""
    nodes:
      - {{name: src, type: test_events, params: {{count: 3}}}}
      - {{name: ev, type: events, params: {{db: {tmp_path / 'junk.db'}, print: false, pub: "ipc://{tmp_path}/p",
          replay: "ipc://{tmp_path}/r"}}, {retry}}}
    connections: [src.events -> ev.events]
    """)
    with pysocket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        pinned = run_graph(f"""
        nodes:
          - {{name: src, type: test_arrays, endpoints: {{frames: "tcp://127.0.0.1:{port}"}}, {retry}}}
          - {{name: rec, type: test_record, params: {{path: {tmp_path / 'r.jsonl'}}}}}
        connections: [src.frames -> rec.messages]
        """)
        codes = (bad_log.wait(30), pinned.wait(30))
    assert codes[1] == 2 and "started src" not in pinned.stderr() and pinned.stdout() == "", pinned.describe()
    assert pinned.stderr().splitlines() == [
        f"facesleuth run: error: tcp://127.0.0.1:{port} (src.endpoints.frames) is in use (another graph running? "
        f"`facesleuth stats` shows it): edit nodes.src.endpoints.frames in {pinned.proc.args[-1]}"]
    for g, code, node, reason in ((bad_log, codes[0], "ev", "not an SQLite database"),):
        assert code == 2, g.describe()
        err = g.stderr()
        assert err.count(f"started {node} (pid") == 1 and "restart 1/" not in err, g.describe()
        errors = [line for line in err.splitlines() if " ERROR " in line]
        assert len(errors) == 1 and reason in errors[0] and "Traceback" not in err, g.describe()  # one line
        first = g.stdout().splitlines()[0]
        assert first.startswith("graph graph") and reason in first and "not retried" in first, first
        row = next(line for line in g.stdout().splitlines() if line.strip().startswith(f"{node} "))
        assert row.split()[1:4] == ["FAILED", "2", "0"], row


def test_a_graph_stopped_while_its_nodes_import_stops_without_a_traceback(run_graph, tmp_path):
    g = run_graph(f"""
    nodes:
      - {{name: src, type: test_arrays, params: {{count: 0, fps: 10}}}}
      - {{name: mid, type: test_relay}}
      - {{name: rec, type: test_record, params: {{path: {tmp_path / 'r.jsonl'}}}}}
    connections: [src.frames -> mid.frames, mid.frames -> rec.messages]
    """)
    g.wait_for(lambda: "started rec" in g.stderr(), what="the nodes started")  # now importing
    code, elapsed = g.stop(10)
    assert code == 0 and elapsed < 5, g.describe()
    assert "Traceback" not in g.stderr() and "KeyboardInterrupt" not in g.stderr(), g.describe()


def test_a_consumer_restarted_after_its_producer_ended_is_told_and_the_batch_job_ends(run_graph, tmp_path):
    """src reports its end only once mid has handled and acknowledged everything, the end included; mid,
    killed in its teardown after that, is restarted, told that src has ended, and ends."""
    g = run_graph("""
    nodes:
      - {name: src, type: test_arrays, params: {count: 20, height: 8, width: 8}}
      - name: mid
        type: test_relay
        params: {teardown_s: 30}
        restart: {policy: on-failure, max_restarts: 1, backoff_s: 0.2}
    connections: [{from: src.frames, to: mid.frames, delivery: lossless, queue: 50}]
    """)
    g.wait_for(lambda: "src: end of stream" in g.stderr() and "mid: end of stream" in g.stderr(),
               what="the ends of src and mid")
    os.kill(g.node_pids()["mid"], signal.SIGKILL)  # in its 30-s teardown
    assert g.wait(20) == 0, g.describe()  # the new mid heard that src had ended, drained and ended
    assert "every stream ended" in g.stdout() and "restart 1/1" in g.stderr(), g.describe()


def test_a_producer_restarted_after_its_consumers_ended_is_stopped_and_the_batch_job_ends(run_graph, tmp_path):
    """Regression (bench faults seed 6): a node killed after its end of stream, restarted once its consumer
    had ended, waited forever in its end-of-stream drain for an acknowledgement nobody was left to send."""
    out = tmp_path / "rec.jsonl"
    g = run_graph(f"""
    nodes:
      - {{name: src, type: test_arrays, params: {{count: 10, height: 8, width: 8}}}}
      - name: mid
        type: test_relay
        params: {{teardown_s: 30}}
        restart: {{policy: on-failure, max_restarts: 1, backoff_s: 0.5}}
      - {{name: rec, type: test_record, params: {{path: {out}}}}}
      - {{name: slow, type: test_record, params: {{path: {tmp_path / "slow.jsonl"}, delay_s: 0.3}}}}
    connections:  # slow keeps the run (and src) going past mid's restart
      - {{from: src.frames, to: mid.frames, delivery: lossless, queue: 20}}
      - {{from: mid.frames, to: rec.messages, delivery: lossless, queue: 20}}
      - {{from: src.frames, to: slow.messages, delivery: lossless, queue: 20}}
    """)
    g.wait_for(lambda: "mid: end of stream" in g.stderr(), what="mid's end of stream")
    os.kill(g.node_pids()["mid"], signal.SIGKILL)  # in its teardown, after its end
    assert g.wait(20) == 0, g.describe()
    assert "restart 1/1" in g.stderr() and "mid: every consumer has ended; stopping it" in g.stderr(), g.describe()
    assert len(_records(out)) == 10 and len(_records(tmp_path / "slow.jsonl")) == 10


def test_a_consumer_killed_after_the_in_band_end_gets_the_end_again_and_the_batch_job_ends(run_graph, tmp_path):
    """Regression (bench faults seed 59): mid had src's in-band end of stream while rec still held mid's
    last messages unacknowledged (ack_retain, as flow holds its lag window), so src's last frames were
    unacknowledged too. mid acknowledged the end at once and was killed before sending its own; its restart
    was sent those frames again but never the end (src, still waiting for their acknowledgements, had not
    reported its end either): a batch job that never ended. The end is now acknowledged after mid ends."""
    out = tmp_path / "rec.jsonl"
    g = run_graph(f"""
    nodes:
      - {{name: src, type: test_arrays, params: {{count: 6, height: 8, width: 8}}}}
      - name: mid
        type: test_relay
        params: {{eos_delay_s: 30}}
        restart: {{policy: on-failure, max_restarts: 1, backoff_s: 0.2}}
      - {{name: rec, type: test_record, params: {{path: {out}, retain: 3}}}}
    connections:
      - {{from: src.frames, to: mid.frames, delivery: lossless, queue: 8}}
      - {{from: mid.frames, to: rec.messages, delivery: lossless, queue: 8}}
    """)
    g.wait_for(lambda: len(_records(out)) == 6, what="rec's six messages")
    time.sleep(0.5)  # mid is in its end-of-stream delay: src's end received, its own not sent
    os.kill(g.node_pids()["mid"], signal.SIGKILL)
    assert g.wait(30) == 0, g.describe()
    assert "restart 1/1" in g.stderr() and "every stream ended" in g.stdout(), g.describe()
    assert sorted(r["frame"] for r in _records(out)) == list(range(6))  # each once: the resends were dropped


def test_a_node_failing_the_same_way_on_every_message_fails_instead_of_spinning(run_graph):
    g = run_graph("""
    nodes:
      - {name: src, type: test_arrays, params: {count: 0, fps: 0, height: 8, width: 8}}
      - {name: bad, type: test_fail}
    connections: [src.frames -> bad.messages]
    """)
    assert g.wait(20) == 1, g.describe()
    assert "failed on 100 messages in a row, the same way each time (ValueError: cannot handle frame" in g.stderr()
    row = next(line for line in g.stdout().splitlines() if line.strip().startswith("bad "))
    assert row.split()[1:3] == ["FAILED", "1"] and int(row.split()[-1]) == 100, row  # the errors column
