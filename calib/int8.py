"""`facesleuth calib int8 MODEL --data SOURCE --out DIR`: INT8 calibration of the classifier.

1. Build a representative calibration set of model inputs and a held-out set (disjoint, seeded split)
   from SOURCE: `synth[:PRESET]` (the synthetic generator through the shared preprocessing), a sample
   file from `facesleuth synth samples` (onset/apex/labels), an .npz of model inputs (`x` (N, C, S, S)
   float32 and optional `y` (N,) labels), or `random` (structured noise: exercises the tooling only; its
   accuracy numbers mean nothing).
2. Where NVIDIA's tooling is installed (ModelOpt + Torch-TensorRT + CUDA), calibrate the frozen model
   with ModelOpt PTQ and build the TensorRT INT8 engine (DIR/model_int8.ep). Without it, say so in one
   line and go on.
3. On any machine: estimate the INT8 accuracy drop with fake quantisation (edge/model/quant.py) calibrated
   on the calibration set and measured on the held-out set.
Writes DIR/calib.npz (the calibration set, to repeat step 2 on the device) and DIR/int8_report.json.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edge.errors import Unavailable, UserError
from edge.progress import track
from edge.runtime.params import bounded

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


def load_inputs(source: str, rec: dict[str, Any], n: int, seed: int) -> tuple[np.ndarray, np.ndarray | None, str]:
    """Model inputs (N, C, S, S) float32, labels (N,) or None, and a description of the source."""
    cfg = rec["config"]
    shape = (cfg["in_chans"], cfg["img_size"], cfg["img_size"])
    if source == "random":
        g = np.random.default_rng(seed)
        x = g.standard_normal((n, *shape)).astype(np.float32)
        x *= g.uniform(0.1, 2.0, (n, shape[0], 1, 1)).astype(np.float32)  # per-sample scale like real flow
        return x, None, "random (structured noise; exercises the tooling, accuracy is meaningless)"
    if source == "synth" or source.startswith("synth:"):
        preset = source.partition(":")[2] or "lab200"
        try:
            from edge.data.synth import make_samples
        except ImportError:
            raise Unavailable("--data synth needs the synthetic generator (edge.data.synth)") from None
        onset, apex, meta = make_samples(n, preset=preset, seed=seed, progress=True)
        labels = np.array([m["label_index"] for m in meta], np.int64)
        return _preprocess(onset, apex, rec), labels, f"synthetic generator, preset {preset}, seed {seed}"
    path = Path(source)
    if not path.is_file():
        raise UserError(f"--data: {source!r} is neither random, synth[:PRESET] nor an existing .npz file")
    try:
        z = np.load(path, allow_pickle=False)
        keys = set(z.files)
    except (OSError, ValueError) as e:
        raise UserError(f"--data {path}: not a readable .npz ({e})") from None
    if "x" in keys:
        x = z["x"].astype(np.float32)
        if x.ndim != 4 or tuple(x.shape[1:]) != shape:
            raise UserError(f"--data {path}: x has shape {x.shape}, the model expects (N, {', '.join(map(str, shape))})")
        y = z["y"].astype(np.int64) if "y" in keys else None
        return x[:n], (None if y is None else y[:n]), f"model inputs from {path}"
    if {"onset", "apex"} <= keys:
        y = z["labels"].astype(np.int64)[:n] if "labels" in keys else None
        return _preprocess(z["onset"][:n], z["apex"][:n], rec), y, f"onset/apex samples from {path}"
    raise UserError(f"--data {path}: expected arrays x[, y] or onset, apex[, labels]; found {sorted(keys)}")


def _preprocess(onset: np.ndarray, apex: np.ndarray, rec: dict[str, Any]) -> np.ndarray:
    """Onset/apex crops -> model inputs with the SAME preprocessing the classify node uses."""
    from edge.data.preprocess import PreprocessSpec, model_input

    spec = PreprocessSpec.from_meta(rec["meta"])
    return np.stack([model_input(o, a, spec) for o, a in track(list(zip(onset, apex, strict=True)), "preprocess")])


def run(model_path: str | Path, source: str, out: str | Path, n: int = 512, heldout: float = 0.5,
        seed: int = 0, percentile: float = 99.99) -> dict[str, Any]:
    """Calibrate and estimate; returns the report that is also written to DIR/int8_report.json."""
    # torch here, not at the top: `facesleuth calib` imports every target's module for its --help, and
    # `calib spot` needs no torch (its argument checks answer within a second).
    import torch

    from edge.model.file import model_from_record, read_record
    from edge.model.quant import calibrate, compare, quantize_model

    if n < 8:
        raise UserError(f"--n must be >= 8, got {n}")
    if not 0.0 < heldout < 1.0:
        raise UserError(f"--heldout must be in (0, 1), got {heldout}")
    rec = read_record(model_path)
    model = model_from_record(rec).freeze()
    x, y, desc = load_inputs(source, rec, n, seed)
    if y is not None and (y.min() < 0 or y.max() >= len(model.classes)):
        raise UserError(f"labels out of range for {len(model.classes)} classes")
    order = np.random.default_rng(seed).permutation(len(x))
    k = max(1, int(round(len(x) * (1 - heldout))))
    cal_idx, held_idx = order[:k], order[k:]
    if len(held_idx) == 0:
        raise UserError("no held-out samples: raise --n or --heldout")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out / "calib.npz", x=x[cal_idx], **({} if y is None else {"y": y[cal_idx]}))
    cal = torch.from_numpy(x[cal_idx])
    batches = [cal[i:i + 32] for i in range(0, len(cal), 32)]
    ranges = calibrate(model, track(batches, "calibrate int8 ranges"), percentile)
    qmodel = quantize_model(model, ranges)
    est = compare(model, qmodel, torch.from_numpy(x[held_idx]), None if y is None else torch.from_numpy(y[held_idx]))
    report: dict[str, Any] = {
        "model": str(model_path), "model_id": rec["model_id"], "data": desc, "seed": seed,
        "n_calibration": len(cal_idx), "n_heldout": len(held_idx), "percentile": percentile,
        "fake_quant": est, "activation_amax": ranges, "tensorrt": None,
    }
    report["tensorrt"] = _tensorrt_int8(model, rec, cal, out)
    (out / "int8_report.json").write_text(json.dumps(report, indent=1))
    return report


def _tensorrt_int8(model: torch.nn.Module, rec: dict[str, Any], cal: torch.Tensor, out: Path) -> dict[str, Any]:
    """Real ModelOpt PTQ + TensorRT engine where the tooling exists; else the reason, logged once."""
    from edge.model.export import compile_tensorrt, tensorrt_available

    reason = tensorrt_available()
    if reason is None:
        try:
            import modelopt  # noqa: F401
        except ImportError:
            reason = "ModelOpt is not installed (pip install nvidia-modelopt)"
    if reason:
        log.warning("TensorRT INT8 calibration skipped: %s; the fake-quantisation estimate stands alone", reason)
        return {"built": False, "reason": reason}
    import torch_tensorrt

    trt_mod = compile_tensorrt(model, rec["config"], "int8", calib=cal.cuda())
    path = out / "model_int8.ep"
    torch_tensorrt.save(trt_mod, str(path), output_format="exported_program", arg_inputs=[cal[:1].cuda()])
    return {"built": True, "engine": str(path)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="model file")
    parser.add_argument("--data", required=True,
                        help="random | synth[:PRESET] | samples .npz (onset, apex, labels) | inputs .npz (x[, y])")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--n", type=int, default=512, help="samples in all (calibration + held-out)")
    parser.add_argument("--heldout", type=float, default=0.5, help="fraction held out for the estimate")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the samples drawn")
    parser.add_argument("--percentile", type=bounded(float, 0.0, 100.0), default=99.99, help="activation range percentile of |x|")


def main(args: argparse.Namespace) -> int:
    r = run(args.model, args.data, args.out, args.n, args.heldout, args.seed, args.percentile)
    fq = r["fake_quant"]
    acc = (f", accuracy {fq['accuracy_fp32']:.3f} -> {fq['accuracy_int8']:.3f} (drop {fq['accuracy_drop']:+.3f})"
           if "accuracy_drop" in fq else "")
    print(f"int8 estimate on {fq['n']} held-out samples: top-1 agreement {fq['top1_agreement']:.3f}, "
          f"max |dp| {fq['max_abs_prob_diff']:.3g}{acc}")
    print("tensorrt: " + (f"engine {r['tensorrt']['engine']}" if r["tensorrt"]["built"]
                          else f"not built ({r['tensorrt']['reason']})"))
    print(f"report: {Path(args.out) / 'int8_report.json'}")
    return 0
