"""`facesleuth export MODEL --backend B --out F`: its arguments, checked before torch is imported
(edge.model.export does the work)."""

from __future__ import annotations

import argparse
from pathlib import Path

from edge.errors import UserError

BACKENDS = ("torchscript", "exported", "onnx", "tensorrt")
PRECISIONS = ("fp32", "fp16", "int8")


def check_export(backend: str, precision: str) -> None:
    """UserError unless `backend` and `precision` name an export this project makes."""
    if backend not in BACKENDS:
        raise UserError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    if precision not in PRECISIONS:
        raise UserError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    if precision != "fp32" and backend != "tensorrt":
        raise UserError(f"--precision {precision} needs --backend tensorrt ({backend} exports fp32)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", type=Path, help="model file (.pt, from training or save_model)")
    parser.add_argument("--backend", required=True, choices=BACKENDS,
                        help="torchscript, exported (torch.export .pt2), onnx, or tensorrt (CUDA only)")
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS, help="TensorRT precision")
    parser.add_argument("--out", required=True, type=Path, help="output file")


def main(args: argparse.Namespace) -> int:
    if not args.model.is_file():
        raise UserError(f"model file not found: {args.model}")
    check_export(args.backend, args.precision)
    if args.out.is_dir():
        raise UserError(f"--out {args.out}: is a directory, not a file path")
    from edge.model.export import export_model

    res = export_model(args.model, args.backend, args.out, args.precision)
    print(f"{res['backend']} ({res['precision']}) export of {res['model_id']} -> {res['out']} "
          f"(max rel. difference to PyTorch {res['max_diff']:.2g})")
    return 0
