"""edge/progress.py on tqdm: a log gets one line per ~10 % from the outermost bar only; a terminal gets
throttled redraws with nested bars; ETAs come from the mean rate where there are few steps; training
nests its batches in its epochs."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest

from edge import progress as P
from edge.progress import Progress, track


class Terminal(io.StringIO):
    """A stream that says it is a terminal, keeping what was drawn."""

    def isatty(self) -> bool:
        return True


def test_a_log_gets_a_line_per_tenth_from_the_outer_bar_only():
    log = io.StringIO()
    with Progress(20, "eval: folds", stream=log) as folds:
        for i in range(20):
            for _ in track(range(50), "epoch: batches"):  # nested: silent in a log
                pass
            folds.update(1, fold=f"s{i:02d}", uf1=0.712345)
    lines = log.getvalue().splitlines()
    assert 10 <= len(lines) <= 12, lines  # every ~10 % (first and last included), not one per update
    assert all(line.startswith("eval: folds: ") for line in lines), lines
    assert lines[-1].startswith("eval: folds: 20/20 (100%) [") and lines[-1].endswith("fold=s19, uf1=0.7123]")
    assert "batches" not in log.getvalue() and "\r" not in log.getvalue()


def test_a_count_without_total_says_how_many_and_how_fast():
    log = io.StringIO()
    with Progress(None, "frames", stream=log) as p:
        p.update(250)
    assert re.fullmatch(r"frames: 250 \[00:00, [\d.]+[kM]?it/s\]\n", log.getvalue().splitlines(True)[-1])


def test_the_eta_of_a_few_long_steps_is_the_mean_rate():
    p = Progress(10, "folds", stream=io.StringIO())
    p.t0 -= 20.0  # 20 s for the first 4 folds: 5 s each, 30 s to go
    p.update(4)
    assert "4/10 (40%) [00:20<00:30, " in p.line()
    p.close()
    resumed = Progress(10, "epochs", stream=io.StringIO(), initial=6)  # 6 done before: not in the rate
    resumed.t0 -= 10.0
    resumed.update(2)
    assert "8/10 (80%) [00:10<00:10, " in resumed.line()
    resumed.close()


def test_a_terminal_gets_throttled_nested_bars_and_inner_ones_clear():
    term = Terminal()
    with Progress(3, "eval: folds", stream=term) as folds:
        for _ in range(3):
            with Progress(5000, "batches", stream=term) as inner:
                assert inner.depth == 1  # drawn on the line below the folds
                for _ in range(5000):
                    inner.update(1, loss=0.3)
            folds.update(1)
    drawn = term.getvalue()
    assert drawn.count("\r") < 60, drawn.count("\r")  # 15000 updates, a few dozen redraws at most
    assert drawn.rstrip().endswith("3/3 [" + drawn.rstrip().split("3/3 [")[-1])  # the outer bar ends at 3/3
    assert "\x1b[A" in drawn  # the inner bar is drawn below and the cursor comes back up
    assert P._open == []


def test_a_disabled_bar_prints_nothing_and_does_not_shift_the_others():
    log = io.StringIO()
    with Progress(4, "rank 1", stream=log, enabled=False) as off:
        with Progress(4, "rank 0", stream=log) as on:
            assert on.depth == 0
            off.update(4)
            on.update(4)
    assert log.getvalue().startswith("rank 0: 4/4") and "rank 1" not in log.getvalue()


def test_training_nests_its_batches_in_its_epochs(capsys):
    pytest.importorskip("torch")
    from edge.model.fit import fit
    from edge.train import TrainConfig

    g = np.random.default_rng(0)
    x, y = g.standard_normal((32, 3, 32, 32)).astype(np.float32), np.arange(32) % 3
    cfg = TrainConfig(epochs=2, batch=16, seed=0, angle_sweep=False, model_kwargs={"stem": 8, "widths": (8, 8, 8, 8)})
    fit(x, y, ["a", "b", "c"], cfg, progress=True)
    err = capsys.readouterr().err.splitlines()
    epochs = [line for line in err if line.startswith("train: epochs: ")]
    assert [line.split(" [")[0] for line in epochs] == ["train: epochs: 1/2 (50%)", "train: epochs: 2/2 (100%)"], err
    assert "loss=" in epochs[-1] and "acc=" in epochs[-1]
    assert not [line for line in err if "batches" in line], err  # nested: not in a log
