"""`facesleuth bench flow`: time and end-point error of every flow backend on known warps, vs TV-L1.

The images are a real face photograph (skimage's astronaut) as a 128x128 aligned crop, warped by known
fields (edge.bench.flowfields.known_field: brow raise, lip-corner pull, rigid shift), clean and with
sigma = 2 grey levels of Gaussian noise on both frames. EPE = mean end-point error (px) inside the
field's ROIs (the inner crop for the shift); gain = the share of the true motion the estimate sees
(edge.bench.flowfields.motion_gain). The baseline is TV-L1, the MER literature's standard, at OpenCV's
defaults (`tvl1 cv-defaults`), and the tuned TV-L1 default; each row gives its ratio to both. The
measurements behind edge.perception.flow's defaults are in docs/flow.md.
"""

from __future__ import annotations

import argparse
import logging

import cv2
import numpy as np

from edge.bench import flowfields as FF
from edge.bench.report import emit
from edge.errors import Unavailable
from edge.perception import flow as F
from edge.progress import Progress
from edge.runtime.params import bounded

log = logging.getLogger(__name__)

FIELDS = ("brow_raise", "lip_corner_pull", "shift")
# (label, backend, params). The first two are the baselines.
CONFIGS: list[tuple[str, str, dict]] = [
    ("tvl1 cv-defaults", "tvl1", dict(F.TVL1Flow.OPENCV_DEFAULTS)),
    ("tvl1 default", "tvl1", {}),
    # DIS's MEDIUM preset values (finest scale 1): what a user gets from DISOpticalFlow_create(MEDIUM).
    ("dis preset-medium", "dis", {"finest_scale": 1, "patch_stride": 3, "gd_iterations": 25,
                                  "var_iterations": 5}),
    ("dis default", "dis", {}),
    ("farneback win9", "farneback", {"winsize": 9, "poly_n": 5, "poly_sigma": 1.1}),
    ("farneback default", "farneback", {}),
    ("cuda_tvl1 default", "cuda_tvl1", {}),
    ("cuda_farneback default", "cuda_farneback", {}),
    ("nvof grid1 slow", "nvof", {"grid": 1, "perf": "slow"}),
    ("nvof grid4 slow", "nvof", {"grid": 4, "perf": "slow"}),
]
TARGET_MS, TARGET_CLEAN, TARGET_NOISY = 2.0, 0.15, 0.25


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repeats", type=bounded(int, 1), default=5, help="timed calls per case (median reported)")
    parser.add_argument("--seeds", type=bounded(int, 1), default=3, help="noise draws averaged per noisy case")
    parser.add_argument("--size", type=bounded(int, 32), default=128, help="crop side, px")
    parser.add_argument("--threads", type=bounded(int, 0), default=0,
                        help="cv2.setNumThreads (0: OpenCV's choice)")
    parser.add_argument("--only", nargs="*", default=None, help="labels or backend names to run")


def run(repeats: int = 5, seeds: int = 3, size: int = 128, only: list[str] | None = None,
        ) -> tuple[list[dict], dict[str, str]]:
    """All rows (config, field, noise, ms, epe, gain, ratios) and {label: reason} for the unavailable ones."""
    img = FF.face_crop(size)
    cases = []
    for kind in FIELDS:
        truth = FF.known_field(kind, size)
        cases.append((kind, truth, FF.region_mask(kind, size), FF.warp_by_flow(img, truth)))
    configs = [c for c in CONFIGS if not only or c[0] in only or c[1] in only]
    rows, missing = [], {}
    with Progress(len(configs) * len(cases), "bench flow") as prog:
        for label, backend, params in configs:
            try:
                flow = F.create_flow(backend, **params)
                flow.calc(img, img)  # probe: the GPU may still refuse (nvof on a GPU without the engine)
            except Unavailable as e:
                missing[label] = str(e)
                prog.update(len(cases))
                continue
            for kind, truth, mask, nxt in cases:
                est, ms = FF.time_calc(flow, img, nxt, repeats)
                rows.append(dict(config=label, field=kind, noise=0.0, ms=ms,
                                 epe=FF.end_point_error(est, truth, mask), gain=FF.motion_gain(est, truth, mask)))
                rng = np.random.default_rng(0)
                noisy = [flow.calc(FF.add_noise(img, 2.0, rng), FF.add_noise(nxt, 2.0, rng)) for _ in range(seeds)]
                rows.append(dict(config=label, field=kind, noise=2.0, ms=ms,
                                 epe=float(np.mean([FF.end_point_error(e, truth, mask) for e in noisy])),
                                 gain=float(np.mean([FF.motion_gain(e, truth, mask) for e in noisy]))))
                prog.update(1, config=label)
    base = {(r["field"], r["noise"]): r for r in rows if r["config"] == "tvl1 cv-defaults"}
    tuned = {(r["field"], r["noise"]): r for r in rows if r["config"] == "tvl1 default"}
    for r in rows:
        key = (r["field"], r["noise"])
        r["epe/tvl1cv"] = r["epe"] / base[key]["epe"] if key in base else None
        r["epe/tvl1"] = r["epe"] / tuned[key]["epe"] if key in tuned else None
        r["speedup_vs_tvl1cv"] = base[key]["ms"] / r["ms"] if key in base else None
    return rows, missing


def summary(rows: list[dict]) -> list[dict]:
    """Per config: brow-raise EPE clean/noisy, mean ms, and whether the CPU-default targets are met."""
    out = []
    for label in dict.fromkeys(r["config"] for r in rows):
        br = {r["noise"]: r for r in rows if r["config"] == label and r["field"] == "brow_raise"}
        ms = float(np.mean([r["ms"] for r in rows if r["config"] == label]))
        if 0.0 not in br or 2.0 not in br:
            continue
        ok = ms <= TARGET_MS and br[0.0]["epe"] <= TARGET_CLEAN and br[2.0]["epe"] <= TARGET_NOISY
        out.append(dict(config=label, ms=ms, brow_clean=br[0.0]["epe"], brow_noisy=br[2.0]["epe"],
                        brow_gain=br[0.0]["gain"], targets="met" if ok else "missed"))
    return out


def main(args: argparse.Namespace) -> int:
    if args.threads:
        cv2.setNumThreads(args.threads)
    rows, missing = run(args.repeats, args.seeds, args.size, args.only)
    summ = summary(rows)
    extra = {"unavailable": missing,
             "targets": f"default CPU backend <= {TARGET_MS} ms, brow EPE <= {TARGET_CLEAN} px clean, "
                        f"<= {TARGET_NOISY} px at sigma=2",
             "opencv": cv2.__version__, "threads": cv2.getNumThreads(), "summary": summ}
    emit(f"flow backends on {args.size}x{args.size} face crops (EPE px, ms per pair)", rows, args.json,
         extra={k: v for k, v in extra.items() if k != "summary"})
    emit("summary: brow raise (1 px) EPE and mean time", summ, None)
    if args.json:  # one JSON document with both tables
        import json
        from pathlib import Path
        doc = json.loads(Path(args.json).read_text())
        doc["summary"] = summ
        Path(args.json).write_text(json.dumps(doc, indent=2, default=str))
    return 0
