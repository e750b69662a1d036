"""UF1 / UAR / accuracy over pooled predictions, against values worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from edge.data import metrics


def test_hand_computed():
    # cm rows (true) = [[2,1,0],[0,1,1],[0,0,1]]; F1 = 4/5, 2/4, 2/3; recall = 2/3, 1/2, 1.
    s = metrics.scores([0, 0, 0, 1, 1, 2], [0, 0, 1, 1, 2, 2], 3)
    assert s["confusion"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert s["f1"] == pytest.approx([0.8, 0.5, 2 / 3])
    assert s["uf1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert s["uar"] == pytest.approx((2 / 3 + 0.5 + 1.0) / 3)
    assert s["accuracy"] == pytest.approx(4 / 6) and s["support"] == [3, 2, 1]


def test_class_absent_from_a_fold_is_scored_on_the_pool():
    fold_a = ([0, 0, 1], [0, 1, 1])   # class 2 absent from this fold (never true, never predicted)
    fold_b = ([2, 2, 0], [2, 0, 0])
    a = metrics.scores(*fold_a, 3)
    assert np.isnan(a["f1"][2]) and np.isnan(a["recall"][2])
    assert a["uf1"] == pytest.approx(2 / 3) and a["uar"] == pytest.approx(0.75)  # means over classes 0, 1
    pooled = metrics.scores(fold_a[0] + fold_b[0], fold_a[1] + fold_b[1], 3)
    # pooled cm = [[2,1,0],[0,1,0],[1,0,1]]: F1 = 4/6, 2/3, 2/3; recall = 2/3, 1, 1/2
    assert pooled["uf1"] == pytest.approx(2 / 3)
    assert pooled["uar"] == pytest.approx((2 / 3 + 1 + 0.5) / 3)
    assert pooled["accuracy"] == pytest.approx(4 / 6)


def test_predicted_but_absent_class_counts_as_zero_f1():
    s = metrics.scores([0, 0], [0, 1], 2)
    assert s["f1"] == pytest.approx([2 / 3, 0.0])
    assert s["uf1"] == pytest.approx(1 / 3)
    assert s["uar"] == pytest.approx(0.5) and np.isnan(s["recall"][1])


def test_perfect_and_errors():
    s = metrics.scores([0, 1, 2, 1], [0, 1, 2, 1], 3)
    assert s["uf1"] == s["uar"] == s["accuracy"] == 1.0
    with pytest.raises(ValueError):
        metrics.scores([0, 3], [0, 1], 3)
    with pytest.raises(ValueError):
        metrics.scores([0, 1], [0], 3)


def test_confusion_png(tmp_path):
    cm = metrics.confusion([0, 1, 2, 2], [0, 2, 2, 2], 3)
    p = metrics.plot_confusion(cm, ["negative", "positive", "surprise"], tmp_path / "plots" / "cm.png")
    assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
