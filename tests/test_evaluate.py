"""`facesleuth eval`: protocols end to end on synthetic data (tiny budget), reports and plots, no subject
on both sides of a fold, and testing a trained model file."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edge.cli import main
from edge.data.sources import load_source
from edge.evaluate import make_folds

TINY = ["--epochs", "1", "--batch", "16", "--size", "32", "--workers", "0", "--quiet"]


def test_held_out_domain_ablation_report(tmp_path):
    out = tmp_path / "ev"
    rc = main(["eval", "--protocol", "domain", "--data", "synth:lab200+webcam30", "--n", "64",
               "--test-domain", "webcam30", "--arch", "none,soa", "--seeds", "0,1", "--val-frac", "0.3",
               "--cache", str(tmp_path / "c"), "--out", str(out), *TINY])
    assert rc == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["protocol"] == "domain" and rep["classes"] == ["negative", "positive", "surprise"]
    assert [s["arch"] for s in rep["summary"]] == ["none", "soa"] and all(s["seeds"] == 2 for s in rep["summary"])
    assert len(rep["runs"]) == 4 and len(rep["folds"]) == 4
    for run in rep["runs"]:
        assert 0.0 <= run["uf1"] <= 1.0 and sum(map(sum, run["confusion"])) == 32  # all webcam30 samples
    soa = rep["summary"][1]
    assert len(soa["angles_mean"]) == 4 and rep["summary"][0]["angles_mean"] == []
    for row in rep["folds"]:
        assert row["n_test"] == 32 and row["n_val"] > 0 and row["n_train"] + row["n_val"] == 32
        assert all(s.startswith("syn1") for s in row["test_subjects"])  # webcam30 = 2nd preset's people
    lines = (out / "folds.tsv").read_text().splitlines()
    assert len(lines) == 5 and lines[0].startswith("arch\tseed\tfold")
    assert "| soa | 2 |" in (out / "summary.md").read_text()
    for png in ("confusion_none.png", "confusion_soa.png", "angles.png"):
        assert (out / png).stat().st_size > 1000


def test_loso_folds_never_share_a_subject():
    data = load_source("synth:lab200+hs100", n=40, seed=2, progress=False)
    folds = make_folds("loso", data)
    assert len(folds) == len(set(data.subjects))
    seen = np.zeros(len(data), int)
    for f in folds:
        train_s = {data.subjects[i] for i in f.train}
        test_s = {data.subjects[i] for i in f.test}
        assert len(test_s) == 1 and not train_s & test_s
        seen[f.test] += 1
    assert (seen == 1).all()  # every sample is tested exactly once
    lodo = make_folds("lodo", data)
    assert sorted(f.name for f in lodo) == ["without hs100", "without lab200"]


def test_loso_end_to_end_pools_every_sample(tmp_path):
    out = tmp_path / "loso"
    from edge.data.synth import make_samples, save_samples

    onset, apex, meta = make_samples(30, "hs100", seed=4, subjects=3)
    save_samples(tmp_path / "s.npz", onset, apex, meta)
    assert main(["eval", "--protocol", "loso", "--data", str(tmp_path / "s.npz"), "--arch", "cva",
                 "--no-cache", "--out", str(out), *TINY]) == 0
    rep = json.loads((out / "report.json").read_text())
    assert len(rep["folds"]) == 3 and rep["runs"][0]["n"] == 30


def test_eval_of_a_trained_model_file(tmp_path):
    model = tmp_path / "m.pt"
    assert main(["train", "--data", "synth:hs100", "--n", "32", "--out", str(model), "--no-cache", *TINY]) == 0
    out = tmp_path / "m_eval"
    assert main(["eval", "--model", str(model), "--data", "synth:webcam30", "--n", "24", "--seed", "7",
                 "--no-cache", "--out", str(out), "--quiet", "--workers", "0"]) == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["model_id"].startswith("soa-") and rep["runs"][0]["n"] == 24
    assert (out / "confusion_soa.png").is_file()


def test_bad_requests_exit_2(tmp_path):
    assert main(["eval", "--data", "synth:lab200", "--out", str(tmp_path)]) == 2  # neither protocol nor model
    assert main(["eval", "--protocol", "domain", "--data", "synth:lab200", "--n", "8", "--quiet",
                 "--out", str(tmp_path)]) == 2  # no --test-domain
    assert main(["eval", "--protocol", "loso", "--data", "synth:lab200", "--n", "8", "--arch", "resnet",
                 "--quiet", "--out", str(tmp_path)]) == 2
    with pytest.raises(Exception, match="test-domain|webcam30"):
        make_folds("domain", load_source("synth:lab200", n=8, progress=False), "webcam30")
