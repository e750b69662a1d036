"""SOA-Net (edge/model/net.py) and the model file (edge/model/file.py)."""

from __future__ import annotations

import pytest
import torch
from test_model_helpers import settled, varied_input
from torch import nn

from edge.errors import UserError
from edge.model import count_macs, count_params, create_model, list_models
from edge.model.file import load_model, read_record, save_model
from edge.model.soa import SOA
from edge.model.variants import model_names

VARIANTS = ["coord", "cva", "none", "soa"]


def test_registry():
    assert list_models() == VARIANTS
    assert model_names() == VARIANTS  # the torch-free names that argument checks use
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        create_model("nope")
    with pytest.raises(ValueError, match="unknown model option"):
        create_model("soa", bogus=1)
    # None kwargs are dropped: an unset CLI flag keeps the variant's default
    assert create_model("soa", img_size=None, angle=None).cfg.img_size == 64
    assert create_model("soa", angle=45.0).angles() == pytest.approx([45.0] * 4, abs=1e-4)
    assert create_model("cva").angle_parameters() == []
    assert create_model("coord").angles() == [] and create_model("none").angles() == []


@pytest.mark.parametrize("name", VARIANTS)
def test_forward_and_every_parameter_gets_a_gradient(name):
    m = create_model(name, propagate=True, classes=("a", "b", "c", "d", "e"))
    x = torch.randn(3, 3, 64, 64)
    out = m(x)
    assert out.shape == (3, 5)
    out.logsumexp(1).sum().backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert missing == []


@pytest.mark.parametrize("name", VARIANTS)
def test_budgets_at_default_size(name):
    m = create_model(name)
    params, macs = count_params(m), count_macs(m, (3, 64, 64))
    assert params <= 1_000_000, params
    assert 20e6 <= macs <= 100e6, macs


def test_mac_counter_against_hand_count():
    conv = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.Flatten(), nn.Linear(8 * 16 * 16, 10))
    assert count_macs(conv, (3, 32, 32)) == 16 * 16 * 8 * 27 + 8 * 16 * 16 * 10
    soa = SOA(6, (8, 8), length=8)  # pool + back-projection 2*C*HW*L, bottleneck per offset bin
    hidden = soa.fc1.out_features
    assert count_macs(soa, (6, 8, 8)) == 2 * 6 * 64 * 8 + 8 * (6 * hidden + hidden * 6)


def test_input_size_and_channels_configurable():
    m = create_model("soa", in_chans=4, img_size=96, length=48)
    assert m(torch.randn(2, 4, 96, 96)).shape == (2, 3)
    assert [s.length for s in m.soa_layers()] == [24, 12, 6, 3]
    with pytest.raises(ValueError, match="divisible"):
        create_model("soa", img_size=60)


@pytest.mark.parametrize("name", VARIANTS)
def test_freeze_matches_training_form(name):
    m = settled(name, angle=63.0, propagate=True)
    x = varied_input(4)
    with torch.no_grad():
        ref = m(x)
        m.freeze()
        got = m(x)
    assert torch.allclose(ref, got, atol=1e-6)
    assert ref.std(0).max() > 1e-2  # logits differ between inputs: the comparison means something


def test_angles_report_degrees_and_set():
    m = create_model("soa")
    m.set_angles([10.0, 50.0, 100.0, 170.0])
    assert m.angles() == pytest.approx([10.0, 50.0, 100.0, 170.0], abs=1e-4)


def test_model_file_roundtrip(tmp_path):
    m = settled("soa", angle=80.0)
    meta = {"flow": {"backend": "dis", "params": {"preset": "fast"}}, "training": {"data": "synth"}}
    mid = save_model(m, tmp_path / "m.pt", meta)
    rec = torch.load(tmp_path / "m.pt", weights_only=True)  # plain data only: no custom classes
    assert rec["model_id"] == mid and rec["meta"]["flow"]["backend"] == "dis"
    assert rec["meta"]["angles_deg"] == pytest.approx([80.0] * 4, abs=1e-3)
    assert rec["meta"]["classes"] == ["negative", "positive", "surprise"]
    assert rec["meta"]["input"] == {"channels": ["u", "v", "strain"], "size": 64}
    loaded, info = load_model(tmp_path / "m.pt")
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x), m(x))
    assert info["model_id"] == mid and "state_dict" not in info
    frozen, _ = load_model(tmp_path / "m.pt", frozen=True)
    assert all(s.frozen for s in frozen.soa_layers())
    # the id follows the weights
    with torch.no_grad():
        m.head.bias.add_(1.0)
    assert save_model(m, tmp_path / "m2.pt") != mid


def test_model_file_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        read_record(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    with pytest.raises(UserError, match="not a FaceSleuth model file"):
        read_record(tmp_path / "junk.pt")
    torch.save({"format": "other"}, tmp_path / "other.pt")
    with pytest.raises(UserError, match="not a FaceSleuth model file"):
        read_record(tmp_path / "other.pt")
    m = create_model("soa")
    save_model(m, tmp_path / "m.pt")
    rec = torch.load(tmp_path / "m.pt", weights_only=True)
    rec["config"]["widths"] = [8, 8, 8, 8]
    torch.save(rec, tmp_path / "bad.pt")
    with pytest.raises(UserError, match="does not match"):
        load_model(tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="training form"):
        save_model(m.freeze(), tmp_path / "frozen.pt")


def test_model_file_from_conv1d_bottleneck_layout_loads(tmp_path):
    # Files written while the attention bottleneck was a Conv1d carry (out, in, 1) weights.
    m = settled("soa", angle=70.0)
    save_model(m, tmp_path / "m.pt")
    rec = torch.load(tmp_path / "m.pt", weights_only=True)
    old = {k: (v[..., None] if ".attn.fc" in k and k.endswith("weight") else v) for k, v in rec["state_dict"].items()}
    assert any(v.dim() == 3 for k, v in old.items() if ".attn.fc" in k)
    torch.save({**rec, "state_dict": old}, tmp_path / "old.pt")
    loaded, _ = load_model(tmp_path / "old.pt")
    x = varied_input(2)
    with torch.no_grad():
        assert torch.equal(loaded(x), m(x))
