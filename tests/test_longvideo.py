"""Long-video loaders on fake trees in each official layout (tests/longvideo_trees.py): what they read, and
the one line they refuse a broken tree with."""

from __future__ import annotations

import shutil

import pytest

from edge.data import longvideo
from edge.errors import UserError
from tests.longvideo_trees import (
    CASME2_ROWS,
    SAMM_LV_ROWS,
    casme2_lv_tree,
    casme3_lv_tree,
    samm_lv_tree,
    write_frames,
    write_xlsx,
)

pytest.importorskip("openpyxl")


def _by_key(videos):
    return {v.key: v for v in videos}


def test_casme2_lv(tmp_path):
    videos = longvideo.load("casme2_lv", casme2_lv_tree(tmp_path))
    assert [v.key for v in videos] == ["casme2_lv/s15/0101", "casme2_lv/s15/0401", "casme2_lv/s16/0401"]
    a, unannotated, b = videos
    assert a.fps == 30.0 and a.folder.name == "15_0101disgustingteeth" and unannotated.intervals == []
    micro, macro = a.intervals
    assert (micro.onset, micro.apex, micro.offset, micro.kind, micro.emotion, micro.composite, micro.aus) == \
        (10, 14, 18, "micro", "negative", "negative", ("4", "9"))
    # offset 0 -> the apex ends it; apex 0 -> the midpoint
    assert (macro.offset, macro.offset_from_apex, macro.kind, macro.composite) == (38, True, "macro", "positive")
    (c,) = b.intervals
    assert (c.apex, c.apex_estimated, c.composite, c.source_row) == (10, True, None, 3)
    assert a.frames[1].name == "img001.jpg" and len(a.frames) == 40
    a.check_intervals()


def test_casme2_lv_refuses_broken_trees(tmp_path):
    with pytest.raises(UserError, match="dataset folder .*nowhere not found"):
        longvideo.load("casme2_lv", tmp_path / "nowhere")
    with pytest.raises(UserError, match="unknown long-video dataset 'casme2'"):
        longvideo.load("casme2", tmp_path)
    no_sheet = casme2_lv_tree(tmp_path / "a")
    (no_sheet / "CAS(ME)^2code_final.xlsx").unlink()
    with pytest.raises(UserError, match=r"CAS\(ME\)\^2 code sheet not found under .*a \(looked for"):
        longvideo.load("casme2_lv", no_sheet)
    one_sheet = casme2_lv_tree(tmp_path / "b", sheets=1)
    with pytest.raises(UserError, match=r"code_final.xlsx: has 1 sheet\(s\), sheet 2 was expected"):
        longvideo.load("casme2_lv", one_sheet)
    empty = casme2_lv_tree(tmp_path / "c")
    for f in (empty / "rawpic/s16/16_0401girlcrashing").iterdir():
        f.unlink()
    with pytest.raises(UserError, match=r"casme2_lv video s16/0401: no frames in .*16_0401girlcrashing"):
        longvideo.load("casme2_lv", empty)
    no_rawpic = casme2_lv_tree(tmp_path / "d")
    shutil.rmtree(no_rawpic / "rawpic")
    with pytest.raises(UserError, match=r"frame folder .*rawpic not found"):
        longvideo.load("casme2_lv", no_rawpic)
    orphan = casme2_lv_tree(tmp_path / "e", folders={"s15": ["15_0101disgustingteeth"]})
    with pytest.raises(UserError, match="sheet row 3 names video s16/0401, which has no frame folder"):
        longvideo.load("casme2_lv", orphan)
    bad = casme2_lv_tree(tmp_path / "f", rows=[[1, "disgust1_1", 10, 14, 18, "4", "negative", "blink", "-"]])
    with pytest.raises(UserError, match="row 1: type 'blink' is neither"):
        longvideo.load("casme2_lv", bad)
    backwards = casme2_lv_tree(tmp_path / "g", rows=[[1, "disgust1_1", 20, 0, 10, "4", "negative",
                                                       "micro-expression", "-"]])
    with pytest.raises(UserError, match="row 1: offset 10 before onset 20"):
        longvideo.load("casme2_lv", backwards)
    unknown = casme2_lv_tree(tmp_path / "h", rows=[[9, *CASME2_ROWS[0][1:]]])
    with pytest.raises(UserError, match="row 1: subject 9 is not in the naming-rule sheet"):
        longvideo.load("casme2_lv", unknown)
    late = casme2_lv_tree(tmp_path / "i", rows=[[1, "disgust1_1", 30, 35, 45, "4", "negative", "micro-expression", ""]])
    (v,) = [v for v in longvideo.load("casme2_lv", late) if v.intervals]
    with pytest.raises(UserError, match=r"interval 30..45 \(sheet row 1\) outside the frames 1..40"):
        v.check_intervals()


def test_samm_lv(tmp_path):
    videos = _by_key(longvideo.load("samm_lv", samm_lv_tree(tmp_path)))
    assert list(videos) == ["samm_lv/006/006_1", "samm_lv/007/007_2", "samm_lv/008/008_1"]
    v = videos["samm_lv/006/006_1"]
    assert v.fps == 200.0 and v.frames[1].name == "006_1_0001.jpg" and v.subject_key == "samm_lv/006"
    micro, macro = v.intervals  # the onset-0 macro row is left out
    assert (micro.kind, micro.emotion, micro.composite, micro.source_row) == ("micro", "anger", "negative", 11)
    assert (macro.kind, macro.offset, macro.offset_from_apex, macro.emotion) == ("macro", 130, True, None)
    (w,) = videos["samm_lv/007/007_2"].intervals  # 40.4 / 79.6 rounded half up; apex -1 -> midpoint
    assert (w.onset, w.apex, w.offset, w.apex_estimated, w.emotion, w.composite) == (40, 60, 80, True, "contempt",
                                                                                   "negative")
    assert videos["samm_lv/008/008_1"].intervals == []


def test_samm_lv_without_emotions_and_broken(tmp_path, caplog):
    videos = longvideo.load("samm_lv", samm_lv_tree(tmp_path / "a", emotions=False))
    assert all(iv.emotion is None and iv.composite is None for v in videos for iv in v.intervals)
    assert "carry no emotion" in caplog.text
    no_header = samm_lv_tree(tmp_path / "b")
    write_xlsx(no_header / "SAMM_LongVideos_V2_Release.xlsx", {"S": [["preamble"]] * 9 + [["a", "b"]]})
    with pytest.raises(UserError, match="SAMM_LongVideos_V2_Release.xlsx: no header row with columns Subject"):
        longvideo.load("samm_lv", no_header)
    bad_name = samm_lv_tree(tmp_path / "c", rows=[[6, "0061", 1, 20, 30, 60, 41, "Micro - 1/2", "4", None]])
    with pytest.raises(UserError, match="row 11: Filename '0061' is not <subject>_<video>_<n>"):
        longvideo.load("samm_lv", bad_name)
    empty = samm_lv_tree(tmp_path / "d", rows=SAMM_LV_ROWS[:1])
    (empty / "SAMM_longvideos/008_1_empty").mkdir()
    with pytest.raises(UserError, match="samm_lv video 008_1_empty: no frames in"):
        longvideo.load("samm_lv", empty)


def test_casme3_lv(tmp_path):
    videos = _by_key(longvideo.load("casme3_lv", casme3_lv_tree(tmp_path)))
    assert list(videos) == ["casme3_lv/spNO.1/a", "casme3_lv/spNO.1/b", "casme3_lv/spNO.2/b"]
    a = videos["casme3_lv/spNO.1/a"]
    assert a.fps == 30.0 and a.folder.name == "color" and a.frames[8].name == "8.jpg" and 33 not in a.frames
    assert [(iv.onset, iv.kind, iv.emotion, iv.composite) for iv in a.intervals] == \
        [(10, "micro", "disgust", "negative"), (40, "micro", "happy", "positive")]
    (macro,) = videos["casme3_lv/spNO.1/b"].intervals
    assert (macro.kind, macro.onset, macro.apex, macro.offset, macro.aus) == ("macro", 5, 20, 45, ())
    (s,) = videos["casme3_lv/spNO.2/b"].intervals
    assert (s.apex, s.apex_estimated, s.composite) == (23, True, "surprise")
    for v in videos.values():
        v.check_intervals()


def test_casme3_lv_refuses_broken_trees(tmp_path):
    with pytest.raises(UserError, match="CAS.ME.\\^3 part A macro label sheet not found"):
        longvideo.load("casme3_lv", casme3_lv_tree(tmp_path / "a", mae=False))
    no_color = casme3_lv_tree(tmp_path / "b")
    write_frames(no_color / "part_A/spNO.2/c/depth", [1], lambda n: f"{n}.png")
    with pytest.raises(UserError, match=r"casme3_lv video spNO.2/c: frame folder .*spNO.2/c/color not found"):
        longvideo.load("casme3_lv", no_color)
    missing_col = casme3_lv_tree(tmp_path / "c")
    write_xlsx(missing_col / "cas(me)3_part_A_ME_label_JpgIndex_v2.xlsx",
               {"label": [["Subject", "Filename", "Onset", "Offset", "emotion"], ["spNO.1", "a", 1, 2, "happy"]]})
    with pytest.raises(UserError, match="column.s. Apex missing in the header on row 1"):
        longvideo.load("casme3_lv", missing_col)
