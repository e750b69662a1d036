"""`facesleuth calib spot CLIPS... --out FILE`: fit the spotting thresholds on labelled clips.

CLIPS are .avi files or folders of them, each with its JSON ground truth next to it (as written by
`facesleuth synth clips`: {"fps": ..., "intervals": [{"kind", "onset", "apex", "offset", ...}]}). Every
clip runs once through the face, flow and spot nodes (the spotter's input recorded); then a grid over the thresholds
(k_on, k_off, return_frac, k_bump) replays the cached features through the spotter and keeps the setting
with the best micro F1 (MEGC rule, IoU >= 0.5), ties broken by fewer false micro events, then by the larger k_on
and k_bump (the more conservative thresholds generalise better to footage nobody calibrated on).

The output is the JSON the spot node reads (`params_file`): {"params": {...}, "fit": {...}}.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import itertools
import json
import logging
import math
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from edge.errors import UserError
from edge.perception.spot import SpotParams
from edge.progress import Progress
from edge.runtime.params import bounded

log = logging.getLogger(__name__)

GRID = {
    "k_on": (3.5, 4.0, 4.5, 5.0, 6.0, 7.0),
    "k_off": (2.0, 2.5, 3.0),
    "return_frac": (0.4, 0.5, 0.6),
    "k_bump": (5.0, 5.5, 6.5),
}


def video_clip(avi: Path):
    """A recorded clip with its ground truth (the JSON next to it) as `extract` reads it."""
    from edge.bench.clips import VideoFile

    truth = avi.with_suffix(".json")
    if not truth.exists():
        raise UserError(f"{avi}: no ground truth {truth.name} next to it")
    try:
        doc = json.loads(truth.read_text())
        intervals, fps = list(doc["intervals"]), float(doc["fps"])
    except (ValueError, KeyError, TypeError) as e:
        raise UserError(f"{truth}: not a ground-truth JSON with 'fps' and 'intervals' ({e})") from None
    return VideoFile(avi, fps, intervals)


def find_clips(paths: list[str]) -> list[Path]:
    """The .avi files named or inside the folders named (sorted); UserError when there are none."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(p.glob("*.avi"))
        elif p.suffix == ".avi" and p.exists():
            out.append(p)
        else:
            raise UserError(f"{p}: not an .avi file or a folder of them")
    if not out:
        raise UserError(f"no .avi clips in {', '.join(paths)}")
    return out


_CLIPS: list = []  # a grid worker's copy of the clips (set once per process by _init)


def check_long_enough(videos: list, params: SpotParams, lag: int) -> None:
    """UserError (one line) naming the clips too short to fill the spotter's noise window: on them it never
    sees its steady state, so thresholds fitted there say nothing about a live graph. Checked on the frame
    counts the files declare, before any frame is decoded."""
    short = []
    for v in videos:
        needed = math.ceil(params.noise_window_s * v.fps) + lag  # the first flow needs `lag` frames behind it
        if 0 < v.n_frames < needed:
            short.append((v, needed))
    if short:
        v, needed = short[0]
        more = f" (and {len(short) - 1} more clip(s))" if len(short) > 1 else ""
        raise UserError(f"{v.path}: {v.n_frames} frames ({v.n_frames / v.fps:.1f} s at {v.fps:g} fps) is too short "
                        f"for the spotter's {params.noise_window_s:g} s noise window: it needs at least {needed} "
                        f"frames (window + {lag}-frame flow lag){more}; give longer clips")


def _init(clips: list) -> None:
    _CLIPS[:] = clips


def _score(p: SpotParams) -> dict:
    from edge.bench.clips import spot_clip
    from edge.bench.spotting import score

    return score(_CLIPS, [spot_clip(c, p) for c in _CLIPS])


def grid_settings(grid: dict[str, tuple], base: SpotParams) -> list[dict]:
    """Every combination of the grid's values, less those with k_off above k_on."""
    settings = [dict(zip(grid, values, strict=True)) for values in itertools.product(*grid.values())]
    return [v for v in settings if v.get("k_off", base.k_off) <= v.get("k_on", base.k_on)]


def fit(clips: list, base: SpotParams, grid: dict[str, tuple] | None = None,
        progress: Progress | None = None) -> tuple[SpotParams, dict]:
    """Grid search over `grid` on cached clips (edge.bench.spotting.Clip). Returns (params, fit report).
    The settings are scored in parallel, one process per core (each replays every clip once per setting)."""
    settings = grid_settings(grid or GRID, base)
    params = [dataclasses.replace(base, **v) for v in settings]
    workers = min(len(params), os.cpu_count() or 1, 8)
    # spawn, not fork: the caller may hold OpenCV / torch threads, which a forked child would inherit dead.
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_init,
                               initargs=(clips,)) if workers > 1 else None
    if pool is None:
        _init(clips)
    with pool or contextlib.nullcontext():
        scores = []
        for s in (pool.map if pool else map)(_score, params):
            scores.append(s)
            if progress is not None:
                progress.update(1)
    i = choose(params, scores)
    return params[i], {"micro_f1": scores[i]["f1"], "tp": scores[i]["tp"], "fp": scores[i]["fp"],
                       "fn": scores[i]["fn"], "fp_per_min": scores[i]["fp_per_min"], "tried": len(params)}


def choose(params: list[SpotParams], scores: list[dict]) -> int:
    """The index of the setting `fit` keeps: the best micro F1, then the fewest false micro events, then
    the larger k_on and k_bump (`eval spotting` chooses its held-out thresholds with this too)."""
    keys = [(round(s["f1"], 4), -s["fp"], p.k_on, p.k_bump) for p, s in zip(params, scores, strict=True)]
    return max(range(len(keys)), key=lambda i: (keys[i], -i))  # the first of equal keys, as before


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("clips", nargs="+", help=".avi clips (JSON ground truth next to each) or folders")
    parser.add_argument("--out", required=True, help="params file to write (JSON, read by the spot node)")
    parser.add_argument("--lag", type=bounded(int, 1), default=3, help="flow lag, frames (as the graph's flow node)")
    parser.add_argument("--backend", default="auto", help="flow backend (as the graph's flow node; default auto)")
    parser.add_argument("--grid", action="append", default=[], metavar="KNOB=V1,V2,...",
                        help="values to try for one of the grid's knobs instead of the default ones (repeatable; "
                             f"default grid: {_grid_text(GRID)})")


def _grid_text(grid: dict[str, tuple]) -> str:
    return "; ".join(k + "=" + ",".join(str(v) for v in values) for k, values in grid.items())


def parse_grid(items: list[str]) -> dict[str, tuple]:
    """GRID with the `--grid KNOB=V1,V2` overrides applied (one UserError line for a bad one)."""
    grid = dict(GRID)
    for item in items:
        name, sep, values = item.partition("=")
        if not sep or name not in GRID:
            raise UserError(f"--grid {item!r}: expected KNOB=V1,V2,... with KNOB one of {', '.join(GRID)}")
        try:
            grid[name] = tuple(float(v) for v in values.split(","))
        except ValueError:
            raise UserError(f"--grid {item!r}: the values must be numbers separated by commas") from None
    if not grid_settings(grid, SpotParams()):
        raise UserError(f"--grid: no setting left ({_grid_text(grid)}): every k_off is above every k_on")
    return grid


def main(args: argparse.Namespace) -> int:
    from edge.bench.clips import extract

    if args.lag < 1:
        raise UserError(f"--lag: must be >= 1 (frames), got {args.lag}")
    grid = parse_grid(args.grid)
    paths = find_clips(args.clips)
    videos = [video_clip(p) for p in paths]
    check_long_enough(videos, SpotParams(), args.lag)
    with Progress(sum(v.n_frames for v in videos), "calib spot: face+flow") as prog:
        clips = [extract(v, args.lag, args.backend, baseline=False, progress=prog) for v in videos]
    n_micro = sum(1 for c in clips for t in c.truth if t.get("kind") == "micro")
    if n_micro == 0:
        raise UserError("the clips' ground truth has no micro intervals: nothing to fit")
    # The grid replays every clip once per setting (162 by default): minutes on long clips, so it shows progress.
    with Progress(len(grid_settings(grid, SpotParams())), "calib spot: threshold grid") as prog:
        params, report = fit(clips, SpotParams(), grid, progress=prog)
    report.update({"clips": [str(p) for p in paths], "micro_intervals": n_micro, "lag": args.lag,
                   "backend": args.backend, "grid": {k: list(v) for k, v in grid.items()}})
    params.save(args.out, fit=report)
    print(f"calib spot: micro F1 {report['micro_f1']:.3f} (TP {report['tp']}, FP {report['fp']}, "
          f"FN {report['fn']}) with k_on={params.k_on} k_off={params.k_off} return_frac={params.return_frac}"
          f" k_bump={params.k_bump} -> {args.out}")
    return 0 if np.isfinite(report["micro_f1"]) else 1
