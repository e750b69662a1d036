"""A long video's frame folder as a video: frames in frame-number order at the dataset's frame rate.

The pipeline numbers the frames it is given 0, 1, 2, ... (the capture node's file source does the same);
the datasets number their files from 0 or 1 and some releases drop frames (CAS(ME)^3). `numbers[k]` is the
dataset's number of pipeline frame k, so spotted intervals go back to the dataset's numbering exactly and
ground truth comes to the pipeline's by the nearest frames inside it.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from edge.data.longvideo import Interval, LongVideo
from edge.errors import UserError


def to_index(numbers: list[int], onset: int, offset: int) -> tuple[int, int]:
    """Dataset frames onset..offset (inclusive) as pipeline frame indices: the first frame at or after the
    onset, the last at or before the offset (a dropped frame at either end shortens the range)."""
    first = bisect.bisect_left(numbers, onset)
    last = bisect.bisect_right(numbers, offset) - 1
    return first, max(first, last)


def to_number(numbers: list[int], index: int) -> int:
    """Pipeline frame `index` as the dataset numbers it (clamped to the video)."""
    return numbers[min(max(index, 0), len(numbers) - 1)]


def truth_dicts(intervals: list[Interval], numbers: list[int]) -> list[dict]:
    """Ground truth as the calibration scores it (edge.bench.spotting.score): kind, onset, apex, offset in
    pipeline frames, plus the dataset's own numbers."""
    out = []
    for iv in intervals:
        onset, offset = to_index(numbers, iv.onset, iv.offset)
        apex = min(max(bisect.bisect_left(numbers, iv.apex), onset), offset)
        out.append({"kind": iv.kind, "onset": onset, "apex": apex, "offset": offset, "label": iv.composite,
                    "frames": [iv.onset, iv.offset]})
    return out


class FrameFolder:
    """What `edge.bench.clips.extract` reads: `fps`, `truth`, and the BGR frames in frame-number order.
    An unreadable image is a UserError naming it (a truncated JPEG in a release should not pass as black)."""

    def __init__(self, video: LongVideo) -> None:
        frames = video.frames
        self.folder = video.folder
        self.fps = video.fps
        self.numbers = list(frames)
        self.paths: list[Path] = list(frames.values())
        self.n_frames = len(self.paths)
        self.truth = truth_dicts(video.intervals, self.numbers)
        self.read = 0  # frames decoded so far

    def __iter__(self) -> Iterator[np.ndarray]:
        for path in self.paths:
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is None:
                raise UserError(f"{path}: not a readable image")
            self.read += 1
            yield image
