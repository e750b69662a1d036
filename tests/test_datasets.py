"""Dataset loaders on small fixture trees written here in each dataset's official layout."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.data import datasets
from edge.data.datasets.common import list_frames
from edge.errors import UserError

openpyxl = pytest.importorskip("openpyxl")


def _frames(folder: Path, numbers, name=lambda n: f"img{n}.jpg") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    img = np.full((8, 8), 128, np.uint8)
    for n in numbers:
        assert cv2.imwrite(str(folder / name(n)), img)


def _xlsx(path: Path, rows: list[list], preamble: int = 0) -> None:
    wb = openpyxl.Workbook()
    ws = wb.active
    for i in range(preamble):
        ws.append([f"SAMM preamble line {i}"] if i % 3 == 0 else [])
    for r in rows:
        ws.append(r)
    wb.save(path)


CASME2_HEADER = ["Subject", "Filename", "Unnamed: 2", "OnsetFrame", "ApexFrame", "OffsetFrame", "Unnamed: 6",
                 "Action Units", "Estimated Emotion"]


def casme2_tree(root: Path, rows=None) -> Path:
    rows = rows or [
        [1, "EP02_01f", None, 46, 59, 86, None, "12", "happiness"],
        [1, "EP03_02", None, 8, "/", 12, None, "L4+R10", "repression"],
        [2, "EP09_01", None, 100, 104, 110, None, "4", "others"],
        [9, "EP02_02f", None, 5, 6, 9, None, "4", None],  # no label (like sub09/EP02_02f): skipped
    ]
    root.mkdir(parents=True, exist_ok=True)
    _xlsx(root / "CASME2-coding-20190701.xlsx", [CASME2_HEADER, *rows])
    _frames(root / "CASME2-RAW/sub01/EP02_01f", range(46, 87))
    _frames(root / "CASME2-RAW/sub01/EP03_02", range(8, 13))
    _frames(root / "CASME2-RAW/sub02/EP09_01", range(98, 112))
    return root


def test_casme2(tmp_path):
    s = datasets.load("casme2", casme2_tree(tmp_path))
    assert [(x.subject, x.clip) for x in s] == [("sub01", "EP02_01f"), ("sub01", "EP03_02"), ("sub02", "EP09_01")]
    a, b, c = s
    assert (a.onset, a.apex, a.offset, a.emotion, a.composite, a.aus) == (46, 59, 86, "happiness", "positive", ["12"])
    assert a.apex_path.name == "img59.jpg" and a.offset_path.name == "img86.jpg"
    assert b.apex_estimated and b.apex == 10 and b.composite == "negative" and b.aus == ["L4", "R10"]
    assert c.composite is None and c.emotion == "others" and c.key == "casme2/sub02"


def test_casme2_errors(tmp_path):
    with pytest.raises(UserError, match="CASME II coding sheet"):
        datasets.load("casme2", tmp_path)
    bad = casme2_tree(tmp_path / "a", [[1, "EP02_01f", None, "abc", 59, 86, None, "12", "happiness"]])
    with pytest.raises(UserError, match=r"row 2: OnsetFrame 'abc'"):
        datasets.load("casme2", bad)
    missing_col = tmp_path / "b"
    casme2_tree(missing_col)
    _xlsx(missing_col / "CASME2-coding-20190701.xlsx",
          [[h for h in CASME2_HEADER if h != "ApexFrame"], [1, "EP02_01f", None, 46, 86, None, "12", "happiness"]])
    with pytest.raises(UserError, match="ApexFrame"):
        datasets.load("casme2", missing_col)
    gone = casme2_tree(tmp_path / "c", [[1, "EP99_01", None, 1, 2, 3, None, "12", "happiness"]])
    with pytest.raises(UserError, match="EP99_01"):
        datasets.load("casme2", gone)
    late = casme2_tree(tmp_path / "d", [[1, "EP02_01f", None, 46, 59, 200, None, "12", "happiness"]])
    with pytest.raises(UserError, match="offset frame 200 not found"):
        datasets.load("casme2", late)
    backwards = casme2_tree(tmp_path / "e", [[1, "EP02_01f", None, 80, 59, 50, None, "12", "happiness"]])
    with pytest.raises(UserError, match="row 2: offset 50 before onset 80"):
        datasets.load("casme2", backwards)


SAMM_HEADER = ["Subject", "Filename", "Inducement Code", "Onset Frame", "Apex Frame", "Offset Frame", "Duration",
               "Type", "Action Units", "Estimated Emotion", "Objective Classes", "Notes"]


def test_samm(tmp_path):
    _xlsx(tmp_path / "SAMM_Micro_FACS_Codes_v2.xlsx", [
        SAMM_HEADER,
        [6, "006_1_2", 1, 5562, 5588, 5605, 44, "Micro - 1/2", "4+7", "Anger", 1, None],
        [11, "011_2_3", 2, 98, -1, 140, 43, "Micro - 1/2", "12 or 14", "Other", 7, None],
        ["013", "013_1_8", 1, 995, 1010, 1020, 26, "Micro - 1/2", "R14", "Contempt", 3, None],
    ], preamble=13)
    _frames(tmp_path / "SAMM/006/006_1_2", range(5560, 5610), lambda n: f"006_{n:05d}.jpg")
    _frames(tmp_path / "SAMM/011/011_2_3", range(95, 141), lambda n: f"011_{n:04d}.jpg")
    _frames(tmp_path / "SAMM/013/013_1_8", range(990, 1021), lambda n: f"013_{n:03d}.jpg")  # odd width
    s = datasets.load("samm", tmp_path)
    assert [x.subject for x in s] == ["006", "011", "013"]
    assert s[0].composite == "negative" and s[0].apex_path.name == "006_05588.jpg" and s[0].source_row == 15
    assert s[1].apex_estimated and s[1].apex == 119 and s[1].composite is None and s[1].aus == ["12", "14"]
    assert s[2].emotion == "contempt" and s[2].composite == "negative" and s[2].onset_path.name == "013_995.jpg"


def test_samm_header_missing(tmp_path):
    _xlsx(tmp_path / "SAMM_Micro_FACS_Codes_v2.xlsx", [["nothing", "here"], [1, 2]], preamble=13)
    (tmp_path / "SAMM").mkdir()
    with pytest.raises(UserError, match="no header row"):
        datasets.load("samm", tmp_path)


def test_smic_hs(tmp_path):
    _frames(tmp_path / "HS/s1/micro/negative/s1_ne_01", range(123501, 123521), lambda n: f"image{n:06d}.bmp")
    _frames(tmp_path / "HS/s12/micro/surprise/s12_sur_02", range(9, 12), lambda n: f"image{n}.jpg")
    _frames(tmp_path / "HS/s2/micro/positive/s2_po_01", range(1, 6), lambda n: f"{n}.jpg")
    s = datasets.load("smic", tmp_path)
    assert [(x.subject, x.emotion) for x in s] == [("s01", "negative"), ("s02", "positive"), ("s12", "surprise")]
    a = s[0]
    assert (a.onset, a.apex, a.offset) == (123501, 123501 + 19 // 2, 123520) and a.apex_estimated
    assert s[2].onset_path.name == "image9.jpg" and s[2].offset_path.name == "image11.jpg"  # numeric order
    assert all(x.composite == x.emotion for x in s)
    _frames(tmp_path / "HS/s3/micro/happy/x", [1])
    with pytest.raises(UserError, match="unknown SMIC label"):
        datasets.load("smic", tmp_path)


def test_casme3_part_a(tmp_path):
    _xlsx(tmp_path / "cas(me)3_part_A_ME_label_JpgIndex_v2.xlsx", [
        ["Subject", "Filename", "Onset", "Apex", "Offset", "AU", "Objective class", "emotion"],
        ["spNO.1", "a", 120, 126, 140, "R4", "I", "disgust"],
        ["spNO.1", "a", 300, 305, 312, "12", "II", "happy"],
        ["spNO.2", "m", 10, 14, 20, "1+2", "III", "Others"],
    ])
    _frames(tmp_path / "part_A/spNO.1/a/color", [*range(118, 126), *range(127, 142), *range(298, 315)],
            lambda n: f"{n}.jpg")  # frame 126 was dropped
    _frames(tmp_path / "part_A/spNO.2/m/color", range(10, 21), lambda n: f"{n}.jpg")
    s = datasets.load("casme3", tmp_path)
    assert [x.clip for x in s] == ["a_1", "a_2", "m_1"]
    assert s[0].apex_path.name in ("125.jpg", "127.jpg") and s[0].composite == "negative"
    assert s[1].composite == "positive" and s[2].emotion == "others" and s[2].composite is None


def test_mmew_both_layouts(tmp_path):
    _xlsx(tmp_path / "MMEW_Micro_Exp.xlsx", [
        ["Subject", "Filename", "OnsetFrame", "ApexFrame", "OffsetFrame", "Action Units", "Estimated Emotion",
         "remarks"],
        ["S01", "S01-01-001", 1, 12, 30, "AU12", "happiness", None],
        ["S03", "S03-01-002", 1, 5, 9, "AU1+AU2", "surprise", None],
        ["S03", "S03-01-003", 1, 5, "x9", "AU1+AU2", "surprise", None],
    ])
    _frames(tmp_path / "Micro_Expression/happiness/S01-01-001", range(1, 31), lambda n: f"{n}.jpg")
    _frames(tmp_path / "S03/surprise/S03-01-002", range(1, 10), lambda n: f"{n}.jpg")
    _frames(tmp_path / "S03/surprise/S03-01-003", range(1, 10), lambda n: f"{n}.jpg")
    with pytest.raises(UserError, match=r"row 4: OffsetFrame 'x9'"):
        datasets.load("mmew", tmp_path)
    _xlsx(tmp_path / "MMEW_Micro_Exp.xlsx", [
        ["Subject", "Filename", "OnsetFrame", "ApexFrame", "OffsetFrame", "Action Units", "Estimated Emotion"],
        ["S01", "S01-01-001", 1, 12, 30, "AU12", "happiness"],
        ["S03", "S03-01-002", 1, 5, 9, "AU1+AU2", "surprise"],
    ])
    s = datasets.load("mmew", tmp_path)
    assert [x.composite for x in s] == ["positive", "surprise"] and s[1].aus == ["1", "2"]


def test_list_frames_numeric_order(tmp_path):
    _frames(tmp_path, [9, 10, 100, 2], lambda n: f"reg_img{n}.jpg")
    assert list(list_frames(tmp_path)) == [2, 9, 10, 100]


def test_unknown_dataset():
    with pytest.raises(UserError, match="unknown dataset"):
        datasets.load("fer2013", "/nowhere")
