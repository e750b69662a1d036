"""INT8 fake quantisation on any machine: what TensorRT INT8 will roughly cost in accuracy.

Mirrors TensorRT's explicit-quantisation scheme (ModelOpt's INT8 default): symmetric int8, weights
per output channel (amax = max |w| of the channel), activations per tensor with a range calibrated on
representative inputs (amax = a high percentile of |x|, robust to the few outliers max() would chase).
Quantised: the inputs and weights of every Conv/Linear, and the input and the two constant matrices of
every frozen SOA layer (the matrix products that TensorRT runs in INT8). Element-wise ops, sigmoid and
the final softmax stay in float, as TensorRT keeps them.

`modelopt_quantize` is the real thing for the TensorRT INT8 engine (edge.model.export): NVIDIA ModelOpt's
PTQ, where it is installed.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from torch import nn

from edge.errors import Unavailable
from edge.model.soa import SOA

QMAX = 127.0


def fake_quant(x: torch.Tensor, amax: torch.Tensor | float) -> torch.Tensor:
    """Round x to the symmetric int8 grid of range [-amax, amax] and back to float."""
    scale = torch.as_tensor(amax, dtype=x.dtype).clamp_min(1e-12) / QMAX
    return torch.clamp(torch.round(x / scale), -QMAX, QMAX) * scale


def _quantisable(model: nn.Module) -> dict[str, nn.Module]:
    return {n: m for n, m in model.named_modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear, SOA))}


def calibrate(model: nn.Module, batches: Iterable[torch.Tensor], percentile: float = 99.99) -> dict[str, float]:
    """Per-layer activation ranges (amax of the layer input) over calibration batches (eval mode)."""
    samples: dict[str, list[np.ndarray]] = {}

    def hook(name: str):
        def fn(m: nn.Module, inp: tuple) -> None:
            a = inp[0].detach().abs().flatten().numpy()
            # keep a bounded random subset per batch so memory stays flat on big calibration sets
            if a.size > 50_000:
                a = a[np.random.default_rng(len(samples.get(name, []))).choice(a.size, 50_000, replace=False)]
            samples.setdefault(name, []).append(a)
        return fn

    handles = [m.register_forward_pre_hook(hook(n)) for n, m in _quantisable(model).items()]
    try:
        model.eval()
        with torch.no_grad():
            for x in batches:
                model(x)
    finally:
        for h in handles:
            h.remove()
    if not samples:
        raise ValueError("calibration saw no data")
    return {n: float(np.percentile(np.concatenate(v), percentile)) for n, v in samples.items()}


def quantize_model(model: nn.Module, ranges: dict[str, float]) -> nn.Module:
    """A fake-quantised copy: int8-rounded weights (per channel) and input quantisers (per tensor)."""
    q = copy.deepcopy(model).eval()
    with torch.no_grad():
        for name, m in _quantisable(q).items():
            if isinstance(m, SOA):
                if not m.frozen:
                    raise ValueError("quantise the frozen model (call freeze() first)")
                for buf in (m.pool_matrix, m.back_matrix):  # per row = per output element
                    buf.copy_(fake_quant(buf, buf.abs().amax(1, keepdim=True)))
            else:
                w = m.weight
                amax = w.abs().flatten(1).amax(1).view(-1, *([1] * (w.dim() - 1)))
                w.copy_(fake_quant(w, amax))
            if name in ranges:
                amax = ranges[name]
                m.register_forward_pre_hook(lambda _m, inp, a=amax: (fake_quant(inp[0], a), *inp[1:]))
    return q


def compare(reference: nn.Module, quantized: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None,
            batch: int = 256) -> dict[str, Any]:
    """FP32 vs fake-INT8 on held-out inputs: accuracy (if labels), top-1 agreement, probability error."""
    with torch.no_grad():
        p32 = torch.cat([torch.softmax(reference(x[i:i + batch]), 1) for i in range(0, len(x), batch)])
        p8 = torch.cat([torch.softmax(quantized(x[i:i + batch]), 1) for i in range(0, len(x), batch)])
    out: dict[str, Any] = {
        "n": len(x),
        "top1_agreement": float((p32.argmax(1) == p8.argmax(1)).float().mean()),
        "max_abs_prob_diff": float((p32 - p8).abs().max()),
        "mean_abs_prob_diff": float((p32 - p8).abs().mean()),
    }
    if y is not None:
        acc32 = float((p32.argmax(1) == y).float().mean())
        acc8 = float((p8.argmax(1) == y).float().mean())
        out.update({"accuracy_fp32": acc32, "accuracy_int8": acc8, "accuracy_drop": acc32 - acc8})
    return out


def modelopt_quantize(model: nn.Module, calib_x: torch.Tensor, batch: int = 32) -> nn.Module:
    """ModelOpt INT8 PTQ (QDQ fake-quant nodes TensorRT turns into INT8 kernels). Needs nvidia-modelopt."""
    try:
        import modelopt.torch.quantization as mtq
    except ImportError:
        raise Unavailable("ModelOpt is not installed (pip install nvidia-modelopt on the CUDA device)") from None

    def forward_loop(m: nn.Module) -> None:
        with torch.no_grad():
            for i in range(0, len(calib_x), batch):
                m(calib_x[i:i + batch])

    return mtq.quantize(model, mtq.INT8_DEFAULT_CFG, forward_loop=forward_loop)
