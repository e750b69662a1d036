"""The demo's scorecard: MEGC matching (one-to-one, IoU >= 0.5) and label accuracy, by hand."""

from nodes.scorecard import format_summary, score


def _ev(on: int, off: int, label: str, kind: str = "micro") -> dict:
    return {"kind": kind, "label": label, "confidence": 0.9, "onset": {"frame": on}, "offset": {"frame": off}}


def test_score_matches_one_to_one_and_counts_labels():
    truth = [{"kind": "micro", "onset": 10, "offset": 19, "label": "surprise"},
             {"kind": "micro", "onset": 100, "offset": 109, "label": "negative"},
             {"kind": "micro", "onset": 200, "offset": 209, "label": "positive"},
             {"kind": "blink", "onset": 300, "offset": 305, "label": None}]
    events = [_ev(11, 20, "surprise"),      # IoU 9/11: match, right label
              _ev(12, 19, "surprise"),      # second event on the same truth: a false positive
              _ev(101, 108, "positive"),    # IoU 0.8: match, wrong label
              _ev(205, 215, "positive"),    # IoU 5/16 < 0.5: near miss, false positive
              _ev(300, 305, "x", "macro")]  # not micro: ignored by the matching
    s = score(truth, events)
    assert (s["tp"], s["fp"], s["fn"]) == (2, 2, 1)
    assert s["f1"] == 2 * 2 / (2 * 2 + 2 + 1)
    assert s["label_accuracy"] == 0.5
    assert s["other_events"] == 1 and s["distractors"]["blink"] == 1
    assert s["intervals"][2]["best_iou"] == round(5 / 16, 2)
    text = format_summary(s)
    assert "MISSED (best overlapping event IoU 0.31 < 0.5)" in text and "wrong label" in text
