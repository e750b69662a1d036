"""`facesleuth bench real`: the spotter on annotated real footage (edge.data.real): false micro events on
blinks, speech and occlusion, and annotated blinks recognised as blinks.

Each clip's video is decoded with OpenCV (frames in decode order: frame k is annotation frame k, at k / fps
s on the media clock; a clip that is a segment of its video reads only that segment, counted from 0) and run once through the product's own face, flow and spot nodes in one process
(edge.bench.clips.extract, keeping the aligned crops); the spotter's recorded input is then replayed with
the params (spot_clip), so `--params` costs no second pass over the video.

Scoring, per clip (frame ranges inclusive at both ends, as the annotations are):
- a "micro event" is a spotted interval of kind micro that is kept (not discarded): what the pipeline
  publishes as a micro-expression;
- a micro event "falls on" an annotated span when their frame ranges overlap; each micro event is counted
  once under every kind it falls on (blink, speech, occlusion, head_turn, expression), and under "none"
  when it falls on no span. One on a blink, speech or occlusion (the `on B/S/O` column: at least one of
  the three) or a head turn is false by definition; one on an expression is reported apart: the
  expressions annotated so far are posed and held for a second or more, not micro-expressions;
- micro events per minute: micro events over the clip's decoded length (frames / fps);
- blink recall: an annotated blink is recognised when a kept spotted interval of kind blink overlaps it.
  Blink spans whose note starts "not a spontaneous blink" (sustained closures: eyes shut while crying,
  closed at a clip's end) are left out; spans marked UNSURE count;
- "of them flagged": micro events on a blink, speech or occlusion whose own `context` says talking, a blink
  nearby or an occluded ROI (what a subscriber can filter on); "blink iv off": kept blink intervals on
  no annotated blink (false blinks);
- macro and blink intervals are the kept ones of those kinds; discarded intervals (any kind) are counted
  by the reason's leading words (head motion, rigid motion, residual, dropped frames, in progress at
  start, too short, too weak, too large, talking, occluded, the blink's motion, track lost).
Rows are per clip, then one total row for the tuning clips and one for the held-out clips: the two sets
are never pooled into one number (held-out clips take no part in tuning; docs/real-footage.md).

Contact sheets (`--out`, one PNG per clip): a row per micro event, then a row per kept blink interval:
the aligned face crops from onset to offset (evenly thinned past MAX_TILES, the apex always shown), the
apex crop in a red border, and the apex - onset difference of the crops (mid grey = no change, scaled to
+-S grey levels as written under it), labelled with the frames, kind, score, ROIs and the annotated kinds
the interval falls on; then a row per annotated spontaneous blink that was not recognised (its crops, the
middle frame marked, and what the spotter made of those frames), to see why.
"""

from __future__ import annotations

import argparse
import logging
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge.bench.clips import Clip, VideoFile, extract, spot_clip
from edge.bench.report import emit
from edge.data.real import KINDS, Event, RealClip, load_clips
from edge.errors import UserError
from edge.perception.spot import Interval, SpotParams
from edge.progress import Progress
from edge.runtime.params import bounded

log = logging.getLogger(__name__)

FALSE_KINDS = ("blink", "speech", "occlusion")  # the target: no micro event on any of these
NOT_SPONTANEOUS = "not a spontaneous blink"
MAX_TILES = 24          # crops per contact-sheet row; longer intervals are thinned evenly
TILE = 128              # px: the aligned crop's own size, shown 1:1
DISCARD_KEYS = (        # (substring of a discard reason, its short name)
    ("head motion", "head motion"), ("rigid motion", "rigid motion"), ("stabilisation residual", "residual"),
    ("dropped", "dropped frames"), ("in progress", "in progress at start"), ("micro_min_s", "too short"),
    ("min_intensity_px", "too weak"), ("micro_max_px", "too large"), ("talking:", "talking"),
    ("occluded:", "occluded"), ("blink:", "blink's motion"),
)


def overlaps(a0: int, a1: int, b0: int, b1: int) -> bool:
    """Whether frame ranges a0..a1 and b0..b1 (inclusive) share a frame."""
    return a0 <= b1 and b0 <= a1


def falls_on(iv: Interval, events: tuple[Event, ...]) -> list[str]:
    """The annotated kinds (KINDS order) whose spans `iv` overlaps, or ["none"]."""
    kinds = {e.kind for e in events if overlaps(iv.onset, iv.offset, e.start, e.end)}
    return [k for k in KINDS if k in kinds] or ["none"]


def discard_key(reason: str) -> str:
    """A discard reason's short name (DISCARD_KEYS), else the reason with its numbers as '#'."""
    for needle, name in DISCARD_KEYS:
        if needle in reason:
            return name
    return re.sub(r"\d+(\.\d+)?", "#", reason)


def score_clip(real: RealClip, n_frames: int, intervals: list[Interval]) -> dict[str, Any]:
    """One clip's counts (module docstring) and the details behind them: micro events with the kinds they
    fall on, annotated blinks with whether they were recognised, discarded intervals."""
    kept = [iv for iv in intervals if not iv.discarded]
    micro = [iv for iv in kept if iv.kind == "micro"]
    blinks_iv = [iv for iv in kept if iv.kind == "blink"]
    on = [falls_on(iv, real.events) for iv in micro]
    blinks = []
    for e in real.spans("blink"):
        excluded = e.note.startswith(NOT_SPONTANEOUS)
        hit = any(overlaps(iv.onset, iv.offset, e.start, e.end) for iv in blinks_iv)
        blinks.append({"start": e.start, "end": e.end, "note": e.note, "excluded": excluded,
                       "recognised": hit})
    counted = [b for b in blinks if not b["excluded"]]
    return {
        "minutes": n_frames / real.fps / 60,
        "micro": len(micro),
        "on": {k: sum(k in o for o in on) for k in (*KINDS, "none")},
        "on_false": sum(any(k in o for k in FALSE_KINDS) for o in on),
        # ... of which the event's own context says what went on (a subscriber can filter them out)
        "on_false_flagged": sum(any(k in o for k in FALSE_KINDS) and _flagged(iv) for iv, o in zip(micro, on, strict=True)),
        "blinks": len(counted), "recognised": sum(b["recognised"] for b in counted),
        "macro": sum(iv.kind == "macro" for iv in kept), "blink_iv": len(blinks_iv),
        "blink_iv_off": sum(not any(overlaps(iv.onset, iv.offset, e.start, e.end) for e in real.spans("blink"))
                            for iv in blinks_iv),
        "discarded": Counter(discard_key(iv.discarded) for iv in intervals if iv.discarded),
        "micro_events": [_iv_doc(iv) | {"falls_on": o} for iv, o in zip(micro, on, strict=True)],
        "blink_spans": blinks,
        "blink_intervals": [_iv_doc(iv) | {"falls_on": falls_on(iv, real.events)} for iv in blinks_iv],
        "macro_intervals": [_iv_doc(iv) | {"falls_on": falls_on(iv, real.events)} for iv in kept
                            if iv.kind == "macro"],
        "discarded_intervals": [_iv_doc(iv) | {"reason": iv.discarded} for iv in intervals if iv.discarded],
    }


def _flagged(iv: Interval) -> bool:
    """Whether an interval's context flags talking, a blink nearby or an occluded ROI."""
    c = iv.context
    return bool(c.get("talking") or c.get("blink_near") or c.get("occluded"))


def _iv_doc(iv: Interval) -> dict[str, Any]:
    return {"track": iv.track_id, "kind": iv.kind, "onset": iv.onset, "apex": iv.apex, "offset": iv.offset,
            "score": round(iv.score, 2), "intensity_px": round(iv.intensity, 3), "rois": list(iv.rois),
            "context": iv.context}


def _row(name: str, held_out: bool, frames: int, s: dict[str, Any]) -> dict[str, Any]:
    on = s["on"]
    return {"clip": name, "set": "held out" if held_out else "tuning", "frames": frames,
            "s": round(s["minutes"] * 60, 1), "micro": s["micro"],
            "micro/min": round(s["micro"] / s["minutes"], 2) if s["minutes"] else 0.0,
            "on B/S/O": s["on_false"], "of them flagged": s["on_false_flagged"], "on blink": on["blink"], "on speech": on["speech"],
            "on occl": on["occlusion"], "on head turn": on["head_turn"], "on expr": on["expression"],
            "on none": on["none"],
            "blinks recog": f"{s['recognised']}/{s['blinks']}" if s["blinks"] else "-",
            "macro": s["macro"], "blink iv": s["blink_iv"], "blink iv off": s["blink_iv_off"],
            "discarded": ", ".join(f"{k} {n}" for k, n in sorted(s["discarded"].items())) or "-"}


def total(scores: list[dict[str, Any]]) -> dict[str, Any]:
    """The counts of several clips added up (per-minute rates and recall follow from the sums)."""
    out: dict[str, Any] = {"minutes": 0.0, "micro": 0, "on": Counter(), "on_false": 0, "on_false_flagged": 0,
                           "blinks": 0,
                           "recognised": 0, "macro": 0, "blink_iv": 0, "blink_iv_off": 0, "discarded": Counter()}
    for s in scores:
        for k in ("minutes", "micro", "on_false", "on_false_flagged", "blinks", "recognised", "macro", "blink_iv",
                  "blink_iv_off"):
            out[k] += s[k]
        out["on"].update(s["on"])
        out["discarded"].update(s["discarded"])
    out["on"] = {k: out["on"].get(k, 0) for k in (*KINDS, "none")}
    return out


def targets(s: dict[str, Any]) -> str:
    """The issue's targets against one set's totals, in one line."""
    rate = s["micro"] / s["minutes"] if s["minutes"] else 0.0
    recall = s["recognised"] / s["blinks"] if s["blinks"] else float("nan")
    flagged = f", {s['on_false_flagged']} of them flagged by their context" if s["on_false"] else ""
    parts = [f"micro on blink/speech/occlusion {s['on_false']} (target 0: {'met' if s['on_false'] == 0 else 'not met'}"
             f"{flagged})",
             f"micro/min {rate:.2f} (target <= 1: {'met' if rate <= 1 else 'not met'})"]
    if s["blinks"]:
        parts.append(f"blink recall {recall:.2f} (target >= 0.9: {'met' if recall >= 0.9 else 'not met'})")
    else:
        parts.append("blink recall: no annotated spontaneous blink")
    return "; ".join(parts)


# --- contact sheets -----------------------------------------------------------------------------------

FONT = cv2.FONT_HERSHEY_SIMPLEX
INK, DIM, APEX = (20, 20, 20), (90, 90, 90), (0, 0, 230)   # BGR
PAPER = (250, 250, 250)


def _text(img: np.ndarray, s: str, x: int, y: int, scale: float = 0.45, color=INK, bold: bool = False) -> None:
    cv2.putText(img, s, (x, y), FONT, scale, color, 2 if bold else 1, cv2.LINE_AA)


def _tile_frames(onset: int, apex: int, offset: int, have: list[int]) -> list[int]:
    """The crop frames to show for onset..offset: those kept, thinned evenly to MAX_TILES, apex kept."""
    frames = [f for f in have if onset <= f <= offset]
    if len(frames) > MAX_TILES:
        pick = {frames[int(round(i))] for i in np.linspace(0, len(frames) - 1, MAX_TILES - 1)}
        frames = sorted(pick | {min(frames, key=lambda f: abs(f - apex))})
    return frames


def _difference(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, int]:
    """b - a as a grey image: mid grey = 0, +-S grey levels full scale; (image, S)."""
    d = b.astype(np.float32) - a.astype(np.float32)
    s = max(2, int(np.ceil(np.percentile(np.abs(d), 99.5))))
    return np.clip(128 + d * (127 / s), 0, 255).astype(np.uint8), s


def _grey(crop: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY) if crop.ndim == 3 else crop


def _row_image(lines: tuple[str, str], alarm: bool, onset: int, apex: int, offset: int,
               crops: dict[int, np.ndarray], width: int, apex_name: str = "apex") -> np.ndarray:
    """A two-line label, then the crops onset..offset with frame numbers (the one nearest `apex` in a red
    border) and the apex - onset difference; the second line in red when `alarm`."""
    frames = _tile_frames(onset, apex, offset, sorted(crops))
    label_h, num_h, gap = 44, 18, 4
    row = np.full((label_h + TILE + num_h, width, 3), PAPER, np.uint8)
    _text(row, lines[0], 6, 17, bold=True)
    _text(row, lines[1], 6, 36, color=APEX if alarm else DIM)
    if not frames:
        _text(row, "(no face crops kept for these frames)", 6, label_h + TILE // 2)
        return row
    peak = min(frames, key=lambda f: abs(f - apex))
    x = 6
    for f in frames:
        tile = cv2.cvtColor(_grey(crops[f]), cv2.COLOR_GRAY2BGR)
        if f == peak:
            cv2.rectangle(tile, (0, 0), (TILE - 1, TILE - 1), APEX, 4)
        row[label_h:label_h + TILE, x:x + TILE] = tile
        _text(row, str(f) + (f" {apex_name}" if f == peak else ""), x + 2, label_h + TILE + 14, 0.4,
              APEX if f == peak else DIM)
        x += TILE + gap
    x += 2 * gap
    diff, s = _difference(_grey(crops[frames[0]]), _grey(crops[peak]))
    row[label_h:label_h + TILE, x:x + TILE] = cv2.cvtColor(diff, cv2.COLOR_GRAY2BGR)
    _text(row, f"{apex_name}-{'onset' if apex_name == 'apex' else 'start'} +-{s}", x, label_h + TILE + 14, 0.4)
    return row


def _interval_row(iv: Interval, on: list[str], crops: dict[int, np.ndarray], width: int) -> np.ndarray:
    dur = (iv.t_offset_ns - iv.t_onset_ns) * 1e-9
    lines = (f"{iv.kind}  frames {iv.onset}-{iv.offset} ({dur * 1000:.0f} ms), apex {iv.apex}, track "
             f"{iv.track_id}  score {iv.score:.1f}  peak {iv.intensity:.2f} crop px",
             f"ROIs: {', '.join(iv.rois) or '-'}    falls on annotated: {', '.join(on)}")
    alarm = iv.kind == "micro" and any(k in on for k in FALSE_KINDS)
    return _row_image(lines, alarm, iv.onset, iv.apex, iv.offset, crops, width)


def _missed_row(e: Event, intervals: list[Interval], crops_of: dict[int, dict[int, np.ndarray]],
                width: int) -> np.ndarray:
    """An annotated blink no blink interval overlaps: its crops (of the track that saw most of it), the
    middle frame marked, and what the spotter made of those frames."""
    tid = max(crops_of, key=lambda t: sum(e.start <= f <= e.end for f in crops_of[t]), default=None)
    seen = [f"{iv.kind} {iv.onset}-{iv.offset}" + (f" discarded: {discard_key(iv.discarded)}" if iv.discarded
                                                   else "")
            for iv in intervals if overlaps(iv.onset, iv.offset, e.start, e.end)]
    lines = (f"annotated blink {e.start}-{e.end}, not recognised" + (f"  ({e.note[:90]})" if e.note else ""),
             "spotted there: " + ("; ".join(seen) if seen else "nothing"))
    mid = (e.start + e.end) // 2
    return _row_image(lines, False, e.start, mid, e.end, crops_of.get(tid, {}) if tid is not None else {},
                      width, "mid")


def _section(title: str, rows: list[np.ndarray], width: int) -> list[np.ndarray]:
    bar = np.full((30, width, 3), (225, 225, 225), np.uint8)
    _text(bar, title, 6, 21, 0.6, bold=True)
    if not rows:
        none = np.full((28, width, 3), PAPER, np.uint8)
        _text(none, "(none)", 6, 19, color=DIM)
        return [bar, none]
    out = [bar]
    for r in rows:
        out += [r, np.full((2, width, 3), (200, 200, 200), np.uint8)]
    return out


def contact_sheet(real: RealClip, clip: Clip, intervals: list[Interval], path: Path) -> None:
    """Write `real`'s contact sheet (module docstring) as a PNG to `path`."""
    kept = [iv for iv in intervals if not iv.discarded]
    micro = [iv for iv in kept if iv.kind == "micro"]
    blinks = [iv for iv in kept if iv.kind == "blink"]
    missed = [e for e in real.spans("blink") if not e.note.startswith(NOT_SPONTANEOUS)
              and not any(overlaps(iv.onset, iv.offset, e.start, e.end) for iv in blinks)]
    crops_of = {tid: seq.crops for tid, seq in clip.tracks.items()}
    spans = [(iv.onset, iv.apex, iv.offset) for iv in micro + blinks] + [(e.start, e.start, e.end) for e in missed]
    n = max((len(_tile_frames(a, b, c, range(a, c + 1))) for a, b, c in spans), default=0)
    width = max(1000, 6 + (n + 1) * (TILE + 4) + 16)
    head = np.full((104, width, 3), PAPER, np.uint8)
    counts = Counter(e.kind for e in real.events)
    _text(head, f"{real.name} ({'held out' if real.held_out else 'tuning'})  {clip.n_frames} frames at "
                f"{real.fps:g} fps ({clip.n_frames / real.fps:.1f} s)", 6, 24, 0.7, bold=True)
    _text(head, "annotated: " + ", ".join(f"{counts[k]} {k}" for k in KINDS)
          + f" ({len(real.spans('blink')) - sum(e.note.startswith(NOT_SPONTANEOUS) for e in real.spans('blink'))}"
          " spontaneous)", 6, 48)
    _text(head, "each row: the aligned face crops from onset to offset, the apex in a red border; a red label: "
                "a false micro event (on a blink, speech or occlusion)", 6, 70, color=DIM)
    _text(head, "last tile: apex - onset difference, mid grey = 0, black / white = -S / +S grey levels (+-S written "
                "under it)", 6, 90, color=DIM)
    parts = [head]
    parts += _section(f"micro events: {len(micro)}",
                      [_interval_row(iv, falls_on(iv, real.events), crops_of.get(iv.track_id, {}), width)
                       for iv in micro], width)
    parts += _section(f"blink intervals: {len(blinks)}",
                      [_interval_row(iv, falls_on(iv, real.events), crops_of.get(iv.track_id, {}), width)
                       for iv in blinks], width)
    if missed:
        parts += _section(f"annotated blinks not recognised: {len(missed)}",
                          [_missed_row(e, intervals, crops_of, width) for e in missed], width)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), np.vstack(parts)):
        raise UserError(f"cannot write {path}")


# --- command --------------------------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--clips", metavar="NAME,...", help="only these clips (default: all annotated clips)")
    sel = parser.add_mutually_exclusive_group()
    sel.add_argument("--held-out-only", action="store_true", help="only the held-out clips")
    sel.add_argument("--tuning-only", action="store_true", help="only the tuning clips")
    parser.add_argument("--out", default="runs/bench-real", metavar="DIR",
                        help="contact sheets, one PNG per clip (default runs/bench-real)")
    parser.add_argument("--params", metavar="FILE", help="spot params JSON (from `facesleuth calib spot`)")
    parser.add_argument("--dir", metavar="DIR", help="where the fetched videos are (default $FACESLEUTH_REAL_DIR, "
                                                     "else ~/.cache/facesleuth/real)")
    parser.add_argument("--lag", type=bounded(int, 1), default=3, help="flow lag, frames (default 3)")
    parser.add_argument("--backend", default="auto", help="flow backend, as the flow node's (default auto)")


def select(clips: list[RealClip], names: str | None, held_out_only: bool, tuning_only: bool) -> list[RealClip]:
    """The clips asked for (UserError naming an unknown clip)."""
    if names:
        wanted = [n.strip() for n in names.split(",") if n.strip()]
        known = {c.name for c in clips}
        unknown = [n for n in wanted if n not in known]
        if unknown:
            raise UserError(f"unknown clip(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        clips = [c for c in clips if c.name in wanted]
    if held_out_only:
        clips = [c for c in clips if c.held_out]
    if tuning_only:
        clips = [c for c in clips if not c.held_out]
    if not clips:
        raise UserError("no clip selected")
    return clips


def main(args: argparse.Namespace) -> int:
    params = SpotParams.load(args.params) if args.params else SpotParams()
    clips = select(load_clips(args.dir), args.clips, args.held_out_only, args.tuning_only)
    out = Path(args.out)
    t0 = time.monotonic()
    scored: list[tuple[RealClip, int, dict[str, Any]]] = []
    with Progress(sum(c.n_frames for c in clips), "bench real") as prog:
        for real in clips:
            clip = extract(VideoFile(real.path, real.fps, frames=real.frames), args.lag, args.backend, baseline=False,
                           progress=prog, keep_crops=True)
            if clip.n_frames != real.n_frames:
                log.warning("%s: %d frames decoded, the annotation says %d", real.name, clip.n_frames,
                            real.n_frames)
            intervals = spot_clip(clip, params)
            scored.append((real, clip.n_frames, score_clip(real, clip.n_frames, intervals)))
            contact_sheet(real, clip, intervals, out / f"{real.name}.png")
    rows, extra, details = [], {}, {}
    for held, label in ((False, "tuning"), (True, "held out")):
        part = [(r, n, s) for r, n, s in scored if r.held_out == held]
        if not part:
            continue
        rows += [_row(r.name, held, n, s) for r, n, s in part]
        tot = total([s for _, _, s in part])
        rows.append(_row(f"TOTAL {label} ({len(part)})", held, sum(n for _, n, _ in part), tot))
        extra[f"targets, {label}"] = targets(tot)
    for r, _, s in scored:
        details[r.name] = {k: s[k] for k in ("micro_events", "blink_spans", "blink_intervals", "macro_intervals",
                                             "discarded_intervals")}
    emit("spotting on annotated real footage: micro events (kept micro intervals) and the annotated spans "
         "they overlap; blinks recog = annotated spontaneous blinks overlapped by a kept blink interval",
         rows, args.json, extra={**extra, "contact sheets": str(out), "seconds": round(time.monotonic() - t0, 1)},
         json_extra={"params": params.__dict__, "lag": args.lag, "flow": args.backend, "clips": details})
    return 0
