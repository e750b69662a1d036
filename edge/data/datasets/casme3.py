"""CAS(ME)^3 part A (30 fps): `cas(me)3_part_A_ME_label_JpgIndex_v2.xlsx` +
`<Subject>/<Filename>/color/<frame>.jpg`. One (Subject, Filename) video can hold several MEs (clip ids get
a counter), and some frames were dropped (the nearest frame within 2 is used, with a warning)."""

from __future__ import annotations

from pathlib import Path

from edge.data.datasets.common import (
    Sample,
    find_one,
    frame_number,
    make_sample,
    norm_label,
    read_sheet,
    split_aus,
)

COLUMNS = {"subject": ("Subject",), "filename": ("Filename",), "onset": ("Onset",), "apex": ("Apex",),
           "offset": ("Offset",), "aus": ("AU",), "emotion": ("emotion",)}


def load(root: str | Path, sheet: str | Path | None = None) -> list[Sample]:
    root = Path(root)
    sheet = Path(sheet) if sheet else find_one(root, ("cas(me)3_part_A_ME_label*.xlsx", "*/cas(me)3_part_A_ME_label*.xlsx"),
                                               "CAS(ME)^3 part A label sheet")
    frames = next((root / d for d in ("part_A", "Part_A") if (root / d).is_dir()), root)
    counts: dict[tuple[str, str], int] = {}
    out = []
    for row, r in read_sheet(sheet, COLUMNS):
        subject, video = str(r["subject"]).strip(), str(r["filename"]).strip()
        n = counts[subject, video] = counts.get((subject, video), 0) + 1
        out.append(make_sample(
            "casme3", subject, f"{video}_{n}", frames / subject / video / "color",
            frame_number(r["onset"], sheet, row, "Onset"),
            frame_number(r["apex"], sheet, row, "Apex", allow_missing=True),
            frame_number(r["offset"], sheet, row, "Offset"),
            norm_label(r["emotion"]), split_aus(r["aus"]), sheet, row, tolerance=2))
    return out
