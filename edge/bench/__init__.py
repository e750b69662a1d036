"""`facesleuth bench TARGET`: benchmarks are commands that print a table and write JSON.

Each target is a module in this package with `add_arguments(parser)` and `main(args) -> int`,
and reports through `edge.bench.report`.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import tempfile
from pathlib import Path

from edge.jsonout import JsonOut, add_json_argument, text_to_stderr

TARGETS: dict[str, str] = {
    "transport": "transport throughput and latency vs multiprocessing.Queue and memcpy",
    "classifier": "SOA classifier latency/throughput per runtime vs the reference-shaped baseline",
    "flow": "optical flow backends: time and end-point error on known warps vs TV-L1",
    "face": "face detection + tracking + alignment fps",
    "pipeline": "end-to-end pipeline: fps, drops, event latency, CPU and memory per node",
    "spotting": "spotting F1 and false events vs a plain baseline",
    "real": "spotting on annotated real footage: false micro events on blinks, speech, occlusion; blinks recognised",
    "faults": "seeded kill -9, SIGSTOP, disk-full and read-only faults in the batch job: events lost, duplicated, hung",
    "synth": "synthetic source: training samples/s and live frame render time per preset",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = "targets: " + "; ".join(f"{k}: {v}" for k, v in TARGETS.items())
    parser.add_argument("target", choices=list(TARGETS), help="what to benchmark (see below)")
    parser.add_argument("rest", nargs=argparse.REMAINDER, help="the target's options (TARGET --help)")


def main(args: argparse.Namespace) -> int:
    # Only the chosen target's module is imported (each has its own, sometimes heavy, dependencies).
    module = importlib.import_module(f"edge.bench.{args.target}")
    from edge.cli import Parser  # the CLI's dialect: one-line errors, defaults in --help

    p = Parser(prog=f"facesleuth bench {args.target}", description=TARGETS[args.target])
    add_json_argument(p, "the results as one JSON document")
    module.add_arguments(p)
    sub = p.parse_args(args.rest)
    sub.verbose = getattr(args, "verbose", False)
    out = JsonOut(sub.json)
    if not out.to_stdout:
        return int(module.main(sub) or 0)
    # Every target writes its JSON to the file named by `json`: here a temporary one, copied to stdout
    # once the target is done, while its table (and what the processes it starts print) goes to stderr.
    fd, tmp = tempfile.mkstemp(prefix="facesleuth-bench-", suffix=".json")
    os.close(fd)
    sub.json = tmp
    try:
        with text_to_stderr():
            rc = int(module.main(sub) or 0)
        sys.stdout.write(Path(tmp).read_text())
        sys.stdout.flush()
    finally:
        os.unlink(tmp)
    return rc
