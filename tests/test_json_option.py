"""`--json [FILE]` means the same on every command that has it (edge/jsonout.py): `--json` puts JSON, and
nothing else, on stdout; `--json FILE` leaves stdout as it was and writes the JSON to FILE.

Each command runs in this process against real sockets and files it reads in a real run: a stats
publisher beside a run directory, a frame publisher, an event server over an SQLite log."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import msgpack
import numpy as np
import pytest
import zmq

from edge.cli import main
from edge.events.log import EventLog
from edge.runtime.control import STATS_TOPIC, NodeRecord, NodeStats
from edge.runtime.messages import Message
from edge.runtime.supervisor import _start_time
from edge.runtime.transport import EventServer, Output, context


def _publish_until(stop: threading.Event, send: Callable[[int], None]) -> threading.Thread:
    """Send every 20 ms until stopped: a subscriber that joins late still gets what it waits for."""
    def loop() -> None:
        i = 0
        while not stop.is_set():
            send(i)
            i += 1
            time.sleep(0.02)

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    return t


@pytest.fixture
def events_db(tmp_path: Path) -> Path:
    db = tmp_path / "events.db"
    with EventLog(db) as log:
        for i in range(3):
            log.append({"stream": "cam0", "track_id": i, "label": "surprise", "kind": "micro",
                        "onset_frame": 10 * i, "offset_frame": 10 * i + 8})
    return db


@pytest.fixture
def sources(tmp_path: Path, events_db: Path, short_tmp: Path) -> Iterator[dict[str, list[str]]]:
    """argv (without --json) of each command with --json, and what it reads running meanwhile."""
    ctx = context()
    stop = threading.Event()
    run_dir = short_tmp / "run"
    run_dir.mkdir()
    stats_ep = f"ipc://{short_tmp}/stats"
    pub = ctx.socket(zmq.PUB)
    pub.bind(stats_ep)
    (run_dir / "endpoints.json").write_text(json.dumps(
        {"graph": "g", "pid": os.getpid(), "started": _start_time(os.getpid()), "stats": stats_ep, "ports": {}}))
    node = NodeRecord.wire_map(NodeStats(node="src", type="capture", messages_out=5).to_dict(), restarts=0,
                               state="running", pid=os.getpid())
    frames = Output(ctx, "src.frames", f"ipc://{short_tmp}/frames")
    image = np.zeros((4, 4, 3), np.uint8)
    log = EventLog(events_db, readonly=True)
    server = EventServer(ctx, f"ipc://{short_tmp}/ev", f"ipc://{short_tmp}/replay", log.since, lambda: log.last_seq)
    threads = [
        _publish_until(stop, lambda i: pub.send_multipart([STATS_TOPIC, msgpack.packb(
            {"graph": "g", "t_wall_ns": time.time_ns(), "nodes": {"src": node}, "control_dropped": 0})])),
        _publish_until(stop, lambda i: frames.send(Message("frame", "cam0", frame=i, arrays={"image": image}))),
    ]
    yield {
        "stats": ["stats", "--run-dir", str(run_dir), "--once"],
        "subscribe": ["subscribe", f"ipc://{short_tmp}/frames", "--count", "2"],
        "events tail": ["events", "tail", f"ipc://{short_tmp}/ev", "--replay", f"ipc://{short_tmp}/replay",
                        "--since", "0", "--count", "3"],
        "events query": ["events", "query", str(events_db)],
        "doctor": ["doctor"],
        "bench": ["bench", "synth", "--samples", "1", "--frames", "2", "--presets", "webcam30", "--faces", "1"],
    }
    stop.set()
    for t in threads:
        t.join()
    server.close()
    frames.close()
    pub.close(0)
    log.close()
    ctx.term()


def _records(text: str, command: str) -> list:
    """The JSON the command wrote: one document (doctor, bench) or one object per line (the rest)."""
    if command in ("doctor", "bench"):
        return [json.loads(text)]
    return [json.loads(line) for line in text.splitlines()]


def _check(command: str, records: list) -> None:
    """What each command's JSON holds (one shape each, whichever way it was written)."""
    if command == "stats":
        assert records[0]["graph"] == "g" and records[0]["nodes"][0]["node"] == "src"
    elif command == "subscribe":
        assert [r["frame"] for r in records] == sorted(r["frame"] for r in records) and len(records) == 2
        assert records[0]["arrays"]["image"]["shape"] == [4, 4, 3]
    elif command.startswith("events"):
        assert [r["track_id"] for r in records] == [0, 1, 2] and {r["label"] for r in records} == {"surprise"}
    elif command == "doctor":
        assert {"checks", "nodes"} <= set(records[0])
    else:
        assert records[0]["title"].startswith("synthetic source") and len(records[0]["rows"]) == 2


COMMANDS = ["stats", "subscribe", "events tail", "events query", "doctor", "bench"]


@pytest.mark.parametrize("command", COMMANDS)
def test_json_means_the_same_on_every_command(command, sources, tmp_path, capsys):
    argv = sources[command]
    assert main([*argv, "--json"]) == 0
    out = capsys.readouterr().out
    _check(command, _records(out, command))  # stdout is the JSON and nothing else

    path = tmp_path / f"{command.replace(' ', '_')}.json"
    assert main([*argv, "--json", str(path)]) == 0
    text = capsys.readouterr().out
    _check(command, _records(path.read_text(), command))
    assert text.strip() and not text.lstrip().startswith(("{", "[")), text[:200]  # the usual text on stdout
    assert not list(tmp_path.glob("*.part"))


@pytest.mark.parametrize("value, words", [("tcp://127.0.0.1:5571", "looks like an endpoint"),
                                          ("{tmp}", "is a directory"), ("{tmp}/no/such.json", "does not exist")])
def test_a_json_file_that_cannot_be_written_is_one_line_before_any_work(value, words, tmp_path, capsys):
    t0 = time.monotonic()
    rc = main(["events", "tail", "--json", value.format(tmp=tmp_path), "--timeout", "30"])
    err = capsys.readouterr().err.splitlines()
    assert rc == 2 and len(err) == 1 and words in err[0] and time.monotonic() - t0 < 1.0, err
