"""`facesleuth analyze`: a generated clip with a micro-expression through configs/video.yaml's nodes writes
every output, its frames.csv columns are docs/analyze.md's table, and bad input is one line, exit 2,
before any work."""

from __future__ import annotations

import csv
import json
import re
import time
from pathlib import Path

import cv2
import pytest

from edge.analyze import OUTPUTS, frame_columns
from edge.cli import main as cli
from edge.perception.spot import SpotParams

ROOT = Path(__file__).resolve().parents[1]
MICRO_T = 1.4  # s: the spotter needs about a second of history first


def write_small_clip(path: Path) -> list[dict]:
    """A 3-s 320x240 clip: one face, one micro-expression (1.5 frame px at apex) and a blink."""
    from edge.data.synth import SyntheticVideo, write_clip

    video = SyntheticVideo("edge60", seed=0, duration_s=3.0, width=320, height=240, fps=30,
                           script=[{"t": MICRO_T, "kind": "micro", "amplitude_frame_px": 1.5, "label": "surprise"},
                                   {"t": 2.3, "kind": "blink"}],
                           overrides={"head_turns_per_min": 0.0, "blinks_per_min": 0.0, "noise_sigma": 1.0})
    return write_clip(video, path)["intervals"]


def documented_frame_columns() -> list[str]:
    """The `column` cells of docs/analyze.md's frames.csv table, in order."""
    text = (ROOT / "docs" / "analyze.md").read_text()
    section = text.split("### frames.csv", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `([a-z_]+)` \|", section, flags=re.M)


@pytest.fixture(scope="module")
def analyzed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("analyze")
    truth = write_small_clip(tmp / "clip.avi")
    rc = cli(["analyze", str(tmp / "clip.avi"), "-o", str(tmp / "out")])
    return rc, tmp / "out" / "clip", truth


def test_analyze_writes_every_output_with_the_documented_columns(analyzed):
    rc, out, truth = analyzed
    assert rc == 0
    for name in OUTPUTS:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    with open(out / "frames.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == frame_columns() == documented_frame_columns()
    assert len({int(r["frame"]) for r in rows}) >= 80  # a face on (nearly) every one of the 90 frames
    scored = [r for r in rows if r["score"]]
    assert scored and all(r[f"motion_{roi}"] and r["flow_ref"] for r in scored for roi in ("brow_left", "chin"))
    micro = next(t for t in truth if t["kind"] == "micro")
    k_on = SpotParams().k_on
    # the score rises over the onset threshold on the micro-expression, and stays under it before
    assert max(float(r["score"]) for r in scored if micro["onset"] <= int(r["frame"]) <= micro["offset"]) > k_on
    assert max(float(r["score"]) for r in scored if int(r["frame"]) < micro["onset"]) < k_on
    events = [json.loads(s) for s in (out / "events.jsonl").read_text().splitlines()]
    with open(out / "events.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert events and len(table) == len(events)
    hit = [e for e in events if e["kind"] == "micro" and e["onset"]["frame"] <= micro["offset"]
           and micro["onset"] <= e["offset"]["frame"]]
    assert hit and hit[0]["label"] in hit[0]["scores"], events
    assert hit[0]["video"]["onset_s"] == pytest.approx(hit[0]["onset"]["frame"] / 30, abs=1e-3)
    for col in ("seq", "label", "confidence", "video.onset_s", "video.offset_s", "onset.frame", "scores.surprise",
                "context.talking", "box.0"):
        assert col in table[0], col
    png = cv2.imread(str(out / "timeline.png"))
    assert png is not None and png.shape[1] == 1280 and png.shape[0] > 400
    cap = cv2.VideoCapture(str(out / "annotated.avi"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 90
    cap.release()
    summary = (out / "summary.md").read_text()
    assert "90 frames" in summary and hit[0]["label"] in summary


def _one_line_exit_2(capsys, argv: list[str], words: str) -> None:
    t0 = time.monotonic()
    assert cli(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and words in err, err
    assert time.monotonic() - t0 < 5  # checked before any node is set up (no torch, no frame decoded)


def test_bad_input_is_one_line_and_exit_2_before_any_work(tmp_path, capsys, analyzed):
    _, done, _ = analyzed
    clip = done.parent.parent / "clip.avi"
    bad = tmp_path / "notavideo.avi"
    bad.write_text("not a video")
    out = tmp_path / "out"
    _one_line_exit_2(capsys, ["analyze", str(tmp_path / "missing.avi"), "-o", str(out)], "video file not found")
    _one_line_exit_2(capsys, ["analyze", str(clip), str(bad), "-o", str(out)], "cannot read video")
    # an output that exists and is not empty: the first run's
    _one_line_exit_2(capsys, ["analyze", str(clip), "-o", str(done.parent)], "--force")
    _one_line_exit_2(capsys, ["analyze", str(clip), "-o", str(out), "--set", "spot.k_on=-1"], "k_on")
    _one_line_exit_2(capsys, ["analyze", str(clip), "-o", str(out), "--set", "spot.nope=1"], "nope")
    _one_line_exit_2(capsys, ["analyze", str(clip), "-o", str(out), "--set", "capture.path=x.mp4"],
                     "set by analyze")
    _one_line_exit_2(capsys, ["analyze", str(clip), "-o", str(out), "--jobs", "0"], "--jobs")
    other = tmp_path / "b"
    other.mkdir()
    (other / "clip.avi").write_bytes(clip.read_bytes())
    _one_line_exit_2(capsys, ["analyze", str(clip), str(other / "clip.avi"), "-o", str(out)], "share")
    assert not out.exists()  # nothing was started
