"""CAS(ME)^2 long videos (30 fps): `CAS(ME)^2code_final.xlsx` + `rawpic/s<NN>/<NN>_<code><name>/img<idx>.jpg`.

The workbook has three sheets, all without a header row:
- sheet 1 (CASFEcode_final), one row per expression: subject number, expression name (`anger1_1`: the
  stimulus name, `_`, a counter), onset, apex, offset, AUs, emotion (negative / positive / surprise /
  others), type (`micro-expression` / `macro-expression`), self-report;
- sheet 2 (naming rule1): column 2 the subject folder (`s15`), column 3 the subject number of sheet 1;
- sheet 3 (naming rule2): column 1 the four-digit video code (`0401`), column 2 the stimulus name (`anger1`).
A video folder is `<NN>_<code><name>`, found by its code; frames are `img<idx>.jpg` from 1, with at least
three digits (`img001.jpg`, `img1024.jpg`). Every video folder is a video, annotated or not.
"""

from __future__ import annotations

from pathlib import Path

from edge.data.datasets.common import find_one, frame_number, norm_label, read_sheet, split_aus
from edge.data.longvideo.common import Interval, LongVideo, attach, composite_of, require_frames, settle
from edge.errors import UserError

DATASET = "casme2_lv"
COLUMNS = {"subject": ("0",), "name": ("1",), "onset": ("2",), "apex": ("3",), "offset": ("4",),
           "aus": ("5",), "emotion": ("6",), "type": ("7",)}
KIND = {"micro-expression": "micro", "macro-expression": "macro"}


def _int(cell: object) -> int | None:
    try:
        return int(float(str(cell).strip()))
    except ValueError:
        return None


def _code(cell: object) -> str:
    """A video code as the folder writes it: `401` (a number cell) and `'0401'` are both `0401`."""
    if isinstance(cell, (int, float)):
        return f"{int(cell):04d}"
    return str(cell).strip()


def _video_folders(rawpic: Path) -> dict[tuple[str, str], LongVideo]:
    videos: dict[tuple[str, str], LongVideo] = {}
    for subject_dir in sorted(p for p in rawpic.iterdir() if p.is_dir()):
        for d in sorted(p for p in subject_dir.iterdir() if p.is_dir()):
            _, _, rest = d.name.partition("_")
            code = rest[:4]
            if len(code) != 4 or not code.isdigit():
                raise UserError(f"video folder {d} is not named <NN>_<4-digit code><name> (like 15_0101disgustingteeth)")
            require_frames(d, f"{DATASET} video {subject_dir.name}/{code}")
            videos[subject_dir.name, code] = LongVideo(DATASET, subject_dir.name, code, d)
    if not videos:
        raise UserError(f"no video folders under {rawpic} (expected s<NN>/<NN>_<code><name>/img<idx>.jpg)")
    return videos


def load(root: str | Path, sheet: str | Path | None = None) -> list[LongVideo]:
    """Every long video under `root` with its annotated intervals."""
    root = Path(root)
    sheet = Path(sheet) if sheet else find_one(root, ("CAS(ME)^2code_final*.xlsx", "*code_final*.xlsx",
                                                      "*/CAS(ME)^2code_final*.xlsx"), "CAS(ME)^2 code sheet")
    rawpic = root / "rawpic"
    if not rawpic.is_dir():
        raise UserError(f"CAS(ME)^2 frame folder {rawpic} not found (expected rawpic/s<NN>/<NN>_<code><name>/)")
    videos = _video_folders(rawpic)
    folders = {_int(r["number"]): str(r["folder"]).strip()
               for _, r in read_sheet(sheet, {"folder": ("1",), "number": ("2",)}, header=False, sheet=1)}
    codes = {str(r["name"]).strip().lower(): _code(r["code"])
             for _, r in read_sheet(sheet, {"code": ("0",), "name": ("1",)}, header=False, sheet=2)}
    intervals = []
    for row, r in read_sheet(sheet, COLUMNS, header=False, sheet=0):
        where = f"{sheet.name} row {row}: "
        subject = folders.get(_int(r["subject"]))
        if subject is None:
            raise UserError(f"{where}subject {r['subject']!r} is not in the naming-rule sheet (sheet 2)")
        stimulus = str(r["name"]).strip().split("_")[0].lower()
        if stimulus not in codes:
            raise UserError(f"{where}expression {r['name']!r}: stimulus {stimulus!r} is not in the naming-rule "
                            f"sheet (sheet 3)")
        kind = KIND.get(str(r["type"]).strip().lower())
        if kind is None:
            raise UserError(f"{where}type {r['type']!r} is neither micro-expression nor macro-expression")
        onset, apex, offset, estimated, from_apex = settle(
            frame_number(r["onset"], sheet, row, "onset"),
            frame_number(r["apex"], sheet, row, "apex", allow_missing=True),
            frame_number(r["offset"], sheet, row, "offset", allow_missing=True), where)
        emotion = norm_label(r["emotion"]) if r["emotion"] not in (None, "") else None
        intervals.append(Interval(DATASET, subject, codes[stimulus], onset, apex, offset, kind, emotion,
                                  composite_of(DATASET, emotion), tuple(split_aus(r["aus"])), estimated,
                                  from_apex, row))
    return attach(videos, intervals, sheet.name)
