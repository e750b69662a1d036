"""`facesleuth bench TARGET`: benchmarks are commands that print a table and write JSON.

Each target is a module in this package with `add_arguments(parser)` and `main(args) -> int`,
and reports through `edge.bench.report`.
"""

from __future__ import annotations

import argparse
import importlib

TARGETS: dict[str, str] = {
    "transport": "transport throughput and latency vs multiprocessing.Queue and memcpy",
    "classifier": "SOA classifier latency/throughput per runtime vs the reference-shaped baseline",
    "flow": "optical flow backends: time and end-point error on known warps vs TV-L1",
    "face": "face detection + tracking + alignment fps",
    "pipeline": "end-to-end pipeline: fps, drops, event latency, CPU and memory per node",
    "spotting": "spotting F1 and false events vs a plain baseline",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="target", metavar="TARGET", required=True)
    for name, help_ in TARGETS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        p.add_argument("--json", metavar="FILE", help="also write the results as JSON to FILE")
        importlib.import_module(f"edge.bench.{name}").add_arguments(p)


def main(args: argparse.Namespace) -> int:
    return int(importlib.import_module(f"edge.bench.{args.target}").main(args) or 0)
