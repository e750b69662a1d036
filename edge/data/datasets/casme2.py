"""CASME II (200 fps): `CASME2-coding-*.xlsx` + `CASME2-RAW/subNN/<Filename>/imgN.jpg`
(or `CASME2_RAW_selected/`, or the cropped release `Cropped/subNN/<Filename>/reg_imgN.jpg`)."""

from __future__ import annotations

import logging
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
from edge.errors import UserError

log = logging.getLogger(__name__)


def load(root: str | Path, sheet: str | Path | None = None) -> list[Sample]:
    root = Path(root)
    sheet = Path(sheet) if sheet else find_one(root, ("CASME2-coding*.xlsx", "*/CASME2-coding*.xlsx"), "CASME II coding sheet")
    frames = find_one(root, ("CASME2-RAW", "CASME2_RAW_selected", "Cropped"), "CASME II frame folder")
    out = []
    for row, r in read_sheet(sheet, FACS_COLUMNS):
        subj = r["subject"]
        try:
            subject = f"sub{int(str(subj).strip().lower().removeprefix('sub')):02d}"
        except ValueError:
            raise UserError(f"{sheet.name} row {row}: Subject {subj!r} is not a subject number") from None
        if r["emotion"] is None or str(r["emotion"]).strip() == "":
            log.warning("%s row %d (%s/%s): no label; skipped", sheet.name, row, subject, r["filename"])
            continue
        clip = str(r["filename"]).strip()
        out.append(make_sample(
            "casme2", subject, clip, frames / subject / clip,
            frame_number(r["onset"], sheet, row, "OnsetFrame"),
            frame_number(r["apex"], sheet, row, "ApexFrame", allow_missing=True),
            frame_number(r["offset"], sheet, row, "OffsetFrame"),
            norm_label(r["emotion"]), split_aus(r["aus"]), sheet, row))
    return out
