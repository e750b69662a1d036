"""SAMM (200 fps, grey): `SAMM_Micro_FACS_Codes_v2.xlsx` (preamble rows; the header is found by name)
+ `SAMM/<SSS>/<Filename>/<SSS>_<frame>.jpg` with 3-5 digit frame numbers."""

from __future__ import annotations

from pathlib import Path

from edge.data.datasets.common import (
    FACS_COLUMNS,
    Sample,
    find_one,
    frame_number,
    make_sample,
    norm_label,
    read_sheet,
    split_aus,
)


def _subject(cell: object) -> str:
    s = str(cell).strip()
    return f"{int(float(s)):03d}" if s.replace(".", "", 1).isdigit() else s


def load(root: str | Path, sheet: str | Path | None = None) -> list[Sample]:
    root = Path(root)
    sheet = Path(sheet) if sheet else find_one(root, ("SAMM_Micro_FACS_Codes*.xlsx", "*/SAMM_Micro_FACS_Codes*.xlsx"),
                                               "SAMM FACS codes sheet")
    frames = find_one(root, ("SAMM", "SAMM_CROP"), "SAMM frame folder")
    out = []
    for row, r in read_sheet(sheet, FACS_COLUMNS):
        subject, clip = _subject(r["subject"]), str(r["filename"]).strip()
        out.append(make_sample(
            "samm", subject, clip, frames / subject / clip,
            frame_number(r["onset"], sheet, row, "Onset Frame"),
            frame_number(r["apex"], sheet, row, "Apex Frame", allow_missing=True),
            frame_number(r["offset"], sheet, row, "Offset Frame"),
            norm_label(r["emotion"]), split_aus(r["aus"]), sheet, row))
    return out
