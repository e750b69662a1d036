"""`facesleuth export MODEL --backend B --out FILE`: deployable forms of a model file.

Every export is made from the FROZEN network (SOA angles folded into constant matrices, so the graph is
convolutions, matrix products and element-wise ops only), written to a temporary file, loaded back,
compared with the PyTorch model on random inputs, and only then renamed into place.

Backends:
    torchscript  torch.jit.trace -> .pt (loads with torch.jit.load, also from C++)
    exported     torch.export ExportedProgram -> .pt2 (the portable artefact; TensorRT builds from it)
    onnx         ONNX opset 18 with a dynamic batch axis, checked with onnxruntime to 1e-5
    tensorrt     Torch-TensorRT dynamo frontend (fp32/fp16/int8), saved as an ExportedProgram with
                 embedded engines; needs torch_tensorrt and CUDA, and the engine only runs on the
                 same GPU model and TensorRT version (ship the model file or ONNX, build on the device)
Each export embeds the model file's metadata (JSON) so the runtime loader knows classes and model id.
"""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edge.errors import Unavailable
from edge.model.export_cli import check_export
from edge.model.file import model_from_record, read_record
from edge.model.net import SOANet

log = logging.getLogger(__name__)

META_KEY = "facesleuth"          # metadata key in ONNX metadata_props / TorchScript + .pt2 extra files
MAX_BATCH = 256
# Parity tolerances on logits, per backend (float32 kernels reorder sums; fp16/int8 are lossy).
TOL = {"torchscript": 1e-5, "exported": 1e-5, "onnx": 1e-5, "fp16": 5e-2, "int8": 0.3}


def export_meta(info: dict[str, Any], backend: str, precision: str = "fp32") -> str:
    """JSON metadata embedded in every export (the model file's record minus weights)."""
    meta = {k: v for k, v in info.items() if k != "state_dict"}
    meta["export"] = {"backend": backend, "precision": precision, "frozen": True,
                      "torch": torch.__version__}
    return json.dumps(meta, default=str)


def example_input(cfg: dict[str, Any], batch: int = 2, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, cfg["in_chans"], cfg["img_size"], cfg["img_size"], generator=g)


def check_parity(reference: Callable[[torch.Tensor], torch.Tensor], candidate: Callable[[np.ndarray], np.ndarray],
                 cfg: dict[str, Any], tol: float, what: str) -> float:
    """Max |logit difference| over random batches of 1 and 4; raises if above tol (relative to scale)."""
    worst = 0.0
    for batch, seed in ((1, 1), (4, 2)):
        x = example_input(cfg, batch, seed)
        with torch.no_grad():
            ref = reference(x).numpy()
        got = np.asarray(candidate(x.numpy()))
        if got.shape != ref.shape:
            raise RuntimeError(f"{what}: output shape {got.shape} != PyTorch {ref.shape}")
        err = float(np.max(np.abs(got - ref)) / max(1.0, float(np.max(np.abs(ref)))))
        worst = max(worst, err)
    if not worst <= tol:
        raise RuntimeError(f"{what} differs from PyTorch by {worst:.3g} (tolerance {tol:g}); not written")
    log.info("%s matches PyTorch: max rel. difference %.2g (tolerance %g)", what, worst, tol)
    return worst


def _batch_dim() -> Any:
    return torch.export.Dim("batch", min=1, max=MAX_BATCH)


def export_torchscript(model: SOANet, cfg: dict[str, Any], meta: str, out: Path) -> float:
    x = example_input(cfg)
    # torch 2.13 marks TorchScript deprecated (torch.export is the successor, see `exported`); it is
    # still what C++ deployments without the export runtime load, so keep it and silence the warnings.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ts = torch.jit.trace(model, x, check_trace=False)
        torch.jit.save(ts, str(out), _extra_files={META_KEY: meta})
        loaded = torch.jit.load(str(out), map_location="cpu")
    return check_parity(model, lambda a: loaded(torch.from_numpy(a)).detach().numpy(), cfg, TOL["torchscript"],
                        "TorchScript")


def export_program(model: SOANet, cfg: dict[str, Any], meta: str, out: Path) -> float:
    x = example_input(cfg)
    ep = torch.export.export(model, (x,), dynamic_shapes=({0: _batch_dim()},))
    torch.export.save(ep, str(out), extra_files={META_KEY: meta})
    loaded = torch.export.load(str(out)).module()
    return check_parity(model, lambda a: loaded(torch.from_numpy(a)).detach().numpy(), cfg, TOL["exported"],
                        "ExportedProgram")


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The dynamo ONNX exporter logs every optimisation pass at INFO; keep our log readable."""
    names = ("onnxscript", "onnx_ir", "torch.onnx", "torch._dynamo", "torch.export")
    old = {n: logging.getLogger(n).level for n in names}
    for n in names:
        logging.getLogger(n).setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for n, lvl in old.items():
            logging.getLogger(n).setLevel(lvl)


def export_onnx(model: SOANet, cfg: dict[str, Any], meta: str, out: Path) -> float:
    try:
        import onnx
        import onnxruntime as ort
    except ImportError as e:
        raise Unavailable(f"ONNX export needs onnx and onnxruntime ({e.name} missing): "
                          "pip install 'facesleuth-edge[train]'") from None
    x = example_input(cfg)
    with _quiet_exporter():
        torch.onnx.export(model, (x,), str(out), input_names=["motion"], output_names=["logits"],
                          dynamic_shapes=({0: _batch_dim()},), opset_version=18, dynamo=True,
                          external_data=False, verbose=False)
    proto = onnx.load(str(out))
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key, entry.value = META_KEY, meta
    onnx.checker.check_model(proto)
    onnx.save(proto, str(out))
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    return check_parity(model, lambda a: sess.run(None, {"motion": a})[0], cfg, TOL["onnx"], "ONNX (onnxruntime)")


def tensorrt_available() -> str | None:
    """None when Torch-TensorRT can build here, else the one-line reason."""
    try:
        import torch_tensorrt  # noqa: F401
    except ImportError:
        return "torch_tensorrt is not installed (pip install 'facesleuth-edge[tensorrt]' on a CUDA machine)"
    except Exception as e:  # noqa: BLE001 - a broken install (libtorch mismatch) must not crash callers
        return f"torch_tensorrt fails to import ({type(e).__name__}: {e})"
    if not torch.cuda.is_available():
        return "TensorRT needs a CUDA GPU and none is visible to torch"
    return None


def compile_tensorrt(model: SOANet, cfg: dict[str, Any], precision: str, max_batch: int = 16,
                     calib: torch.Tensor | None = None) -> Any:
    """Compile the frozen model with the Torch-TensorRT dynamo frontend; returns the compiled module."""
    reason = tensorrt_available()
    if reason:
        raise Unavailable(reason)
    import torch_tensorrt

    dev = torch.device("cuda")
    model = model.to(dev).eval()
    shape = (cfg["in_chans"], cfg["img_size"], cfg["img_size"])
    inp = torch_tensorrt.Input(min_shape=(1, *shape), opt_shape=(max(1, max_batch // 2), *shape),
                               max_shape=(max_batch, *shape), dtype=torch.float32)
    if precision == "int8":
        from edge.model.quant import modelopt_quantize  # needs ModelOpt; raises Unavailable otherwise

        model = modelopt_quantize(model, calib if calib is not None else example_input(cfg, 64).to(dev))
        from modelopt.torch.quantization.utils import export_torch_mode

        with export_torch_mode():
            ep = torch.export.export(model, (example_input(cfg).to(dev),), strict=False,
                                     dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=max_batch)},))
            return torch_tensorrt.dynamo.compile(ep, inputs=[inp], enabled_precisions={torch.int8},
                                                 min_block_size=1)
    kw: dict[str, Any] = {"enabled_precisions": {torch.half} if precision == "fp16" else {torch.float32}}
    return torch_tensorrt.compile(model, ir="dynamo", arg_inputs=[inp], min_block_size=1, **kw)


def export_tensorrt(model: SOANet, cfg: dict[str, Any], meta: str, out: Path, precision: str) -> float:
    trt_mod = compile_tensorrt(model, cfg, precision)
    import torch_tensorrt

    x = example_input(cfg).cuda()
    torch_tensorrt.save(trt_mod, str(out), output_format="exported_program", arg_inputs=[x])
    (out.parent / (out.name + ".json")).write_text(meta)  # .ep extra files are not exposed by trt.save
    loaded = torch.export.load(str(out)).module()
    ref = model.cuda()
    tol = TOL["fp16"] if precision == "fp16" else TOL["int8"] if precision == "int8" else 1e-3
    return check_parity(lambda t: ref(t.cuda()).float().cpu(),
                        lambda a: loaded(torch.from_numpy(a).cuda()).float().cpu().numpy(), cfg, tol,
                        f"TensorRT {precision}")


def export_model(model_path: str | Path, backend: str, out: str | Path, precision: str = "fp32") -> dict[str, Any]:
    """Export a model file; returns {"out", "backend", "precision", "max_diff", "model_id"}."""
    check_export(backend, precision)
    rec = read_record(model_path)
    model = model_from_record(rec).freeze()
    cfg = rec["config"]
    meta = export_meta(rec, backend, precision)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".export-") as tmpdir:
        tmp = Path(tmpdir) / out.name
        if backend == "torchscript":
            diff = export_torchscript(model, cfg, meta, tmp)
        elif backend == "exported":
            diff = export_program(model, cfg, meta, tmp)
        elif backend == "onnx":
            diff = export_onnx(model, cfg, meta, tmp)
        else:
            diff = export_tensorrt(model, cfg, meta, tmp, precision)
            side = tmp.parent / (tmp.name + ".json")
            side.replace(out.parent / (out.name + ".json"))
        tmp.replace(out)
    log.info("wrote %s export of %s to %s", backend, rec["model_id"], out)
    return {"out": str(out), "backend": backend, "precision": precision, "max_diff": diff,
            "model_id": rec["model_id"]}
