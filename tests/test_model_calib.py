"""Fake INT8 quantisation (edge/model/quant.py) and `facesleuth calib int8` (calib/int8.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_model_helpers import settled, varied_input

from edge import cli
from edge.model.file import save_model
from edge.model.quant import calibrate, compare, fake_quant, quantize_model


def test_fake_quant_grid_and_error():
    x = torch.linspace(-3, 3, 1001)
    q = fake_quant(x, 2.0)
    step = 2.0 / 127
    inside = x.abs() <= 2.0
    assert torch.all((q[inside] - x[inside]).abs() <= step / 2 + 1e-6)
    assert torch.allclose(q / step, torch.round(q / step), atol=1e-4)  # on the int8 grid
    assert q.max() == pytest.approx(2.0) and q.min() == pytest.approx(-2.0)  # clipped at amax


def test_quantised_model_close_to_float_and_sensitive_to_ranges():
    model = settled("soa", angle=75.0).freeze()
    cal, held = varied_input(64, seed=1), varied_input(64, seed=2)
    ranges = calibrate(model, [cal[:32], cal[32:]])
    assert len(ranges) == sum(1 for _ in model.modules() if _.__class__.__name__ in
                              ("Conv1d", "Conv2d", "Linear", "SOA"))
    q = quantize_model(model, ranges)
    est = compare(model, q, held)
    assert est["top1_agreement"] >= 0.9 and 0 < est["mean_abs_prob_diff"] < 0.05
    # ranges 100x too small clip almost everything: the estimate must see the damage
    bad = compare(model, quantize_model(model, {k: v / 100 for k, v in ranges.items()}), held)
    assert bad["mean_abs_prob_diff"] > 3 * est["mean_abs_prob_diff"]
    with pytest.raises(ValueError, match="frozen"):
        quantize_model(settled("soa"), ranges)


def test_calib_int8_command(tmp_path, capsys):
    model = settled("soa", angle=80.0)
    save_model(model, tmp_path / "m.pt")
    x = varied_input(48, seed=5).numpy()
    with torch.no_grad():
        y = model.freeze()(torch.from_numpy(x)).argmax(1).numpy()  # labels the float model gets right
    np.savez(tmp_path / "inputs.npz", x=x, y=y)
    rc = cli.main(["calib", "int8", str(tmp_path / "m.pt"), "--data", str(tmp_path / "inputs.npz"),
                   "--out", str(tmp_path / "out"), "--n", "48", "--heldout", "0.5"])
    assert rc == 0
    rep = json.loads((tmp_path / "out" / "int8_report.json").read_text())
    fq = rep["fake_quant"]
    assert rep["n_calibration"] == 24 and rep["n_heldout"] == 24 and fq["accuracy_fp32"] == 1.0
    assert fq["accuracy_drop"] == pytest.approx(1.0 - fq["accuracy_int8"])
    assert np.load(tmp_path / "out" / "calib.npz")["x"].shape == (24, 3, 64, 64)
    if not rep["tensorrt"]["built"]:
        assert rep["tensorrt"]["reason"] and "\n" not in rep["tensorrt"]["reason"]
    assert "int8 estimate on 24 held-out samples" in capsys.readouterr().out


def test_calib_int8_bad_input(tmp_path, capsys):
    save_model(settled("soa"), tmp_path / "m.pt")
    np.savez(tmp_path / "wrong.npz", x=np.zeros((10, 3, 32, 32), np.float32))
    args = ["calib", "int8", str(tmp_path / "m.pt"), "--out", str(tmp_path / "o"), "--data"]
    assert cli.main(args + ["nothing-here"]) == 2
    assert cli.main(args + [str(tmp_path / "wrong.npz")]) == 2
    assert cli.main(args + ["random", "--n", "3"]) == 2
    err = capsys.readouterr().err
    assert "neither random" in err and "expects (N, 3, 64, 64)" in err and "--n must be" in err
