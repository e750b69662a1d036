"""`facesleuth synth`: synthetic training samples (.npz) and clips (MJPG .avi + JSON ground truth)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from edge.data.domains import DOMAINS
from edge.data.emotions import CLASS_SETS
from edge.errors import UserError

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="what", metavar="WHAT", required=True)
    s = sub.add_parser("samples", help="onset/apex pairs of aligned 128-px grey crops as one .npz")
    s.add_argument("--out", required=True, type=Path, help="output .npz file")
    s.add_argument("--n", type=int, default=1000, help="number of samples")
    s.add_argument("--class-set", default="composite", choices=sorted(CLASS_SETS), help="label set of the samples")
    s.add_argument("--subjects", type=int, default=12, help="synthetic subjects (for LOSO)")
    c = sub.add_parser("clips", help="video clips (MJPG .avi) with a JSON ground truth each")
    c.add_argument("--out", required=True, type=Path, help="output folder")
    c.add_argument("--n", type=int, default=3, help="number of clips")
    c.add_argument("--duration", type=float, default=20.0, help="clip length, s")
    c.add_argument("--faces", type=int, default=1, help="faces per frame")
    c.add_argument("--fps", type=float, default=None, help="frame rate (default: the preset's)")
    c.add_argument("--size", default="640x480", help="frame size WxH")
    for p in (s, c):
        p.add_argument("--preset", default="webcam30", choices=sorted(DOMAINS), help="capture domain")
        p.add_argument("--seed", type=int, default=0, help="random seed")
        p.add_argument("--faces-dir", type=Path, default=None, help="folder of face photographs (default: built-in)")


def main(args: argparse.Namespace) -> int:
    from edge.data import synth

    if args.n < 1:
        raise UserError(f"--n must be >= 1, got {args.n}")
    if args.what == "samples":
        if args.out.suffix != ".npz":
            raise UserError(f"--out must name a .npz file, got {args.out}")
        if args.subjects < 1:  # the samples are drawn from this many faces
            raise UserError(f"--subjects must be >= 1, got {args.subjects}")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        onset, apex, meta = synth.make_samples(args.n, args.preset, args.seed, args.class_set, args.subjects,
                                               args.faces_dir, progress=True)
        synth.save_samples(args.out, onset, apex, meta)
        print(f"wrote {args.n} samples ({args.preset}, {args.class_set}) to {args.out}")
        return 0
    try:
        w, h = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        raise UserError(f"--size must look like 640x480, got {args.size!r}") from None
    args.out.mkdir(parents=True, exist_ok=True)
    for i in range(args.n):
        video = synth.SyntheticVideo(args.preset, seed=args.seed + i, duration_s=args.duration, width=w, height=h,
                                     faces=args.faces, fps=args.fps, faces_dir=args.faces_dir)
        doc = synth.write_clip(video, args.out / f"{args.preset}_{args.seed + i:04d}.avi", progress=True)
        print(f"wrote {args.out / doc['video']}: {doc['n_frames']} frames @ {doc['fps']:g} fps, "
              f"{len(doc['intervals'])} intervals")
    return 0
