"""`facesleuth eval spotting`: the spotting path on the long-video datasets, scored by the MEGC rule.

    facesleuth eval spotting --dataset casme2_lv --root /data/CASME2_LV --dataset samm_lv --root /data/SAMM_LV \\
        --lodo --jobs 4 --cache runs/spotcache --out runs/spotting --json runs/spotting.json

Every long video runs once through the face, flow and spot nodes (record.py, cached per video); its
recording is replayed with the shipped params (`defaults`) and with each setting of the calibration grid,
from which `loso` (and with two or more datasets and `--lodo`, `lodo`) thresholds are chosen without the
test video (thresholds.py). Scores: edge.data.longvideo.score (MEGC rule: IoU >= 0.5 on inclusive frame
ranges, one match per ground truth and per spotted interval, TP / FP / FN pooled over videos), per mode,
dataset and kind. Protocol, caveats and published anchors: docs/spotting-datasets.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import time
from pathlib import Path
from typing import Any

from edge.data.longvideo import DATASETS, LongVideo, load
from edge.data.longvideo.score import Spotted, VideoScore, pool, score_video, table_rows
from edge.errors import UserError
from edge.jsonout import JsonOut, add_json_argument
from edge.perception.spot import SpotParams
from edge.table import format_table

log = logging.getLogger(__name__)

MODES = ("defaults", "loso", "lodo")
TABLE_COLUMNS = ("mode", "dataset", "kind", "TP", "FP", "FN", "precision", "recall", "F1")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", action="append", default=[], metavar="NAME",
                   help=f"long-video dataset ({', '.join(DATASETS)}); repeat with one --root each")
    p.add_argument("--root", action="append", default=[], type=Path, metavar="DIR",
                   help="the dataset's folder in its official layout (the n-th --root goes with the n-th --dataset)")
    p.add_argument("--cache", type=Path, help="recordings cache (default: $FACESLEUTH_CACHE/spotting, "
                                              "~/.cache/facesleuth/spotting)")
    p.add_argument("--no-cache", action="store_true", help="record every video again and keep nothing")
    p.add_argument("--jobs", type=int, default=1, help="processes recording videos and replaying thresholds")
    p.add_argument("--grid", action="append", default=[], metavar="KNOB=V1,V2,...",
                   help="values to try for one calibration knob in the loso / lodo fits (repeatable; "
                        "default: calib spot's grid)")
    p.add_argument("--lodo", action="store_true", help="also leave one dataset out (two or more datasets)")
    p.add_argument("--out", type=Path, default=Path("eval_spotting"), help="folder for the table and the PNGs")
    add_json_argument(p, "the full report as one JSON document")
    p.add_argument("--no-png", action="store_true", help="no per-video PNG")
    p.add_argument("--strs", nargs="?", const="", metavar="MODEL|loso",
                   help="also STRS: label the spotted true positives and score spot-then-recognise; alone: with "
                        "the shipped weights; MODEL: with that composite-class model file; loso: with one "
                        "classifier per held-out subject, trained on the dataset's other subjects")
    p.add_argument("--quiet", action="store_true", help="no progress lines")


def check_args(args: argparse.Namespace) -> None:
    """Every argument checked before any video is read."""
    from calib.spot import parse_grid
    from edge.extras import require

    if not args.dataset:
        raise UserError("give --dataset NAME --root DIR (one pair per dataset)")
    bad = [d for d in args.dataset if d not in DATASETS]
    if bad:
        raise UserError(f"unknown long-video dataset {bad[0]!r}; known: {', '.join(DATASETS)}")
    if len(args.dataset) != len(args.root):
        raise UserError(f"{len(args.dataset)} --dataset but {len(args.root)} --root: give one --root per dataset")
    if len(set(args.dataset)) != len(args.dataset):
        raise UserError("a dataset is named twice")
    if args.lodo and len(args.dataset) < 2:
        raise UserError("--lodo needs two or more datasets (thresholds fitted on the others)")
    if args.jobs < 1:
        raise UserError("--jobs: must be >= 1")
    for flag, path in (("--out", args.out), ("--cache", args.cache)):
        if path is not None and path.is_file():
            raise UserError(f"{flag} {path}: is a file (a folder is made there)")
    args.json_out = JsonOut(args.json)  # a FILE that cannot be written is refused here, before any video
    args.grid_values = parse_grid(args.grid)
    if not args.no_png:
        require("eval spotting", "train", "matplotlib")
    args.labeller = None
    if args.strs is not None:
        from edge.spotting_eval.strs import LOSO, open_labeller

        # loso: the shipped weights open here too, for a subject whose dataset has no one else to learn from
        args.labeller = open_labeller(None if args.strs in ("", LOSO) else args.strs)


def load_all(names: list[str], roots: list[Path]) -> list[LongVideo]:
    """Every dataset's videos, each checked against its frames (the loaders' one-line errors)."""
    videos = []
    for name, root in zip(names, roots, strict=True):
        got = load(name, root)
        for v in got:
            v.check_intervals()
        videos += got
    return videos


def cache_dir(args: argparse.Namespace) -> Path | None:
    if args.no_cache:
        return None
    if args.cache is not None:
        return args.cache
    from edge.data.preprocess import default_cache_dir

    return default_cache_dir().parent / "spotting"


def _spot_doc(s: Spotted) -> list:
    return [s.kind, s.onset, s.offset, round(s.score, 2)]


def _fold_doc(fold, recordings) -> dict[str, Any]:
    return {"held_out": fold.name, "test_videos": [recordings[i].video.key for i in fold.test],
            # what the fit step read: the recordings of these frame folders (never the held-out ones)
            "fit_folders": [str(recordings[i].video.folder) for i in fold.train],
            "setting": fold.setting, "fit": fold.fit, "fallback": fold.fallback}


def main(args: argparse.Namespace) -> int:
    from edge.spotting_eval.record import pipeline_key, record_all
    from edge.spotting_eval.thresholds import fit_folds, replay_all, spots_of

    check_args(args)
    videos = load_all(args.dataset, args.root)  # bad trees and sheets are one line here, before any work
    t0 = time.monotonic()
    recordings, frames_read = record_all(videos, cache_dir(args), args.jobs, progress=not args.quiet)
    t_record = time.monotonic() - t0
    defaults = SpotParams()  # the spot node's params in configs/video.yaml: the shipped defaults, no file
    rep = replay_all(recordings, defaults, args.grid_values, args.jobs, progress=not args.quiet)
    modes: dict[str, list[list[Spotted]]] = {"defaults": rep.default_spots}
    folds: dict[str, list] = {}
    for kind in ("loso", "lodo") if args.lodo else ("loso",):
        folds[kind] = fit_folds(rep, recordings, kind)
        modes[kind] = spots_of(rep, folds[kind])
    scored: dict[str, list[VideoScore]] = {m: [score_video(r.video, s) for r, s in zip(recordings, spots, strict=True)]
                                           for m, spots in modes.items()}
    rows = [{"mode": m, **row} for m, vs in scored.items() for row in table_rows(pool(vs))]
    table = format_table(rows, TABLE_COLUMNS)
    strs_doc = None
    if args.labeller is not None:
        from edge.spotting_eval.strs import LOSO, label_matches

        strs_doc = label_matches(recordings, scored, args.labeller, progress=not args.quiet,
                                 loso=args.strs == LOSO, out_dir=args.out)
        strs_rows = [{"mode": m, "dataset": name, **v} for m, per in strs_doc["modes"].items()
                     for name, v in per.items()]
        table += "\n\n" + format_table(strs_rows, ("mode", "dataset", "spot_f1", "recognition_uf1", "n", "strs"))
    notes = [f"{kind} {f.name}: {f.fallback}" for kind, fs in folds.items() for f in fs if f.fallback]
    notes += [f"strs {f['held_out']}: {f['fallback']}" for f in (strs_doc or {}).get("folds", []) if f["fallback"]]
    if notes:
        table += "\n\n" + "\n".join(notes)

    args.out.mkdir(parents=True, exist_ok=True)
    pngs: list[Path | None] = [None] * len(recordings)
    if not args.no_png:
        from edge.spotting_eval.plot import plot_video

        for i, r in enumerate(recordings):
            name = f"{r.video.dataset}_{r.video.subject}_{r.video.video}.png".replace("/", "_")
            pngs[i] = plot_video(args.out / name, r.video, r.numbers, rep.traces[i], defaults,
                                 {m: modes[m][i] for m in modes})
    (args.out / "summary.txt").write_text(table + "\n")
    report = {
        "protocol": "MEGC: IoU >= 0.5 on inclusive frame ranges, one match per ground truth and per spotted "
                    "interval, micro against micro and macro against macro, TP/FP/FN pooled over videos",
        "datasets": [{"name": n, "root": str(root), "videos": sum(v.dataset == n for v in videos),
                      "subjects": len({v.subject for v in videos if v.dataset == n})}
                     for n, root in zip(args.dataset, args.root, strict=True)],
        "pipeline": pipeline_key(), "defaults": dataclasses.asdict(defaults),
        "grid": {k: list(v) for k, v in args.grid_values.items()}, "settings": len(rep.settings),
        "frames_read": frames_read, "record_s": round(t_record, 2),
        "recorded": sum(r.source == "recorded" for r in recordings),
        "from_cache": sum(r.source == "cache" for r in recordings),
        "scores": {m: {name: {k: c.as_dict() for k, c in kinds.items()} for name, kinds in pool(vs).items()}
                   for m, vs in scored.items()},
        "folds": {kind: [_fold_doc(f, recordings) for f in fs] for kind, fs in folds.items()},
        "strs": strs_doc,
        "videos": [{"key": r.video.key, "folder": str(r.video.folder), "frames": len(r.numbers), "fps": r.video.fps,
                    "source": r.source, "png": str(pngs[i]) if pngs[i] else None,
                    "truth": [[iv.kind, iv.onset, iv.offset] for iv in r.video.intervals],
                    "spotted": {m: [_spot_doc(s) for s in modes[m][i]] for m in modes},
                    "counts": {m: scored[m][i].overall.__dict__ for m in modes}}
                   for i, r in enumerate(recordings)],
    }
    out: JsonOut = args.json_out
    out.document(report)
    # `--json` alone: stdout carries the JSON only, so the table goes to stderr (the dialect of edge/jsonout.py)
    text = sys.stdout if out.text else sys.stderr
    print(table, file=text)
    n_png = sum(p is not None for p in pngs)
    print(f"eval spotting: {len(recordings)} videos ({report['from_cache']} from the cache, {frames_read} frames "
          "recorded),"
          f" {len(rep.settings)} threshold settings; table {args.out / 'summary.txt'}"
          + (f", {n_png} PNGs in {args.out}" if n_png else "") + (f", report {out.path}" if out.path else ""),
          file=text)
    return 0
