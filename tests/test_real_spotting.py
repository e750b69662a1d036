"""Spotting on real footage (edge.data.real): blinks of a real talking face are blinks, not micro events.

Runs the product's face, flow and spot nodes in one process (edge.bench.clips.extract) on 11 s of the
fetched `franck_a` clip (a tuning clip) that holds six annotated blinks. Skipped, with the fetch command,
where the videos have not been fetched (`scripts/setup.sh dev` fetches them)."""

from __future__ import annotations

import pytest

from edge.bench.clips import VideoFile, extract, spot_clip
from edge.bench.real import overlaps
from edge.data.real import load_clips
from edge.errors import UserError
from edge.perception.face.landmarks import make_landmarker
from edge.perception.spot import SpotParams

FIRST, LAST = 1000, 1259  # frames of franck_a: six blinks at 1063-1240, the spotter warmed up before


@pytest.fixture(scope="module")
def franck():
    try:
        clip = next(c for c in load_clips() if c.name == "franck_a")
    except UserError as e:
        pytest.skip(str(e))
    if make_landmarker("auto").kind != "dlib68":
        pytest.skip("needs dlib's 68 landmarks for the eye state (pip install 'facesleuth-edge[face]')")
    start = clip.frames[0] if clip.frames else 0
    video = VideoFile(clip.path, clip.fps, frames=(start + FIRST, start + LAST))
    intervals = spot_clip(extract(video, baseline=False), SpotParams())
    blinks = [(e.start - FIRST, e.end - FIRST) for e in clip.spans("blink") if FIRST <= e.start and e.end <= LAST]
    return intervals, blinks


def test_real_blinks_give_no_micro_event_and_are_recognised_as_blinks(franck):
    intervals, blinks = franck
    assert len(blinks) == 6
    kept = [iv for iv in intervals if not iv.discarded]
    on_blinks = [(iv.kind, iv.onset, iv.offset, iv.rois) for iv in kept if iv.kind == "micro"
                 and any(overlaps(iv.onset, iv.offset, a, b) for a, b in blinks)]
    assert not on_blinks
    found = [any(iv.kind == "blink" and overlaps(iv.onset, iv.offset, a, b) for iv in kept) for a, b in blinks]
    assert sum(found) >= 5, (found, [(iv.kind, iv.onset, iv.offset, iv.discarded) for iv in intervals])
