"""What the long-video loaders share: the Interval and LongVideo records, the onset/apex/offset quirks,
the composite labels and the frame-folder checks.

A long video is one continuous recording (tens of seconds to minutes) with zero or more annotated
expressions, micro or macro, each an Interval of the dataset's own frame numbers (inclusive).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from edge.data.datasets.common import COMPOSITE, list_frames
from edge.errors import UserError

log = logging.getLogger(__name__)

# Frame rates of the recordings (docs/spotting-datasets.md, "Frame rates"): one source for every caller.
FPS = {"casme2_lv": 30.0, "samm_lv": 200.0, "casme3_lv": 30.0}

KINDS = ("micro", "macro")

# MEGC2019 3-class composite from each long-video set's native emotion (lower-cased). CAS(ME)^2 codes the
# composite classes themselves (negative / positive / surprise / others); SAMM Long Videos take the SAMM
# short-clip emotions (the same sessions and filenames); CAS(ME)^3 part A as its short clips. "others" is
# dropped everywhere (None), as in the short-clip composite.
COMPOSITE_LV = {
    "casme2_lv": {"negative": "negative", "positive": "positive", "surprise": "surprise"},
    "samm_lv": COMPOSITE["samm"],
    "casme3_lv": COMPOSITE["casme3"],
}

FRAME_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


@dataclass(frozen=True)
class Interval:
    """One annotated expression in a long video. Frames are the dataset's own numbers, inclusive."""

    dataset: str
    subject: str
    video: str
    onset: int
    apex: int
    offset: int
    kind: str                      # "micro" or "macro"
    emotion: str | None            # native label, lower-case ("others" for Other/Others); None if not coded
    composite: str | None          # MEGC2019 3-class label, or None (dropped class or no emotion)
    aus: tuple[str, ...] = ()
    apex_estimated: bool = False   # apex missing (0, -1, empty): the midpoint of onset..offset
    offset_from_apex: bool = False  # offset coded 0: the apex stands in for it (CAS(ME)^2, SAMM-LV)
    source_row: int | None = None  # annotation sheet row (1-based)

    @property
    def frames(self) -> tuple[int, int]:
        """(onset, offset), the inclusive range the MEGC rule scores."""
        return self.onset, self.offset


@dataclass
class LongVideo:
    """One long video: its frame folder and its annotated intervals (possibly none)."""

    dataset: str
    subject: str
    video: str
    folder: Path
    intervals: list[Interval] = field(default_factory=list)

    @property
    def fps(self) -> float:
        return FPS[self.dataset]

    @property
    def key(self) -> str:
        """Dataset/subject/video, unique across datasets (subject ids are namespaced for merging)."""
        return f"{self.dataset}/{self.subject}/{self.video}"

    @property
    def subject_key(self) -> str:
        return f"{self.dataset}/{self.subject}"

    @cached_property
    def frames(self) -> dict[int, Path]:
        """{frame number: path}, sorted; listed on first use (long videos hold thousands of files)."""
        return list_frames(self.folder)

    def check_intervals(self) -> None:
        """Every interval lies inside the frames on disk, or one UserError naming the folder."""
        lo, hi = min(self.frames), max(self.frames)
        for iv in self.intervals:
            if iv.onset < lo or iv.offset > hi:
                where = f" (sheet row {iv.source_row})" if iv.source_row else ""
                raise UserError(f"{self.key}: interval {iv.onset}..{iv.offset}{where} outside the frames "
                                f"{lo}..{hi} in {self.folder}")


def settle(onset: int, apex: int | None, offset: int | None, where: str) -> tuple[int, int, int, bool, bool]:
    """The coded (onset, apex, offset) with the long-video quirks resolved, as the MEGC baselines read them:
    an offset of 0 (or missing) means the apex is the last frame; an apex of 0 (or missing, or outside
    onset..offset) means the midpoint onset + (offset - onset) // 2.

    Returns (onset, apex, offset, apex_estimated, offset_from_apex). `where` prefixes the error line.
    """
    offset_from_apex = not offset
    if offset_from_apex:
        if not apex:
            raise UserError(f"{where}offset and apex are both missing (onset {onset})")
        offset = apex
    if offset < onset:
        raise UserError(f"{where}offset {offset} before onset {onset}")
    estimated = not apex or not onset <= apex <= offset
    if apex and estimated:
        log.warning("%sapex %s outside onset..offset %d..%d; using the midpoint", where, apex, onset, offset)
    if estimated:
        apex = onset + (offset - onset) // 2
    return onset, apex, offset, estimated, offset_from_apex


def has_frames(folder: Path) -> bool:
    """Whether `folder` holds at least one image; stops at the first (a long video has thousands)."""
    try:
        with os.scandir(folder) as it:
            return any(e.name.lower().endswith(FRAME_SUFFIXES) and e.is_file() for e in it)
    except (FileNotFoundError, NotADirectoryError):
        return False


def require_frames(folder: Path, what: str) -> Path:
    """`folder` if it exists and holds images, else one UserError naming it and what was expected."""
    if not folder.is_dir():
        raise UserError(f"{what}: frame folder {folder} not found")
    if not has_frames(folder):
        raise UserError(f"{what}: no frames in {folder} (expected image files such as "
                        f"{', '.join('*' + s for s in FRAME_SUFFIXES[:2])})")
    return folder


def composite_of(dataset: str, emotion: str | None) -> str | None:
    return COMPOSITE_LV[dataset].get(emotion) if emotion else None


def attach(videos: dict[tuple[str, str], LongVideo], intervals: list[Interval], what: str) -> list[LongVideo]:
    """Videos in (subject, video) order with their intervals; an interval whose video has no folder is a
    UserError naming the video (the annotation and the frames disagree)."""
    for iv in intervals:
        v = videos.get((iv.subject, iv.video))
        if v is None:
            raise UserError(f"{what}: sheet row {iv.source_row} names video {iv.subject}/{iv.video}, "
                            f"which has no frame folder")
        v.intervals.append(iv)
    for v in videos.values():
        v.intervals.sort(key=lambda iv: (iv.onset, iv.offset))
    return [videos[k] for k in sorted(videos)]
