"""The Node.js example client (examples/node, npm packages zeromq and @msgpack/msgpack) against a live
pipeline: started late, it catches up through the replay endpoint and then follows the live stream,
printing every event exactly once, in order. Skips when node or its npm packages are missing."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

from conftest import REPO, free_tcp_port, need

from edge.errors import UserError
from edge.events.log import EventLog

CLIENT = REPO / "examples" / "node" / "client.js"


def _need_node() -> str:
    node = shutil.which("node")
    need("node", node is not None, "node (Node.js) not installed")
    need("node", (CLIENT.parent / "node_modules" / "zeromq").is_dir(),
         "examples/node has no node_modules (run `npm ci` there; scripts/setup.sh dev does)")
    return node


def test_node_client_catches_up_through_replay_and_follows_live(run_graph, tmp_path: Path):
    node = _need_node()
    pub, replay = f"tcp://127.0.0.1:{free_tcp_port()}", f"tcp://127.0.0.1:{free_tcp_port()}"
    db = tmp_path / "ev.db"
    g = run_graph(f"""
        name: node-client
        nodes:
          - {{name: src, type: test_events, params: {{count: 60, rate: 10.0, stream: cam3}}}}
          - {{name: events, type: events, params: {{db: {db}, pub: "{pub}", replay: "{replay}", print: false}}}}
        connections:
          - src.events -> events.events
        """)

    def stored() -> int:
        if not db.exists():
            return 0
        try:
            with EventLog(db, readonly=True) as log:
                return log.last_seq
        except UserError:  # the events node has created the file but not yet its table
            return 0

    g.wait_for(lambda: stored() >= 8, 30, "the first events in the log")  # the client starts late
    out = subprocess.run([node, str(CLIENT), "--pub", pub, "--replay", replay, "--since", "0", "--count", "60",
                          "--json"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr + g.describe()
    events = [json.loads(line) for line in out.stdout.splitlines()]
    assert [e["seq"] for e in events] == list(range(1, 61)), out.stderr  # no gap, no duplicate, in order
    assert all(e["stream"] == "cam3" and e["label"] == "surprise" for e in events)
    assert "through replay" in out.stderr
    replayed = int(out.stderr.split("(")[1].split()[0])
    assert 8 <= replayed < 60, out.stderr  # the backlog came through replay, the rest live
    assert g.wait(30) == 0, g.describe()


def test_node_client_says_what_is_wrong_in_one_line(tmp_path: Path):
    node = _need_node()
    t0 = time.monotonic()
    out = subprocess.run([node, str(CLIENT), "--replay", f"tcp://127.0.0.1:{free_tcp_port()}", "--since", "0",
                          "--timeout-ms", "500"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 1
    assert out.stderr.strip().startswith("facesleuth-events: error: no answer from replay endpoint"), out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and time.monotonic() - t0 < 20
