"""The classifier benchmark's comparison pieces (edge/bench/classifier.py): the grid_sample form really is
the same operator, and the target checks judge what they say."""

from __future__ import annotations

import pytest
import torch

from edge.bench.classifier import GridSOA, checks, run_bench
from edge.model.soa import SOA


def test_grid_sample_form_is_the_same_operator_at_90_degrees():
    # At 90 deg the rotation is the identity and both forms reduce to row means (CVA).
    torch.manual_seed(0)
    soa, grid = SOA(32, (16, 16), angle=90.0), GridSOA(32, angle=90.0)
    grid.load_state_dict({k: v for k, v in soa.state_dict().items()}, strict=True)
    x = torch.randn(2, 32, 16, 16)
    with torch.no_grad():
        assert torch.allclose(grid(x), soa(x)[0], atol=1e-5)
        # off-axis the zero-padded grid_sample form differs from the exact in-map SOA
        soa.set_angle(45.0)
        grid.axis.copy_(soa.axis)
        assert not torch.allclose(grid(x), soa(x)[0], atol=1e-3)


def test_checks_pass_and_fail():
    rows = [
        {"model": "soa", "runtime": "onnxruntime frozen", "b1_p50_ms": 0.3, "b16_samples_s": 5000.0},
        {"model": "soa", "runtime": "eager frozen", "b1_p50_ms": 2.0, "b16_samples_s": 900.0},
        {"model": "op", "runtime": "eager frozen (matmul)", "b1_p50_ms": 0.1, "b16_samples_s": 1000.0},
        {"model": "op", "runtime": "eager grid_sample", "b1_p50_ms": 0.3, "b16_samples_s": 800.0},
        {"model": "reference-shaped", "runtime": "eager", "b1_p50_ms": 100.0},
    ]
    res = {c["check"]: c["result"] for c in checks(rows, "soa", "op")}
    assert res["ORT batch-1 p50 (ms)"] == "PASS" and res["eager frozen batch-1 p50 (ms)"] == "FAIL"
    assert res["SOA op frozen vs grid_sample speed-up, batch 1"] == "PASS"
    assert res["SOA op frozen vs grid_sample speed-up, batch 16"] == "FAIL"  # 1.25x < 2x
    assert res["net vs reference-shaped speed-up, eager"] == "PASS"  # 50x
    assert res["net vs reference-shaped speed-up, onnxruntime"] == "not measured"


@pytest.mark.slow
def test_bench_runs_end_to_end():
    rows, chk, info = run_bench(iters=10, baseline=False)
    forms = {r["runtime"] for r in rows if r["model"] == "soa"}
    assert {"eager training form", "eager frozen", "torchscript frozen", "exportedprogram frozen"} <= forms
    assert all(r["b1_p50_ms"] > 0 for r in rows) and info["params"] <= 1_000_000
    assert len(chk) == 7
