"""`facesleuth calib TARGET`: one module per target in this package, each with `add_arguments(parser)`
and `main(args) -> int` (the same pattern as `facesleuth bench`). A new target is a module + one line."""

from __future__ import annotations

import argparse
import importlib

TARGETS: dict[str, str] = {
    "int8": "INT8 calibration of the classifier for TensorRT, and the fake-quantised accuracy drop",
    "spot": "fit spotting thresholds on labelled clips",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="target", metavar="TARGET", required=True)
    for name, help_ in TARGETS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        importlib.import_module(f"calib.{name}").add_arguments(p)


def main(args: argparse.Namespace) -> int:
    return int(importlib.import_module(f"calib.{args.target}").main(args) or 0)
