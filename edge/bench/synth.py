"""`facesleuth bench synth`: how fast the synthetic source makes training pairs and live frames.

Targets: 1000 training samples well under a minute on one core; a 640x480 live frame in < 15 ms
(30 fps on one core, leaving headroom for the capture node's own work).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from edge.bench.report import emit
from edge.data.domains import DOMAINS
from edge.runtime.params import bounded

FRAME_TARGET_MS = 15.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--samples", type=bounded(int, 1), default=300, help="training pairs per preset")
    parser.add_argument("--frames", type=bounded(int, 1), default=150, help="live frames per preset and face count")
    parser.add_argument("--presets", default="lab200,webcam30", help="comma-separated presets")
    parser.add_argument("--faces", default="1,3", help="comma-separated faces-per-frame counts")


def main(args: argparse.Namespace) -> int:
    from edge.data import synth
    from edge.errors import UserError

    presets = [p for p in args.presets.split(",") if p]
    unknown = [p for p in presets if p not in DOMAINS]
    if unknown:
        raise UserError(f"unknown preset(s) {unknown}; known: {', '.join(DOMAINS)}")
    rows = []
    for preset in presets:
        t0 = time.perf_counter()
        synth.make_samples(args.samples, preset, seed=0)
        dt = time.perf_counter() - t0
        rows.append({"what": "samples", "preset": preset, "faces": "", "n": args.samples,
                     "per_item_ms": 1e3 * dt / args.samples, "p95_ms": None,
                     "rate_per_s": args.samples / dt, "s_per_1000": 1000 * dt / args.samples, "target": "< 60 s/1000"})
        for n_faces in (int(f) for f in args.faces.split(",") if f):
            video = synth.SyntheticVideo(preset, seed=0, duration_s=args.frames / 30.0, fps=30.0, faces=n_faces)
            times = []
            for k in range(len(video)):
                t0 = time.perf_counter()
                video.frame(k)
                times.append(time.perf_counter() - t0)
            ms = 1e3 * np.asarray(times)
            rows.append({"what": "frame 640x480", "preset": preset, "faces": n_faces, "n": len(times),
                         "per_item_ms": float(ms.mean()), "p95_ms": float(np.percentile(ms, 95)),
                         "rate_per_s": float(1e3 / ms.mean()), "s_per_1000": float(ms.sum() / len(ms)),
                         "target": f"< {FRAME_TARGET_MS:g} ms"})
    emit("synthetic source speed (one process)", rows, args.json,
         columns=["what", "preset", "faces", "n", "per_item_ms", "p95_ms", "rate_per_s", "target"])
    return 0
