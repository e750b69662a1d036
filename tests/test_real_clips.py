"""The real-footage annotations (edge/data/real/clips/*.json) against their schema, and the loader.
Needs no video and downloads nothing."""

from __future__ import annotations

import re

import cv2
import numpy as np
import pytest

from edge.bench.clips import VideoFile
from edge.data.real import KINDS, annotations, cache_dir, load_clips, video_name
from edge.errors import UserError

ANNS = annotations()
SEGMENTED = [a for a in ANNS if "frames" in a]


def test_about_a_third_of_the_footage_is_held_out():
    assert ANNS and len({a["clip"] for a in ANNS}) == len(ANNS)
    seconds = {a["clip"]: a["n_frames"] / a["fps"] for a in ANNS}
    held = sum(seconds[a["clip"]] for a in ANNS if a["held_out"])
    assert 0.25 <= held / sum(seconds.values()) <= 0.45


@pytest.mark.parametrize("ann", ANNS, ids=[a["clip"] for a in ANNS])
def test_annotation_schema(ann):
    assert set(ann) >= {"clip", "source", "fps", "n_frames", "width", "height", "held_out", "people",
                        "notes", "events"}
    assert set(ann) <= {"clip", "source", "frames", "fps", "n_frames", "width", "height", "held_out", "people",
                        "notes", "events"}, set(ann)
    src = ann["source"]
    assert src.get("registry", "pypi") in ("pypi", "npm")
    assert src["package"] and src["version"] and src["path"]
    assert re.fullmatch(r"[0-9a-f]{64}", src["sha256"])
    assert isinstance(src["licence"], str) and src["licence"].strip(), "licence must be stated"
    assert ann["fps"] > 0 and ann["n_frames"] > 0 and ann["width"] > 0 and ann["height"] > 0
    assert isinstance(ann["held_out"], bool) and ann["people"] >= 1
    if "frames" in ann:  # a segment of the video: first..last inclusive, events counted from `first`
        first, last = ann["frames"]
        assert isinstance(first, int) and isinstance(last, int) and 0 <= first <= last, ann["frames"]
        assert last - first + 1 == ann["n_frames"], (ann["frames"], ann["n_frames"])
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
        assert clip.frames == (tuple(ann["frames"]) if "frames" in ann else None)


def test_segments_of_one_video_do_not_overlap():
    by_video: dict[str, list[list[int]]] = {}
    for ann in SEGMENTED:
        by_video.setdefault(ann["source"]["sha256"], []).append(ann["frames"])
    for segs in by_video.values():
        segs.sort()
        for (_, last), (first, _) in zip(segs, segs[1:], strict=False):
            assert last < first, segs


def _fetched(ann: dict):
    path = cache_dir() / video_name(ann)
    if not path.is_file():
        pytest.skip(f"{path} not fetched (python -m edge.data.real fetch)")
    return path


@pytest.mark.parametrize("ann", SEGMENTED, ids=[a["clip"] for a in SEGMENTED])
def test_segment_lies_inside_its_fetched_video(ann):
    cap = cv2.VideoCapture(str(_fetched(ann)))
    declared, fps = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), cap.get(cv2.CAP_PROP_FPS)
    cap.release()
    assert ann["frames"][1] < declared and fps == pytest.approx(ann["fps"], abs=0.01)


@pytest.mark.skipif(not SEGMENTED, reason="no annotated clip is a segment of its video")
def test_a_segment_reads_its_own_frames_from_frame_0():
    path = _fetched(SEGMENTED[0])
    whole = [f.copy() for _, f in zip(range(12), VideoFile(path), strict=False)]
    part = VideoFile(path, frames=(7, 10))
    frames = list(part)
    assert part.n_frames == len(frames) == 4
    for k, f in enumerate(frames):
        assert np.array_equal(f, whole[7 + k]), k
    assert not np.array_equal(frames[0], whole[6])
