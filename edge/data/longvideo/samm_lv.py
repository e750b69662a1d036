"""SAMM Long Videos (200 fps, grey): `SAMM_LongVideos_V*_Release.xlsx` + `SAMM_longvideos/<SSS_n>/<SSS_n>_<frame>.jpg`.

The sheet opens with preamble rows (ten in the releases the MEGC baselines read); the header row is found by
its names: Subject, Filename, Inducement Code, Onset, Apex, Offset, Duration, Type, Action Units, Notes.
Filename `006_1_2` is expression 2 of video `006_1` of subject `006`; Type is `Micro - 1/2` or `Macro`.
Frame numbers count from 1 with four digits (`006_1_0001.jpg`; more digits past 9999).

The long-video sheet codes no emotion. The micro-expressions are the SAMM short clips, under the same
Filename, so their emotion comes from `SAMM_Micro_FACS_Codes*.xlsx` when it lies under the root (or is
given); without it, and for every macro-expression, emotion is None.

Quirks: an offset of 0 means the apex ends it; a macro-expression with onset 0 (the baselines call these
"extremely long" and leave them out) is skipped with a warning; a frame number written as a fraction is
rounded half up, as the MEGC2020 baseline reads it.
"""

from __future__ import annotations

import logging
from pathlib import Path

from edge.data.datasets.common import FACS_COLUMNS, find_one, frame_number, norm_label, read_sheet, split_aus
from edge.data.longvideo.common import Interval, LongVideo, attach, composite_of, require_frames, settle
from edge.errors import UserError

log = logging.getLogger(__name__)

DATASET = "samm_lv"
COLUMNS = {"subject": ("Subject",), "filename": ("Filename",), "onset": ("Onset", "Onset Frame"),
           "apex": ("Apex", "Apex Frame"), "offset": ("Offset", "Offset Frame"), "type": ("Type",),
           "aus": ("Action Units",)}


def _frame(cell: object) -> object:
    return int(cell + 0.5) if isinstance(cell, float) else cell


def _emotions(sheet: Path | None) -> dict[str, str]:
    """{Filename: native emotion} of the SAMM short clips (the micro-expressions of the long videos)."""
    if sheet is None:
        return {}
    return {str(r["filename"]).strip(): norm_label(r["emotion"])
            for _, r in read_sheet(sheet, FACS_COLUMNS) if r["emotion"] not in (None, "")}


def _video_folders(frames: Path) -> dict[tuple[str, str], LongVideo]:
    videos: dict[tuple[str, str], LongVideo] = {}
    for d in sorted(p for p in frames.iterdir() if p.is_dir()):
        subject = d.name.split("_")[0]
        require_frames(d, f"{DATASET} video {d.name}")
        videos[subject, d.name] = LongVideo(DATASET, subject, d.name, d)
    if not videos:
        raise UserError(f"no video folders under {frames} (expected <SSS_n>/<SSS_n>_<frame>.jpg)")
    return videos


def load(root: str | Path, sheet: str | Path | None = None, emotions: str | Path | None = None) -> list[LongVideo]:
    """Every long video under `root` with its annotated intervals (emotions from the short-clip sheet)."""
    root = Path(root)
    sheet = Path(sheet) if sheet else find_one(root, ("SAMM_LongVideos_V*_Release*.xlsx", "SAMM_LongVideos*.xlsx",
                                                      "*/SAMM_LongVideos_V*_Release*.xlsx"), "SAMM Long Videos sheet")
    frames = root / "SAMM_longvideos"
    if not frames.is_dir():
        raise UserError(f"SAMM Long Videos frame folder {frames} not found (expected SAMM_longvideos/<SSS_n>/)")
    if emotions is None:
        found = sorted(root.glob("*Micro_FACS_Codes*.xlsx")) + sorted(root.glob("*/*Micro_FACS_Codes*.xlsx"))
        emotions = found[0] if found else None
        if emotions is None:
            log.warning("no SAMM_Micro_FACS_Codes*.xlsx under %s: SAMM-LV intervals carry no emotion", root)
    emotion_of = _emotions(Path(emotions) if emotions else None)
    videos = _video_folders(frames)
    intervals, skipped = [], 0
    for row, r in read_sheet(sheet, COLUMNS):
        where = f"{sheet.name} row {row}: "
        name = str(r["filename"]).strip()
        parts = name.split("_")
        if len(parts) < 3:
            raise UserError(f"{where}Filename {name!r} is not <subject>_<video>_<n> (like 006_1_2)")
        kind_cell = str(r["type"]).strip().lower()
        kind = "micro" if kind_cell.startswith("micro") else "macro" if kind_cell.startswith("macro") else None
        if kind is None:
            raise UserError(f"{where}Type {r['type']!r} is neither Micro nor Macro")
        onset = frame_number(_frame(r["onset"]), sheet, row, "Onset")
        if onset == 0 and kind == "macro":
            skipped += 1
            continue
        onset, apex, offset, estimated, from_apex = settle(
            onset, frame_number(_frame(r["apex"]), sheet, row, "Apex", allow_missing=True),
            frame_number(_frame(r["offset"]), sheet, row, "Offset", allow_missing=True), where)
        emotion = emotion_of.get(name) if kind == "micro" else None
        intervals.append(Interval(DATASET, parts[0], f"{parts[0]}_{parts[1]}", onset, apex, offset, kind, emotion,
                                  composite_of(DATASET, emotion), tuple(split_aus(r["aus"])), estimated,
                                  from_apex, row))
    if skipped:
        log.warning("%s: %d macro-expression(s) with onset 0 left out (as the MEGC baselines do)", sheet.name, skipped)
    return attach(videos, intervals, sheet.name)
