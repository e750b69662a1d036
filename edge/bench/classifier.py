"""`facesleuth bench classifier`: the SOA classifier on every runtime present, in one run.

Measures (default model "soa" at its default size, random inputs, float32):
- batch-1 latency p50/p99 (ms) and batch-16 throughput (samples/s) for PyTorch eager in the training
  form and the frozen form, TorchScript, ExportedProgram, ONNX Runtime; on a GPU also CUDA eager,
  torch.compile and Torch-TensorRT fp16 (where torch_tensorrt installs);
- the SOA operator alone, frozen matrix form vs a grid_sample rotate-and-pool implementation of the same
  operator (rotate, row means, excite, rotate the attention back), batch 1 and 16;
- the whole network vs a baseline built to the shapes of the paper's reference main branch (apex-onset
  RGB 224x224, conv3x3 s2 -> 180 ch, SOA residual stages 128@112, 128@56, 256@28, 512@14 with
  rotate-and-pool SOA), eager and ONNX Runtime, batch 1;
then the ratios against the targets of issue 4.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edge.bench.report import emit, machine
from edge.model import count_macs, count_params, create_model
from edge.model.soa import SOA, angle_from_vector
from edge.runtime.params import bounded

log = logging.getLogger(__name__)


# --- the grid_sample form of SOA and the reference-shaped baseline -------------------------------------

class GridSOA(nn.Module):
    """SOA computed by resampling: rotate the map so the angle's axis is vertical, take row means, excite,
    and rotate the row attention back onto the original grid (two grid_samples, zero padding)."""

    def __init__(self, channels: int, angle: float = 72.0) -> None:
        super().__init__()
        hidden = max(8, channels // 8)
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, channels)
        t = math.radians(angle)
        self.axis = nn.Parameter(torch.tensor([math.cos(t), math.sin(t)]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        phi = angle_from_vector(self.axis) - math.pi / 2
        c, s = torch.cos(phi), torch.sin(phi)
        zero = torch.zeros_like(c)
        rot = torch.stack([torch.stack([c, -s, zero]), torch.stack([s, c, zero])]).expand(b, 2, 3)
        inv = torch.stack([torch.stack([c, s, zero]), torch.stack([-s, c, zero])]).expand(b, 2, 3)
        xr = F.grid_sample(x, F.affine_grid(rot, list(x.shape), align_corners=False), align_corners=False)
        z = torch.sigmoid(self.fc2(F.relu(self.fc1(xr.mean(-1).transpose(1, 2))))).transpose(1, 2)  # (B, C, H)
        zmap = z.unsqueeze(-1).expand_as(x)
        back = F.grid_sample(zmap, F.affine_grid(inv, list(x.shape), align_corners=False), align_corners=False)
        return x * back


class _RefBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout),
                                  nn.ReLU(inplace=True), nn.Conv2d(cout, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        self.attn = GridSOA(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(F.relu(self.body(x) + self.short(x)))


class ReferenceShaped(nn.Module):
    """The reference main branch's shapes: (B, 3, 224, 224) -> 180@112 -> 128@112, 128@56, 256@28, 512@14."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 180, 3, 2, 1, bias=False), nn.BatchNorm2d(180), nn.ReLU(inplace=True))
        self.stages = nn.Sequential(_RefBlock(180, 128, 1), _RefBlock(128, 128, 2), _RefBlock(128, 256, 2),
                                    _RefBlock(256, 512, 2))
        self.head = nn.Linear(512, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)).mean((2, 3)))


# --- timing -------------------------------------------------------------------------------------------

def time_fn(fn: Callable[[], Any], iters: int, warmup: int = 5, sync: Callable[[], None] | None = None,
            cpu: list[float] | None = None) -> list[float]:
    """Wall times (ms) of `iters` calls after `warmup` calls; this thread's CPU times (ms) into `cpu`."""
    for _ in range(warmup):
        fn()
    if sync:
        sync()
    out = []
    for _ in range(iters):
        c0, t0 = time.thread_time(), time.perf_counter()
        fn()
        if sync:
            sync()
        out.append((time.perf_counter() - t0) * 1e3)
        if cpu is not None:
            cpu.append((time.thread_time() - c0) * 1e3)
    return out


def _pct(ts: list[float], q: float) -> float:
    return float(np.percentile(ts, q))


def measure(name: str, form: str, run: Callable[[Any], Any], make: Callable[[int], Any], iters: int,
            batch: int = 16, sync: Callable[[], None] | None = None, b16: bool = True) -> dict[str, Any]:
    x1, xb = make(1), make(batch)
    cpu: list[float] = []
    t1 = time_fn(lambda: run(x1), iters, sync=sync, cpu=cpu)
    row: dict[str, Any] = {"model": name, "runtime": form, "b1_p50_ms": _pct(t1, 50), "b1_p99_ms": _pct(t1, 99),
                           # with --threads 1 everything runs on this thread: its CPU time is the cost of a
                           # call even when other processes steal the cores (wall time is not)
                           "b1_cpu_p50_ms": _pct(cpu, 50) if torch.get_num_threads() == 1 else None}
    if b16:
        tb = time_fn(lambda: run(xb), max(5, iters // 4), sync=sync)
        row[f"b{batch}_samples_s"] = batch / (statistics.median(tb) / 1e3)
    else:
        row[f"b{batch}_samples_s"] = None
    log.info("%s / %s: p50 %.3f ms", name, form, row["b1_p50_ms"])
    return row


def _ort(model: nn.Module, shape: tuple[int, ...], tmp: Path, name: str,
         threads: int = 0) -> Callable[[np.ndarray], Any] | None:
    try:
        import onnxruntime as ort

        from edge.model.export import _quiet_exporter
    except ImportError:
        return None
    path = tmp / f"{name}.onnx"
    with _quiet_exporter():
        torch.onnx.export(model, (torch.randn(2, *shape),), str(path), input_names=["x"], dynamo=True, verbose=False,
                          dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=256)},), external_data=False)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = threads  # 0 = onnxruntime's default (one per core)
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return lambda x: sess.run(None, {"x": x})


def _np_maker(shape: tuple[int, ...]) -> Callable[[int], np.ndarray]:
    return lambda b: np.random.default_rng(b).standard_normal((b, *shape)).astype(np.float32)


def _t_maker(shape: tuple[int, ...], device: str = "cpu") -> Callable[[int], torch.Tensor]:
    return lambda b: torch.randn(b, *shape, device=device)


def run_bench(iters: int = 200, model_name: str = "soa", baseline: bool = True,
              threads: int = 0) -> tuple[list[dict], list[dict], dict]:
    """All rows, the target checks and run info. threads > 0 pins torch and onnxruntime to that many."""
    if threads > 0:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = create_model(model_name).eval()
    shape = (net.cfg.in_chans, net.cfg.img_size, net.cfg.img_size)
    frozen = create_model(model_name).eval()
    frozen.load_state_dict(net.state_dict())
    frozen.freeze()
    info = {"model": model_name, "params": count_params(net), "macs": count_macs(net, shape),
            "input": list(shape), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "load_avg_1min": _load()}
    rows: list[dict] = []
    tmake = _t_maker(shape)

    def eager(m: nn.Module) -> Callable[[torch.Tensor], Any]:
        def f(x: torch.Tensor) -> Any:
            with torch.inference_mode():
                return m(x)
        return f

    rows.append(measure(model_name, "eager training form", eager(net), tmake, iters))
    rows.append(measure(model_name, "eager frozen", eager(frozen), tmake, iters))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript is deprecated in torch 2.13; still measured
        ts = torch.jit.freeze(torch.jit.trace(frozen, tmake(2), check_trace=False))
    rows.append(measure(model_name, "torchscript frozen", eager(ts), tmake, iters))
    ep = torch.export.export(frozen, (tmake(2),), dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=256)},))
    rows.append(measure(model_name, "exportedprogram frozen", eager(ep.module()), tmake, iters))
    with tempfile.TemporaryDirectory() as d:
        ort_net = _ort(frozen, shape, Path(d), "net", threads)
        if ort_net:
            rows.append(measure(model_name, "onnxruntime frozen", ort_net, _np_maker(shape), iters))
        if torch.cuda.is_available():
            rows += _gpu_rows(model_name, frozen, shape, iters)

        # The SOA operator alone at the first stage's size: frozen matrices vs grid_sample.
        c, h = net.cfg.widths[0], net.cfg.img_size // 2
        op = SOA(c, (h, h), angle=72.0).eval()
        op_frozen = SOA(c, (h, h), angle=72.0).eval()
        op_frozen.load_state_dict(op.state_dict())
        op_frozen.freeze()
        grid = GridSOA(c, 72.0).eval()
        omake = _t_maker((c, h, h))
        rows.append(measure(f"SOA op {c}x{h}x{h}", "eager frozen (matmul)", eager(op_frozen), omake, iters))
        rows.append(measure(f"SOA op {c}x{h}x{h}", "eager training form", eager(op), omake, iters))
        rows.append(measure(f"SOA op {c}x{h}x{h}", "eager grid_sample", eager(grid), omake, iters))

        if baseline:
            ref = ReferenceShaped(len(net.classes)).eval()
            rshape = (3, 224, 224)
            info["baseline_params"] = count_params(ref)
            info["baseline_macs"] = _conv_macs(ref, rshape)
            n_ref = max(3, iters // 40)
            rows.append(measure("reference-shaped", "eager", eager(ref), _t_maker(rshape), n_ref, b16=False))
            ort_ref = _ort(ref, rshape, Path(d), "ref", threads)
            if ort_ref:
                rows.append(measure("reference-shaped", "onnxruntime", ort_ref, _np_maker(rshape), n_ref, b16=False))
    return rows, checks(rows, model_name, f"SOA op {c}x{h}x{h}"), info


def _load() -> float | None:
    """1-minute load average: numbers taken on a busy machine are not comparable."""
    try:
        import os

        return round(os.getloadavg()[0], 2)
    except (OSError, AttributeError):
        return None


def _conv_macs(model: nn.Module, shape: tuple[int, ...]) -> int:
    """Conv + linear MACs (the grid_sample attention is not counted: a lower bound)."""
    total = [0]

    def hook(m: nn.Module, inp: tuple, out: torch.Tensor) -> None:
        total[0] += out[0].numel() * (m.weight[0].numel() if isinstance(m, nn.Conv2d) else m.in_features)

    hs = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model(torch.zeros(1, *shape))
    for h in hs:
        h.remove()
    return total[0]


def _gpu_rows(name: str, frozen: nn.Module, shape: tuple[int, ...], iters: int) -> list[dict]:
    rows = []
    sync = torch.cuda.synchronize
    gm = frozen.to("cuda")
    cmake = _t_maker(shape, "cuda")

    def eager(m: Any) -> Callable[[torch.Tensor], Any]:
        def f(x: torch.Tensor) -> Any:
            with torch.inference_mode():
                return m(x)
        return f

    rows.append(measure(name, "cuda eager frozen", eager(gm), cmake, iters, sync=sync))
    try:
        comp = torch.compile(gm, dynamic=True)
        rows.append(measure(name, "cuda torch.compile", eager(comp), cmake, iters, sync=sync))
    except Exception as e:  # noqa: BLE001 - a missing compiler toolchain must not end the benchmark
        log.warning("torch.compile unavailable: %s", str(e).splitlines()[0])
    from edge.model.export import compile_tensorrt, tensorrt_available

    reason = tensorrt_available()
    if reason is None:
        trt = compile_tensorrt(frozen.cpu(), {"in_chans": shape[0], "img_size": shape[1]}, "fp16", 16)
        rows.append(measure(name, "tensorrt fp16", eager(trt), cmake, iters, sync=sync))
    else:
        log.warning("TensorRT row skipped: %s", reason)
    frozen.cpu()
    return rows


TARGETS = [
    # (check, numerator row, denominator row or None, column, comparison, target)
    ("ORT batch-1 p50 (ms)", "onnxruntime frozen", None, "b1_p50_ms", "<=", 0.4),
    ("ORT batch-16 throughput (samples/s)", "onnxruntime frozen", None, "b16_samples_s", ">=", 3000.0),
    ("eager frozen batch-1 p50 (ms)", "eager frozen", None, "b1_p50_ms", "<=", 1.5),
]


def checks(rows: list[dict], net: str, op: str) -> list[dict]:
    """Target checks and speed-up ratios (speed-up = slower time / faster time)."""
    def get(model: str, form: str, col: str) -> float | None:
        for r in rows:
            if r["model"] == model and r["runtime"] == form:
                return r.get(col)
        return None

    out = []
    for what, form, _, col, cmp, target in TARGETS:
        v = get(net, form, col)
        out.append(_check(what, v, cmp, target))
    for batch_col, batch_name, target in (("b1_p50_ms", "batch 1", 1.5), ("b16_samples_s", "batch 16", 2.0)):
        a, b = get(op, "eager frozen (matmul)", batch_col), get(op, "eager grid_sample", batch_col)
        ratio = None if a is None or b is None else (b / a if batch_col == "b1_p50_ms" else a / b)
        out.append(_check(f"SOA op frozen vs grid_sample speed-up, {batch_name}", ratio, ">=", target))
    for form, ref_form, target in (("eager frozen", "eager", 30.0), ("onnxruntime frozen", "onnxruntime", 60.0)):
        a, b = get(net, form, "b1_p50_ms"), get("reference-shaped", ref_form, "b1_p50_ms")
        out.append(_check(f"net vs reference-shaped speed-up, {ref_form}", None if a is None or b is None else b / a,
                          ">=", target))
    return out


def _check(what: str, value: float | None, cmp: str, target: float) -> dict[str, Any]:
    if value is None:
        return {"check": what, "value": None, "target": f"{cmp} {target:g}", "result": "not measured"}
    ok = value <= target if cmp == "<=" else value >= target
    return {"check": what, "value": float(value), "target": f"{cmp} {target:g}", "result": "PASS" if ok else "FAIL"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--iters", type=bounded(int, 1), default=300, help="timed batch-1 calls per row (default 300)")
    parser.add_argument("--model", default="soa", help="registered variant to time (default soa)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the slow reference-shaped baseline")
    parser.add_argument("--threads", type=bounded(int, 0), default=0,
                        help="CPU threads for torch and onnxruntime (default: their own defaults); on a busy "
                             "machine 1 avoids oversubscription")


def main(args: argparse.Namespace) -> int:
    from edge.errors import UserError
    from edge.train import check_arch

    check_arch(args.model, "--model")
    if args.iters < 10:
        raise UserError(f"--iters must be >= 10, got {args.iters}")
    rows, chk, info = run_bench(args.iters, args.model, not args.no_baseline, args.threads)
    emit("classifier runtimes (batch-1 latency, batch-16 throughput)", rows, None, info)
    emit("classifier targets (issue 4)", chk)
    if args.json:
        emit_json = {"title": "classifier", "machine": machine(), "info": info, "runtimes": rows, "checks": chk}
        Path(args.json).write_text(json.dumps(emit_json, indent=2, default=str))
    return 0
