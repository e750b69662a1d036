"""`facesleuth bench real` on a short synthetic clip written as a video file with an annotation of the real
clips' schema (no download, no real video): the scoring rules, the table and JSON, the contact sheets."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import pytest

from edge.bench import main as bench_main
from edge.bench.real import falls_on, score_clip
from edge.data.real import Event, RealClip
from edge.data.synth import SyntheticVideo, write_clip
from edge.errors import UserError
from edge.perception.spot import Interval

FPS = 30.0


def _annotation(name: str, truth: list[dict], held_out: bool) -> dict:
    micro = next(t for t in truth if t["kind"] == "micro")
    blink = next(t for t in truth if t["kind"] == "blink")
    return {"clip": name, "fps": FPS, "n_frames": 150, "width": 640, "height": 480, "held_out": held_out,
            "people": 1, "notes": "synthetic",
            "source": {"registry": "pypi", "package": "none", "version": "0", "path": f"{name}.avi",
                       "sha256": "0" * 64, "licence": "test"},
            "events": [{"kind": "blink", "start": blink["onset"], "end": blink["offset"]},
                       {"kind": "expression", "start": micro["onset"], "end": micro["offset"],
                        "note": "scripted micro-expression"},
                       # speech over the micro-expression's second half: the micro event falls on both
                       {"kind": "speech", "start": micro["apex"], "end": micro["offset"] + 5},
                       {"kind": "blink", "start": 130, "end": 140, "note": "not a spontaneous blink: test"}]}


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """The bench run once on one synthetic clip annotated as tuning footage: (json doc, sheets dir)."""
    tmp = tmp_path_factory.mktemp("bench_real")
    ann_dir, video_dir = tmp / "ann", tmp / "videos"
    ann_dir.mkdir()
    script = [{"t": 1.5, "kind": "micro", "amplitude_frame_px": 1.5, "label": "positive"},
              {"t": 3.2, "kind": "blink"}]
    video = SyntheticVideo("edge60", seed=3, duration_s=5.0, fps=FPS, script=script, random_events=False,
                           overrides={"head_turns_per_min": 0.0, "blinks_per_min": 0.0, "noise_sigma": 1.0})
    doc = write_clip(video, video_dir / "synclip.avi")
    (ann_dir / "synclip.json").write_text(json.dumps(_annotation("synclip", doc["intervals"], False)))
    out = tmp / "sheets"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("edge.data.real.ANNOTATIONS", ann_dir)
        rc = bench_main(argparse.Namespace(target="real", rest=[
            "--dir", str(video_dir), "--out", str(out), "--json", str(tmp / "real.json")]))
    assert rc == 0
    return json.loads((tmp / "real.json").read_text()), out


def test_blink_recognised_and_micro_counted_on_the_spans_it_overlaps(bench):
    doc, _ = bench
    rows = {r["clip"]: r for r in doc["rows"]}
    assert set(rows) == {"synclip", "TOTAL tuning (1)"}  # no held-out clip: no held-out row
    row = rows["synclip"]
    assert row["set"] == "tuning" and row["frames"] == 150 and row["s"] == 5.0
    # the sustained closure is left out of the recall: 1 of 1, not 1 of 2
    assert row["blinks recog"] == "1/1" and row["blink iv"] == 1
    assert row["micro"] == 1 and row["micro/min"] == 12.0
    assert (row["on expr"], row["on speech"], row["on B/S/O"], row["on none"], row["on blink"]) == (1, 1, 1, 0, 0)
    assert {k: v for k, v in rows["TOTAL tuning (1)"].items() if k != "clip"} == {
        k: v for k, v in row.items() if k != "clip"}
    clip = doc["clips"]["synclip"]
    assert clip["micro_events"][0]["falls_on"] == ["speech", "expression"]
    assert [b["excluded"] for b in clip["blink_spans"]] == [False, True]
    assert "not met" in doc["targets, tuning"]  # a micro event on speech


def test_one_readable_contact_sheet_per_clip(bench):
    _, out = bench
    assert [p.name for p in out.iterdir()] == ["synclip.png"]
    img = cv2.imread(str(out / "synclip.png"))
    # header, two sections, one micro row and one blink row of 128-px crops
    assert img is not None and img.shape[0] > 2 * 128 + 150 and img.shape[1] >= 1000
    assert img.std() > 20


def _clip(events: tuple[Event, ...]) -> RealClip:
    return RealClip("c", Path("c.mp4"), FPS, 300, 640, 480, False, 1, events, {})


def _iv(kind: str, onset: int, offset: int, discarded: str = "") -> Interval:
    t = [int(f / FPS * 1e9) for f in (onset, onset, offset)]
    return Interval(0, kind, onset, onset, offset, *t, discarded=discarded)


def test_scoring_rules():
    events = (Event("blink", 10, 15), Event("speech", 40, 80), Event("blink", 100, 140, "not a spontaneous blink"),
              Event("blink", 200, 205, "UNSURE: half closed"))
    clip = _clip(events)
    assert falls_on(_iv("micro", 15, 20), events) == ["blink"]  # inclusive ends
    assert falls_on(_iv("micro", 16, 39), events) == ["none"]
    ivs = [_iv("micro", 16, 25), _iv("micro", 30, 40), _iv("micro", 50, 60, "head motion 90 crop px/s > 40"),
           _iv("blink", 11, 14), _iv("blink", 120, 125), _iv("blink", 201, 203, "rigid motion 12 crop px/s > 8"),
           _iv("macro", 150, 190)]
    s = score_clip(clip, 300, ivs)
    assert (s["micro"], s["on_false"], s["on"]["none"], s["on"]["speech"]) == (2, 1, 1, 1)
    assert (s["blinks"], s["recognised"]) == (2, 1)  # the UNSURE blink counts; a discarded blink interval does not
    assert (s["macro"], s["blink_iv"]) == (1, 2)
    assert s["discarded"] == {"head motion": 1, "rigid motion": 1}
    assert s["minutes"] == pytest.approx(300 / FPS / 60)


def test_unknown_clip_and_missing_video_are_one_line_errors(tmp_path, monkeypatch):
    ann = _annotation("gone", [{"kind": "micro", "onset": 1, "apex": 2, "offset": 3},
                               {"kind": "blink", "onset": 5, "apex": 6, "offset": 7}], True)
    (tmp_path / "gone.json").write_text(json.dumps(ann))
    monkeypatch.setattr("edge.data.real.ANNOTATIONS", tmp_path)
    with pytest.raises(UserError, match=r"python -m edge\.data\.real fetch"):
        bench_main(argparse.Namespace(target="real", rest=["--dir", str(tmp_path / "none")]))
    (tmp_path / "gone.avi").write_bytes(b"")
    with pytest.raises(UserError, match="unknown clip.*nope"):
        bench_main(argparse.Namespace(target="real", rest=["--dir", str(tmp_path), "--clips", "nope"]))
