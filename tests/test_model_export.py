"""Exports (edge/model/export.py) and the runtime loader (edge/model/runtime.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_model_helpers import settled, varied_input

from edge import cli
from edge.errors import Unavailable, UserError
from edge.model.export import export_model, tensorrt_available
from edge.model.file import save_model
from edge.model.runtime import EngineCache, engine_key, open_model


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    d = tmp_path_factory.mktemp("model")
    m = settled("soa", angle=72.0, propagate=True)
    save_model(m, d / "m.pt", {"flow": {"backend": "dis", "params": {}}})
    x = varied_input(5, seed=7)
    with torch.no_grad():
        ref = torch.softmax(m.freeze()(x), 1).numpy()
    return d / "m.pt", x.numpy(), ref


@pytest.fixture(scope="module")
def onnx_file(model_file):
    pytest.importorskip("onnxruntime")
    path = model_file[0].with_suffix(".onnx")
    export_model(model_file[0], "onnx", path)
    return path


def test_onnx_parity_with_onnxruntime(model_file, onnx_file):
    import onnx
    import onnxruntime as ort

    _, x, ref = model_file
    proto = onnx.load(str(onnx_file))
    ops = {n.op_type for n in proto.graph.node}
    assert not ops & {"GridSample", "AffineGrid", "Loop", "If"}, ops
    assert "MatMul" in ops and "Conv" in ops
    meta = json.loads({p.key: p.value for p in proto.metadata_props}["facesleuth"])
    assert meta["meta"]["classes"] == ["negative", "positive", "surprise"]
    sess = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    for batch in (1, 5):  # dynamic batch axis
        logits = sess.run(None, {"motion": x[:batch]})[0]
        z = np.exp(logits - logits.max(1, keepdims=True))
        np.testing.assert_allclose(z / z.sum(1, keepdims=True), ref[:batch], atol=1e-5)


@pytest.mark.parametrize("backend", ["torchscript", "exported"])
def test_torch_export_parity(model_file, tmp_path, backend):
    path, x, ref = model_file
    out = tmp_path / f"m.{backend}.pt2"
    res = export_model(path, backend, out)
    assert out.is_file() and res["max_diff"] <= 1e-5
    pred = open_model(out, prefer="torch-cpu")
    np.testing.assert_allclose(pred.predict(x).probs, ref, atol=1e-5)
    assert pred.classes == ["negative", "positive", "surprise"] and pred.model_id == res["model_id"]


def test_runtime_loader_best_and_forced(model_file, onnx_file, tmp_path):
    path, x, ref = model_file
    best = open_model(path, cache_dir=tmp_path)
    expected = "tensorrt" if tensorrt_available() is None else (
        "torch-cuda" if torch.cuda.is_available() else "onnxruntime")
    assert best.runtime == expected
    forced = [open_model(path, prefer="torch-cpu"), open_model(onnx_file)]
    if best.runtime != "onnxruntime":
        forced.append(open_model(path, prefer="onnxruntime", cache_dir=tmp_path))
    else:  # the model file's ONNX form was cached: a second open reuses it
        assert len(list(tmp_path.glob("*.onnx"))) == 1
        forced.append(open_model(path, cache_dir=tmp_path))
    assert [p.runtime for p in forced[:2]] == ["torch-cpu", "onnxruntime"]
    for pred in [best, *forced]:
        one = pred.predict(x[0])                    # batch-1 call with a (C, S, S) sample
        many = pred.predict(x)
        assert one.probs.shape == (1, 3) and many.probs.shape == (5, 3)
        np.testing.assert_allclose(many.probs, ref, atol=1e-5)
        np.testing.assert_allclose(one.probs[0], ref[0], atol=1e-5)
        assert many.labels == [["negative", "positive", "surprise"][i] for i in ref.argmax(1)]
        assert pred.angles == pytest.approx([72.0] * 4, abs=1e-3)
    with pytest.raises(UserError, match="expects input"):
        best.predict(np.zeros((2, 3, 32, 32), np.float32))
    with pytest.raises(UserError, match="unknown runtime"):
        open_model(path, prefer="magic")


def test_runtime_rejects_junk(tmp_path):
    (tmp_path / "x.onnx").write_bytes(b"\x00garbage")
    with pytest.raises(UserError, match="not a model file"):
        open_model(tmp_path / "x.onnx")
    with pytest.raises(UserError, match="not found"):
        open_model(tmp_path / "none.pt")
    # What protobuf parses as an ONNX model without a graph (an empty file, a header cut short): refused
    # up front as bad input, not left to onnxruntime's session error when a node starts
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "cut.onnx").write_bytes(b"\x08\x08\x12\x04onnx")  # ir_version 8, producer "onnx", no graph
    for name in ("empty.pt", "cut.onnx"):
        with pytest.raises(UserError, match="not a model file.*no graph"):
            open_model(tmp_path / name)


def test_tensorrt_unavailable_is_one_clear_line(model_file, tmp_path):
    reason = tensorrt_available()
    if reason is None:
        pytest.skip("TensorRT is available here; the GPU test below covers it")
    with pytest.raises(Unavailable) as e:
        export_model(model_file[0], "tensorrt", tmp_path / "m.ep", "fp16")
    assert "\n" not in str(e.value) and str(e.value) == reason
    with pytest.raises(Unavailable):
        open_model(model_file[0], prefer="tensorrt")
    assert not (tmp_path / "m.ep").exists()


def test_tensorrt_export_and_engine_cache(model_file, tmp_path):
    reason = tensorrt_available()
    if reason:
        pytest.skip(reason)
    path, x, ref = model_file
    res = export_model(path, "tensorrt", tmp_path / "m.ep", "fp16")
    assert res["max_diff"] <= 5e-2
    pred = open_model(path, prefer="tensorrt", cache_dir=tmp_path / "cache")
    np.testing.assert_allclose(pred.predict(x).probs, ref, atol=2e-2)
    assert len(list((tmp_path / "cache").glob("*.ep"))) == 1
    again = open_model(path, prefer="tensorrt", cache_dir=tmp_path / "cache")  # cache hit, same result
    np.testing.assert_allclose(again.predict(x).probs, pred.predict(x).probs, atol=1e-6)


def test_engine_key_changes_with_everything_it_depends_on(tmp_path):
    fp = {"gpu": "Orin", "cc": "8.7", "tensorrt": "10.3.0", "torch_tensorrt": "2.5.0", "torch": "2.5.0"}
    base = engine_key(fp, "soa-abc", "fp16", 16)
    assert base.startswith("soa-abc-fp16-") and engine_key(dict(fp), "soa-abc", "fp16", 16) == base
    variants = [engine_key({**fp, k: v}, "soa-abc", "fp16", 16)
                for k, v in (("gpu", "RTX 4090"), ("cc", "8.9"), ("tensorrt", "10.7.0"),
                             ("torch_tensorrt", "2.6.0"))]
    variants += [engine_key(fp, "soa-abd", "fp16", 16), engine_key(fp, "soa-abc", "int8", 16),
                 engine_key(fp, "soa-abc", "fp16", 32)]
    assert len({base, *variants}) == len(variants) + 1
    # the cache rebuilds under a new key and drops the stale engine of the same model and precision
    cache = EngineCache(tmp_path)
    cache.store(base, lambda p: p.write_bytes(b"engine-1"), fp)
    assert cache.lookup(base) is not None
    newer = engine_key({**fp, "tensorrt": "10.7.0"}, "soa-abc", "fp16", 16)
    assert cache.lookup(newer) is None
    cache.store(newer, lambda p: p.write_bytes(b"engine-2"), fp)
    assert cache.lookup(base) is None and cache.lookup(newer).read_bytes() == b"engine-2"
    other = engine_key(fp, "soa-abc", "int8", 16)
    cache.store(other, lambda p: p.write_bytes(b"engine-3"), fp)
    assert cache.lookup(newer) is not None  # a different precision is a different engine, kept


def test_export_cli(model_file, tmp_path, capsys):
    path = model_file[0]
    out = tmp_path / "cli.pt"
    assert cli.main(["export", str(path), "--backend", "torchscript", "--out", str(out)]) == 0
    assert out.is_file() and "torchscript (fp32) export of soa-" in capsys.readouterr().out
    assert cli.main(["export", str(tmp_path / "nope.pt"), "--backend", "onnx", "--out", str(out)]) == 2
    assert cli.main(["export", str(path), "--backend", "onnx", "--precision", "fp16",
                     "--out", str(tmp_path / "x.onnx")]) == 2
    err = capsys.readouterr().err
    assert "model file not found" in err and "needs --backend tensorrt" in err
    assert not (tmp_path / "x.onnx").exists()
