"""The real-footage annotations (edge/data/real/clips/*.json) against their schema, and the loader.
Needs no video and downloads nothing."""

from __future__ import annotations

import re

import pytest

from edge.data.real import KINDS, annotations, load_clips, video_name
from edge.errors import UserError

ANNS = annotations()


def test_about_a_third_of_the_footage_is_held_out():
    assert ANNS and len({a["clip"] for a in ANNS}) == len(ANNS)
    seconds = {a["clip"]: a["n_frames"] / a["fps"] for a in ANNS}
    held = sum(seconds[a["clip"]] for a in ANNS if a["held_out"])
    assert 0.25 <= held / sum(seconds.values()) <= 0.45


@pytest.mark.parametrize("ann", ANNS, ids=[a["clip"] for a in ANNS])
def test_annotation_schema(ann):
    assert set(ann) >= {"clip", "source", "fps", "n_frames", "width", "height", "held_out", "people",
                        "notes", "events"}
    src = ann["source"]
    assert src.get("registry", "pypi") in ("pypi", "npm")
    assert src["package"] and src["version"] and src["path"]
    assert re.fullmatch(r"[0-9a-f]{64}", src["sha256"])
    assert isinstance(src["licence"], str) and src["licence"].strip(), "licence must be stated"
    assert ann["fps"] > 0 and ann["n_frames"] > 0 and ann["width"] > 0 and ann["height"] > 0
    assert isinstance(ann["held_out"], bool) and ann["people"] >= 1
    for e in ann["events"]:
        assert set(e) <= {"kind", "start", "end", "note"}, e
        assert e["kind"] in KINDS, e
        assert isinstance(e["start"], int) and isinstance(e["end"], int), e
        assert 0 <= e["start"] <= e["end"] < ann["n_frames"], e


@pytest.mark.parametrize("ann", ANNS, ids=[a["clip"] for a in ANNS])
def test_same_kind_spans_do_not_overlap(ann):
    for kind in KINDS:
        spans = sorted((e["start"], e["end"]) for e in ann["events"] if e["kind"] == kind)
        for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
            assert end < start, (kind, spans)


def test_load_clips_says_how_to_fetch_when_a_video_is_missing(tmp_path):
    with pytest.raises(UserError, match=r"python -m edge\.data\.real fetch"):
        load_clips(tmp_path)


def test_load_clips_reads_every_annotation(tmp_path):
    for ann in ANNS:
        (tmp_path / video_name(ann)).write_bytes(b"")
    clips = load_clips(tmp_path)
    assert [c.name for c in clips] == [a["clip"] for a in ANNS]
    for clip, ann in zip(clips, ANNS, strict=True):
        assert clip.path == tmp_path / video_name(ann)
        assert len(clip.events) == len(ann["events"])
        assert [e.start for e in clip.events] == sorted(e.start for e in clip.events)
