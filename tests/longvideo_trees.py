"""Fake long-video dataset trees in each official layout (edge/data/longvideo), for the tests.

Each `*_tree(root, ...)` writes the annotation workbook(s) through openpyxl with the official column layout
and one frame folder per video, and returns the root. Frames are small grey JPEGs unless `image(key, n)`
gives the picture for video `key` ("<subject>/<video>") and frame number n (synthetic faces, for eval).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np

Image = Callable[[str, int], np.ndarray]


def _grey(key: str, n: int) -> np.ndarray:
    return np.full((8, 8), 100 + n % 50, np.uint8)


def write_frames(folder: Path, numbers: Sequence[int], name: Callable[[int], str], key: str = "",
                 image: Image | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for n in numbers:
        assert cv2.imwrite(str(folder / name(n)), (image or _grey)(key, n))


def write_xlsx(path: Path, sheets: dict[str, list[list]]) -> Path:
    import openpyxl

    wb = openpyxl.Workbook()
    wb.remove(wb.active)
    for title, rows in sheets.items():
        ws = wb.create_sheet(title)
        for r in rows:
            ws.append(r)
    path.parent.mkdir(parents=True, exist_ok=True)
    wb.save(path)
    return path


# ----------------------------------------------------------------------------------------- CAS(ME)^2

# sheet 1 (CASFEcode_final, no header): subject number, expression, onset, apex, offset, AU, emotion, type,
# self-report. Quirks on purpose: an offset of 0 (-> apex), an apex of 0 (-> midpoint).
CASME2_ROWS = [
    [1, "disgust1_1", 10, 14, 18, "4+9", "negative", "micro-expression", "disgust"],
    [1, "disgust1_2", 30, 38, 0, "L12", "positive", "macro-expression", "happy"],
    [2, "anger1_1", 5, 0, 15, "4", "others", "micro-expression", "anger"],
]
CASME2_SUBJECTS = [[1, "s15", 1], [2, "s16", 2]]          # naming rule1: -, folder, subject number
CASME2_VIDEOS = [["0101", "disgust1"], ["0401", "anger1"]]  # naming rule2: code, stimulus name
CASME2_FOLDERS = {"s15": ["15_0101disgustingteeth", "15_0401girlcrashing"], "s16": ["16_0401girlcrashing"]}


def casme2_lv_tree(root: Path, rows: list[list] | None = None, frames: int = 40, image: Image | None = None,
                   folders: dict[str, list[str]] | None = None, sheets: int = 3) -> Path:
    named = {"CASFEcode_final": CASME2_ROWS if rows is None else rows, "naming rule1": CASME2_SUBJECTS,
             "naming rule2": CASME2_VIDEOS}
    write_xlsx(root / "CAS(ME)^2code_final.xlsx", dict(list(named.items())[:sheets]))
    for subject, videos in (CASME2_FOLDERS if folders is None else folders).items():
        for v in videos:
            write_frames(root / "rawpic" / subject / v, range(1, frames + 1),
                         lambda n: f"img{n:03d}.jpg", f"{subject}/{v.split('_')[1][:4]}", image)
    return root


# ---------------------------------------------------------------------------------- SAMM Long Videos

SAMM_LV_HEADER = ["Subject", "Filename", "Inducement Code", "Onset", "Apex", "Offset", "Duration", "Type",
                  "Action Units", "Notes"]
SAMM_LV_ROWS = [
    [6, "006_1_2", 1, 20, 30, 60, 41, "Micro - 1/2", "4+7", None],
    [6, "006_1_3", 1, 100, 130, 0, 0, "Macro", "12", "offset not coded"],
    [6, "006_1_4", 1, 0, 50, 400, 401, "Macro", "12", "extremely long"],
    [7, "007_2_1", 2, 40.4, -1, 79.6, 40, "Micro - 1/2", "R14", None],
]
SAMM_FACS_HEADER = ["Subject", "Filename", "Inducement Code", "Onset Frame", "Apex Frame", "Offset Frame", "Duration",
                    "Type", "Action Units", "Estimated Emotion", "Objective Classes", "Notes"]
SAMM_FACS_ROWS = [
    [6, "006_1_2", 1, 20, 30, 60, 41, "Micro - 1/2", "4+7", "Anger", 1, None],
    [7, "007_2_1", 2, 40, 60, 80, 40, "Micro - 1/2", "R14", "Contempt", 3, None],
]
SAMM_LV_VIDEOS = ("006_1", "007_2", "008_1")


def samm_lv_tree(root: Path, rows: list[list] | None = None, frames: int = 200, image: Image | None = None,
                 videos: Sequence[str] = SAMM_LV_VIDEOS, emotions: bool = True, preamble: int = 9) -> Path:
    # The release's preamble: title and notes lines (some blank), then the header on row 10.
    lines = [[f"SAMM Long Videos release note {i}"] if i % 3 == 0 else [] for i in range(preamble)]
    write_xlsx(root / "SAMM_LongVideos_V2_Release.xlsx",
               {"FACS_Movement_Only": [*lines, SAMM_LV_HEADER, *(SAMM_LV_ROWS if rows is None else rows)]})
    if emotions:
        facs = [[f"SAMM note {i}"] for i in range(13)]
        write_xlsx(root / "SAMM_Micro_FACS_Codes_v2.xlsx", {"FACS": [*facs, SAMM_FACS_HEADER, *SAMM_FACS_ROWS]})
    for v in videos:
        write_frames(root / "SAMM_longvideos" / v, range(1, frames + 1), lambda n, v=v: f"{v}_{n:04d}.jpg",
                     f"{v.split('_')[0]}/{v}", image)
    return root


# ------------------------------------------------------------------------------------ CAS(ME)^3 part A

CASME3_ME_HEADER = ["Subject", "Filename", "Onset", "Apex", "Offset", "AU", "Objective class", "emotion"]
CASME3_ME_ROWS = [
    ["spNO.1", "a", 10, 13, 17, "4+7", "III", "disgust"],
    ["spNO.1", "a", 40, 44, 48, "12", "VI", "happy"],
    ["spNO.2", "b", 20, 0, 26, "1+2", "VII", "surprise"],
]
CASME3_MAE_HEADER = ["sub", "seq", "onset", "apex", "offset", "emotion"]
CASME3_MAE_ROWS = [["spNO.1", "b", 5, 20, 45, "happy"]]
CASME3_VIDEOS = {"spNO.1": ("a", "b"), "spNO.2": ("b",)}


def casme3_lv_tree(root: Path, me_rows: list[list] | None = None, mae: bool = True, frames: int = 60,
                   image: Image | None = None, videos: dict[str, Sequence[str]] | None = None,
                   dropped: Sequence[int] = (33,)) -> Path:
    write_xlsx(root / "cas(me)3_part_A_ME_label_JpgIndex_v2.xlsx",
               {"label": [CASME3_ME_HEADER, *(CASME3_ME_ROWS if me_rows is None else me_rows)]})
    if mae:
        write_xlsx(root / "cas(me)3_part_A_MaE_label_JpgIndex_v2_emotion.xlsx",
                   {"Sheet1": [CASME3_MAE_HEADER, *CASME3_MAE_ROWS]})
    for subject, letters in (CASME3_VIDEOS if videos is None else videos).items():
        for letter in letters:
            # Unpadded names (8.jpg); a dropped frame or two, as in the release.
            write_frames(root / "part_A" / subject / letter / "color",
                         [n for n in range(frames) if n not in dropped], lambda n: f"{n}.jpg",
                         f"{subject}/{letter}", image)
    return root
