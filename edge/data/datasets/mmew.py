"""MMEW (90 fps): `MMEW_Micro_Exp.xlsx` + frames `<n>.jpg` in `Micro_Expression/<emotion>/<Filename>/`
(MEB/HTNet copies) or `<Subject>/<emotion>/<Filename>/` (the official page's layout)."""

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
from edge.errors import UserError


def load(root: str | Path, sheet: str | Path | None = None) -> list[Sample]:
    root = Path(root)
    sheet = Path(sheet) if sheet else find_one(root, ("MMEW_Micro_Exp*.xlsx", "*/MMEW_Micro_Exp*.xlsx"), "MMEW sheet")
    out = []
    for row, r in read_sheet(sheet, FACS_COLUMNS):
        subject, clip, emotion = str(r["subject"]).strip(), str(r["filename"]).strip(), norm_label(r["emotion"])
        candidates = [root / "Micro_Expression" / emotion / clip, root / subject / emotion / clip]
        folder = next((c for c in candidates if c.is_dir()), None)
        if folder is None:
            raise UserError(f"{sheet.name} row {row}: frames of {clip} not found (looked in "
                            f"{', '.join(str(c) for c in candidates)})")
        out.append(make_sample(
            "mmew", subject, clip, folder,
            frame_number(r["onset"], sheet, row, "OnsetFrame"),
            frame_number(r["apex"], sheet, row, "ApexFrame", allow_missing=True),
            frame_number(r["offset"], sheet, row, "OffsetFrame"),
            emotion, split_aus(r["aus"]), sheet, row))
    return out
