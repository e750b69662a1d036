"""The MEGC spotting rule and STRS on hand-worked cases (counts worked out in the comments)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from edge.data.longvideo import Interval, LongVideo
from edge.data.longvideo.score import Counts, Spotted, pool, score_video, strs, table_rows


def _video(*intervals: tuple, dataset: str = "casme2_lv", video: str = "0101") -> LongVideo:
    ivs = [Interval(dataset, "s15", video, on, (on + off) // 2, off, kind, None, label)
           for on, off, kind, *rest in intervals for label in [rest[0] if rest else "negative"]]
    return LongVideo(dataset, "s15", video, Path("/nowhere"), ivs)


def micro(on: int, off: int) -> Spotted:
    return Spotted(on, off, "micro")


def test_one_spotted_interval_over_two_expressions_is_one_tp_and_one_fn():
    # GT 10..19 and 20..29 (10 frames each); spotted 10..29 (20): IoU 10/20 = 0.5 with each; it counts once.
    v = score_video(_video((10, 19, "micro"), (20, 29, "micro")), [micro(10, 29)])
    assert (v.counts["micro"].tp, v.counts["micro"].fp, v.counts["micro"].fn) == (1, 0, 1)
    assert len(v.matches) == 1 and v.matches[0].iou == 0.5


def test_two_spotted_halves_of_one_expression_are_one_tp_and_one_fp():
    v = score_video(_video((10, 29, "micro")), [micro(10, 19), micro(20, 29)])
    assert (v.counts["micro"].tp, v.counts["micro"].fp, v.counts["micro"].fn) == (1, 1, 0)


def test_iou_exactly_half_counts_and_just_below_does_not():
    hit = score_video(_video((0, 9, "micro")), [micro(0, 19)])    # 10 / 20 = 0.5
    miss = score_video(_video((0, 9, "micro")), [micro(0, 20)])   # 10 / 21 < 0.5
    assert (hit.counts["micro"].tp, hit.counts["micro"].fp, hit.counts["micro"].fn) == (1, 0, 0)
    assert (miss.counts["micro"].tp, miss.counts["micro"].fp, miss.counts["micro"].fn) == (0, 1, 1)


def test_best_iou_wins_the_ground_truth():
    # GT 0..9; spotted 0..9 (IoU 1) and 0..14 (IoU 10/15): the exact one is the TP, whatever the order.
    v = score_video(_video((0, 9, "micro")), [micro(0, 14), micro(0, 9)])
    assert (v.counts["micro"].tp, v.counts["micro"].fp) == (1, 1)
    assert (v.matches[0].spotted.onset, v.matches[0].spotted.offset) == (0, 9)


def test_empty_video_adds_only_false_positives_and_pooling_sums_videos():
    empty = score_video(_video(video="0102"), [micro(5, 9), Spotted(40, 90, "macro")])
    quiet = score_video(_video(video="0103"), [])
    found = score_video(_video((0, 9, "micro"), (100, 160, "macro"), video="0101"), [micro(0, 9)])
    p = pool([empty, quiet, found])["casme2_lv"]
    # micro: TP 1 (found), FP 1 (empty); macro: FN 1 (found), FP 1 (empty); overall the sums.
    assert (p["micro"].tp, p["micro"].fp, p["micro"].fn) == (1, 1, 0)
    assert (p["macro"].tp, p["macro"].fp, p["macro"].fn) == (0, 1, 1)
    assert (p["overall"].tp, p["overall"].fp, p["overall"].fn) == (1, 2, 1)
    assert p["micro"].precision == 0.5 and p["micro"].recall == 1.0 and p["micro"].f1 == pytest.approx(2 / 3)
    assert p["macro"].precision == 0.0 and math.isnan(p["macro"].recall) is False and p["macro"].f1 == 0.0
    assert quiet.overall.as_dict() == {"tp": 0, "fp": 0, "fn": 0, "precision": None, "recall": None, "f1": 1.0}


def test_micro_is_never_matched_to_macro():
    # The spotted interval covers the macro-expression exactly but says micro: FP micro and FN macro.
    v = score_video(_video((50, 59, "macro")), [micro(50, 59)])
    assert (v.counts["micro"].fp, v.counts["macro"].fn, v.overall.tp) == (1, 1, 0)


def test_pooled_over_datasets_and_table_rows():
    a = score_video(_video((0, 9, "micro")), [micro(0, 9)])
    b = score_video(_video((0, 99, "micro"), dataset="samm_lv"), [])
    p = pool([a, b])
    assert (p["pooled"]["micro"].tp, p["pooled"]["micro"].fn) == (1, 1)
    rows = table_rows(p)
    assert [r["dataset"] for r in rows] == ["casme2_lv"] * 3 + ["samm_lv"] * 3 + ["pooled"] * 3
    assert pool([])["pooled"]["overall"].as_dict()["tp"] == 0


def test_strs_is_spotting_f1_times_uf1_of_the_true_positives_labels():
    v = score_video(_video((0, 9, "micro", "negative"), (20, 29, "micro", "positive"), (40, 49, "micro", "surprise"),
                           (60, 69, "micro", None)),
                    [micro(0, 9), micro(20, 29), micro(40, 49), micro(60, 69), micro(80, 89)])
    c = v.overall  # TP 4, FP 1, FN 0: F1 = 8 / 9
    assert c.f1 == pytest.approx(8 / 9)
    # Labels for the 4 TPs (sorted by ground truth); the 'others' one (None) is left out of UF1.
    # negative->negative (right), positive->negative (wrong), surprise->surprise (right):
    # F1 negative = 2*1/(2+1) = 2/3, positive = 0, surprise = 1 -> UF1 = 5/9.
    s = strs(c.f1, v.matches, ["negative", "negative", "surprise", "positive"])
    assert s.n == 3 and s.recognition_uf1 == pytest.approx(5 / 9) and s.strs == pytest.approx(8 / 9 * 5 / 9)
    assert math.isnan(strs(0.0, [], []).strs)
    with pytest.raises(ValueError, match="not in"):
        strs(c.f1, v.matches, ["negative", "negative", "surprise", "happy"])


def test_bad_spotted_intervals_are_refused():
    with pytest.raises(ValueError, match="kind"):
        Spotted(0, 9, "blink")
    with pytest.raises(ValueError, match="before onset"):
        Spotted(9, 0, "micro")
    assert Counts(1, 0, 0).f1 == 1.0
