"""`facesleuth bench spotting`: spotting F1 (MEGC rule) and false micro events vs a plain baseline.

Suite: synthetic videos (edge.data.synth.SyntheticVideo) at three apex amplitudes and two sensor noise
levels, micro-expressions among a blink, a head movement and a macro expression; plus distractor-only
videos (blinks, head movements, macro expressions). Every video runs through the library chain in one
process: face tracking + stabilisation (edge.face) -> flow against the frame `lag` back (edge.flow) ->
spotting (edge.spot).

Baseline, in the same run on the same frames: the crop fixed at the track's first alignment (no tracking,
no stabilisation), no rigid compensation, the mean flow magnitude of each ROI thresholded at
median + k * MAD of its curve over the clip; any ROI above -> moving; each moving run gives the interval
peak +- 0.15 s (SOFTNet's rule), micro when the run lasts <= 0.5 s.
"""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import dataclass, field

import cv2
import numpy as np

from edge.bench.report import emit
from edge.geometry import roi_boxes
from edge.progress import Progress
from edge.spot import FrameInfo, Interval, RoiFeatures, SpotParams, Spotter, f1, match

log = logging.getLogger(__name__)

AMPLITUDES = (1.5, 0.8, 0.5)   # apex displacement, px of the 128 crop
NOISE = (1.0, 3.0)             # sensor noise sigma, grey levels
BASELINE_K = 5.0               # median + k * MAD
LABELS = ("negative", "positive", "surprise")  # edge.data.emotions.COMPOSITE_CLASSES


@dataclass
class TrackSeq:
    """One track's per-frame record of a video (what spotting needs, cached for calibration)."""

    frames: list[int] = field(default_factory=list)
    t_ns: list[int] = field(default_factory=list)
    refs: list[int] = field(default_factory=list)
    feats: list[np.ndarray] = field(default_factory=list)
    rigid: list[float] = field(default_factory=list)
    info: list[FrameInfo] = field(default_factory=list)
    base: list[np.ndarray] = field(default_factory=list)  # baseline: (R,) mean |flow| per ROI, fixed crop
    ended: bool = False


@dataclass
class Clip:
    """A video's cached chain output and its ground truth."""

    fps: float
    n_frames: int
    truth: list[dict]
    tracks: dict[int, TrackSeq]
    roi_of: np.ndarray
    lag: int


def make_video(amplitude: float | None, noise: float, seed: int, duration_s: float, fps: float = 30.0,
               distractors_only: bool = False, preset: str = "edge60"):
    """A SyntheticVideo: micro-expressions every ~2 s at `amplitude` among one blink, one head movement
    and one macro expression (or only distractors)."""
    from edge.data.synth import SyntheticVideo

    rng = np.random.default_rng(seed)
    script: list[dict] = []
    t = 1.5  # the spotter's noise model needs a second of history
    kinds = ["blink", "head", "macro"]
    i = 0
    while t < duration_s - 1.2:
        if distractors_only:
            kind = kinds[i % 3]
        else:
            kind = kinds[i // 3 % 3] if i % 3 == 2 else "micro"
        entry: dict = {"t": round(t, 3), "kind": kind}
        if kind == "micro":  # the three classes in turn: different action units, different ROIs
            entry.update(amplitude_px=amplitude, label=LABELS[i % len(LABELS)])
        script.append(entry)
        t += {"micro": 1.6, "blink": 1.4, "head": 2.6, "macro": 4.0}[kind] + rng.uniform(0, 0.6)
        i += 1
    return SyntheticVideo(preset, seed=seed, duration_s=duration_s, fps=fps, script=script,
                          overrides={"noise_sigma": noise, "head_turns_per_min": 0.0, "blinks_per_min": 0.0},
                          random_events=False)


def extract(video, lag: int = 3, backend: str = "dis", baseline: bool = True, progress: Progress | None = None
            ) -> Clip:
    """Run face -> flow -> ROI features over every frame of `video` (anything with fps, truth, iteration)."""
    from edge.face import FaceTracker
    from edge.flow import LagBuffer, create_flow

    tracker = FaceTracker(detector="haar", landmarks="eyes")
    flow = create_flow(backend)
    lags, base_lags = LagBuffer(lag), LagBuffer(lag)
    tracks: dict[int, TrackSeq] = {}
    fixed: dict[int, np.ndarray] = {}  # baseline: each track's first alignment, kept for ever
    layout: RoiFeatures | None = None
    boxes = None
    n = 0
    for k, frame in enumerate(video):
        n += 1
        t_ns = int(round(k / video.fps * 1e9))
        grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY) if frame.ndim == 3 else frame
        faces = tracker.update(grey)
        for i, tid in enumerate(faces.track_ids.tolist()):
            crop = faces.crops[i]
            if layout is None:
                layout = RoiFeatures(crop.shape[0])
                boxes = list(roi_boxes(crop.shape[0]).values())
            seq = tracks.setdefault(tid, TrackSeq())
            M = faces.transforms[i].astype(np.float64)
            ref = lags.push(tid, k, crop)
            if baseline:
                M0 = fixed.setdefault(tid, M)
                bcrop = cv2.warpAffine(grey, M0, crop.shape[::-1], flags=cv2.INTER_LINEAR)
                bref = base_lags.push(tid, k, bcrop)
            if ref is None:
                continue
            uv = flow.calc(ref[1], crop).transpose(2, 0, 1)
            feats, rigid = layout(uv)
            seq.frames.append(k)
            seq.t_ns.append(t_ns)
            seq.refs.append(ref[0])
            seq.feats.append(feats)
            seq.rigid.append(rigid)
            motion = faces.head_motion[i] if i < len(faces.head_motion) else 0.0
            seq.info.append(FrameInfo.from_transform(motion, faces.residual[i], M))
            if baseline and bref is not None:
                mag = np.hypot(*flow.calc(bref[1], bcrop).transpose(2, 0, 1))
                seq.base.append(np.array([mag[y0:y1, x0:x1].mean() for x0, y0, x1, y1 in boxes]))
            elif baseline:
                seq.base.append(np.zeros(len(boxes)))
        for tid in faces.ended:
            if tid in tracks:
                tracks[tid].ended = True
        if progress is not None:
            progress.update(1)
    roi_of = layout.roi_of if layout is not None else np.zeros(0, int)
    return Clip(float(video.fps), n, list(video.truth), tracks, roi_of, lag)


def spot_clip(clip: Clip, params: SpotParams) -> list[Interval]:
    """Replay a clip's cached features through the spotter (cheap: calibration calls this many times)."""
    sp = Spotter(params)
    out: list[Interval] = []
    for tid, seq in clip.tracks.items():
        for j, frame in enumerate(seq.frames):
            sp.note_frame(frame, tid, seq.info[j])
            out += sp.push_features(frame, seq.t_ns[j], seq.t_ns[j], tid, seq.refs[j], seq.feats[j],
                                    seq.rigid[j], clip.roi_of)
        out += sp.end_track(tid, "track lost") if seq.ended else []
    out += sp.finish()
    return out


def baseline_clip(clip: Clip, k: float = BASELINE_K, micro_max_s: float = 0.5, half_s: float = 0.15
                  ) -> list[Interval]:
    """The plain baseline: per-ROI mean |flow| on the fixed crop above median + k * MAD marks moving
    frames; each moving run is an interval centred on its peak, +- half_s (the SOFTNet rule: peak +- half
    a typical micro-expression), micro when the run lasts <= micro_max_s."""
    out: list[Interval] = []
    h = max(1, round(half_s * clip.fps))
    for tid, seq in clip.tracks.items():
        if not seq.base:
            continue
        m = np.stack(seq.base)  # (T, R)
        med = np.median(m, 0)
        mad = 1.4826 * np.median(np.abs(m - med), 0) + 1e-6
        excess = ((m - med) / mad).max(1)
        moving = excess > k
        j = 0
        while j < len(moving):
            if not moving[j]:
                j += 1
                continue
            a = j
            while j < len(moving) and moving[j]:
                j += 1
            peak = seq.frames[a + int(np.argmax(excess[a:j]))]
            dur = (seq.frames[j - 1] - seq.frames[a] + 1) / clip.fps
            kind = "micro" if dur <= micro_max_s else "macro"
            out.append(Interval(tid, kind, peak - h, peak, peak + h, 0, 0, 0))
    return out


def score(clips: list[Clip], preds: list[list[Interval]]) -> dict[str, float]:
    """Micro spotting under the MEGC rule over a set of clips: TP, FP, FN, F1, false micro per minute."""
    tp = fp = fn = 0
    minutes = 0.0
    for clip, pred in zip(clips, preds, strict=True):
        truth = [(t["onset"], t["offset"]) for t in clip.truth if t["kind"] == "micro"]
        got = [(p.onset, p.offset) for p in pred if p.kind == "micro" and not p.discarded]
        a, b, c = match(got, truth)
        tp, fp, fn = tp + a, fp + b, fn + c
        minutes += clip.n_frames / clip.fps / 60
    return {"tp": tp, "fp": fp, "fn": fn, "f1": f1(tp, fp, fn), "fp_per_min": fp / minutes if minutes else 0.0}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="fewer, shorter clips (about a minute)")
    parser.add_argument("--params", metavar="FILE", help="spot params JSON (from `facesleuth calib spot`)")
    parser.add_argument("--lag", type=int, default=3, help="flow lag, frames (default 3)")
    parser.add_argument("--seed", type=int, default=0)


def main(args: argparse.Namespace) -> int:
    params = SpotParams.load(args.params) if args.params else SpotParams()
    clips_per, dur, n_distr = (1, 12.0, 1) if args.quick else (2, 16.0, 2)
    conds = [(a, s) for s in NOISE for a in AMPLITUDES]
    total_frames = int(round(30 * dur)) * (len(conds) * clips_per + n_distr * len(NOISE))
    rows = []
    t0 = time.monotonic()
    with Progress(total_frames, "bench spotting") as prog:
        suites: list[tuple[str, float | None, float, list[Clip]]] = []
        for a, s in conds:
            clips = [extract(make_video(a, s, args.seed + 100 * c, dur), args.lag, progress=prog)
                     for c in range(clips_per)]
            suites.append(("micro+distractors", a, s, clips))
        for s in NOISE:
            clips = [extract(make_video(None, s, args.seed + 7 + 100 * c, dur, distractors_only=True), args.lag,
                             progress=prog) for c in range(n_distr)]
            suites.append(("distractors only", None, s, clips))
    for name, a, s, clips in suites:
        ours = score(clips, [spot_clip(c, params) for c in clips])
        base = score(clips, [baseline_clip(c) for c in clips])
        n_micro = sum(1 for c in clips for t in c.truth if t["kind"] == "micro")
        rows.append({"suite": name, "amp_px": a, "noise": s, "micro": n_micro,
                     "F1": round(ours["f1"], 3), "FP/min": round(ours["fp_per_min"], 2),
                     "TP/FP/FN": f"{ours['tp']}/{ours['fp']}/{ours['fn']}",
                     "base F1": round(base["f1"], 3), "base FP/min": round(base["fp_per_min"], 2),
                     "base TP/FP/FN": f"{base['tp']}/{base['fp']}/{base['fn']}"})
    emit("spotting: MEGC rule (IoU >= 0.5), micro intervals; baseline = fixed crop, no rigid "
         f"compensation, median + {BASELINE_K:g} MAD", rows, args.json,
         extra={"params": params.__dict__, "lag": args.lag, "seconds": round(time.monotonic() - t0, 1),
                "label accuracy": "not measured here (classifier: `facesleuth bench pipeline`)"})
    return 0
