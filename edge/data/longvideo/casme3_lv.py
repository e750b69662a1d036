"""CAS(ME)^3 part A long videos (30 fps): `[part_A/]spNO.<n>/<a-m>/color/<idx>.jpg` with two label sheets,
`cas(me)3_part_A_ME_label_JpgIndex_v2*.xlsx` (micro: Subject, Filename, Onset, Apex, Offset, AU, emotion)
and `cas(me)3_part_A_MaE_label_JpgIndex_v2*.xlsx` (macro: sub, seq, onset, apex, offset, emotion).

Each `<subject>/<letter>` folder is one whole recording (letter = stimulus), and the JpgIndex sheets give
frame numbers as the file names count them, so no offset is applied. Frame names are unpadded
(`8.jpg`); some frames were dropped in the release, which only thins the sequence. Every recording folder
is a video, annotated or not.
"""

from __future__ import annotations

from pathlib import Path

from edge.data.datasets.common import find_one, frame_number, norm_label, read_sheet, split_aus
from edge.data.longvideo.common import Interval, LongVideo, attach, composite_of, require_frames, settle
from edge.errors import UserError

DATASET = "casme3_lv"
COLUMNS = {"subject": ("Subject", "sub"), "filename": ("Filename", "seq"), "onset": ("Onset",), "apex": ("Apex",),
           "offset": ("Offset",), "aus": ("AU", "Action Units"), "emotion": ("emotion", "Estimated Emotion")}
SHEETS = {"micro": ("cas(me)3_part_A_ME_label*.xlsx", "*/cas(me)3_part_A_ME_label*.xlsx"),
          "macro": ("cas(me)3_part_A_MaE_label*.xlsx", "*/cas(me)3_part_A_MaE_label*.xlsx")}


def _subject(cell: object) -> str:
    """`spNO.1`, as the folders are named; a bare number cell (1) is written the same way."""
    if isinstance(cell, (int, float)):
        return f"spNO.{int(cell)}"
    return str(cell).strip()


def _video_folders(frames: Path) -> dict[tuple[str, str], LongVideo]:
    videos: dict[tuple[str, str], LongVideo] = {}
    for subject_dir in sorted(p for p in frames.iterdir() if p.is_dir() and p.name.lower().startswith("spno")):
        for d in sorted(p for p in subject_dir.iterdir() if p.is_dir()):
            color = require_frames(d / "color", f"{DATASET} video {subject_dir.name}/{d.name}")
            videos[subject_dir.name, d.name] = LongVideo(DATASET, subject_dir.name, d.name, color)
    if not videos:
        raise UserError(f"no recordings under {frames} (expected spNO.<n>/<a-m>/color/<idx>.jpg)")
    return videos


def _intervals(sheet: Path, kind: str) -> list[Interval]:
    out = []
    for row, r in read_sheet(sheet, COLUMNS, optional=("aus",)):
        where = f"{sheet.name} row {row}: "
        onset, apex, offset, estimated, from_apex = settle(
            frame_number(r["onset"], sheet, row, "Onset"),
            frame_number(r["apex"], sheet, row, "Apex", allow_missing=True),
            frame_number(r["offset"], sheet, row, "Offset", allow_missing=True), where)
        emotion = norm_label(r["emotion"]) if r["emotion"] not in (None, "") else None
        out.append(Interval(DATASET, _subject(r["subject"]), str(r["filename"]).strip(), onset, apex, offset, kind,
                            emotion, composite_of(DATASET, emotion), tuple(split_aus(r["aus"])), estimated,
                            from_apex, row))
    return out


def load(root: str | Path, micro_sheet: str | Path | None = None,
         macro_sheet: str | Path | None = None) -> list[LongVideo]:
    """Every part A recording under `root` with its micro- and macro-expression intervals."""
    root = Path(root)
    sheets = {kind: Path(given) if given else find_one(root, SHEETS[kind], f"CAS(ME)^3 part A {kind} label sheet")
              for kind, given in (("micro", micro_sheet), ("macro", macro_sheet))}
    frames = next((root / d for d in ("part_A", "Part_A") if (root / d).is_dir()), root)
    videos = _video_folders(frames)
    intervals = [iv for kind, sheet in sheets.items() for iv in _intervals(sheet, kind)]
    return attach(videos, intervals, "CAS(ME)^3 part A labels")
