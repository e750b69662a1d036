"""What `facesleuth analyze` writes per video (edge.analyze runs the graph): the event tables, frames.csv,
the annotated video with each event's label over its interval, the timeline PNG and summary.md.

The event tables are `facesleuth events export`'s (edge.events.export: summary columns, then every field,
nested ones flattened to dotted CSV columns), each event carrying `video`: its fps and its onset, apex and
offset in seconds from the file's first frame. The drawing reuses `facesleuth view`'s pieces: the frame
picture is edge.debug_view.compose_view's (drawn while the graph runs), the event captions and the event
bar are edge.debug_strip's.
"""

from __future__ import annotations

import csv
import os
from collections import Counter
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge.debug_strip import CAPTION_H, FONT, KIND_COLOURS, Mark, kind_colour, mark_tile, timeline
from edge.debug_view import ROI_GROUPS, WHITE, roi_group
from edge.errors import FacesleuthError

GREY = (150, 150, 150)
K_ON_COLOUR = (0, 140, 255)
# The strip's timeline margins (edge.debug_strip.timeline), so the plots' spans line up with its bar.
LEFT, RIGHT = 60, 16


def _atomic(path: Path) -> Path:
    return path.with_name(f".{path.name}.part")


def write_events(events: list[dict[str, Any]], out_dir: Path) -> None:
    from edge.events.export import write_csv, write_jsonl

    for name, write in (("events.csv", write_csv), ("events.jsonl", write_jsonl)):
        tmp = _atomic(out_dir / name)
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            write(events, f)
        os.replace(tmp, out_dir / name)


def write_frames(rows: list[dict[str, Any]], columns: list[str], path: Path) -> None:
    tmp = _atomic(path)
    with open(tmp, "w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns, lineterminator="\n")
        w.writeheader()
        for row in rows:
            w.writerow({k: "" if v is None else v for k, v in row.items()})
    os.replace(tmp, path)


def marks(events: list[dict[str, Any]]) -> list[Mark]:
    return [Mark(str(ev.get("kind")), int(ev.get("track_id", -1)), int(ev["onset"]["frame"]),
                 int(ev["apex"]["frame"]), int(ev["offset"]["frame"]), i + 1) for i, ev in enumerate(events)]


def _label(ev: dict[str, Any], number: int) -> str:
    conf = ev.get("confidence")
    return f"#{number} {ev.get('label', ev.get('kind'))}" + (f" {conf:.2f}" if isinstance(conf, float) else "")


def annotate_video(part: Path, events: list[dict[str, Any]], fps: float, path: Path) -> int:
    """The graph's frame pictures (`part`) with each event over its interval: the strip's caption (kind,
    track) and border, and the label and confidence over the face. Returns the frames written."""
    ms = marks(events)
    cap = cv2.VideoCapture(str(part))
    writer, k = None, 0
    tmp = path.with_name(f".{path.stem}.part{path.suffix}")  # the writer picks its container by suffix
    try:
        while True:
            ok, view = cap.read()
            if not ok:
                break
            img = mark_tile(view, k, fps, ms)
            for m, ev in zip(ms, events, strict=True):
                if m.onset <= k <= m.offset and len(ev.get("box", [])) == 4:
                    x, y, _, _ = (int(v) for v in ev["box"])
                    text = _label(ev, m.number)
                    (tw, th), _ = cv2.getTextSize(text, FONT, 0.6, 2)
                    y = max(th + 4, y - 24) + CAPTION_H
                    cv2.rectangle(img, (x - 2, y - th - 4), (x + tw + 2, y + 4), (0, 0, 0), -1)
                    cv2.putText(img, text, (x, y), FONT, 0.6, kind_colour(m.kind), 2, cv2.LINE_AA)
            if writer is None:
                writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"MJPG"), fps, (img.shape[1], img.shape[0]))
                if not writer.isOpened():
                    raise FacesleuthError(f"cannot write {path} (no MJPG encoder)")
            writer.write(img)
            k += 1
    finally:
        cap.release()
        if writer is not None:
            writer.release()
    if writer is not None:
        os.replace(tmp, path)
    return k


def _main_track(rows: list[dict[str, Any]]) -> int | None:
    counts = Counter(r["track_id"] for r in rows if r.get("score") is not None)
    return counts.most_common(1)[0][0] if counts else None


def _series(rows: list[dict[str, Any]], key, n: int) -> np.ndarray:
    out = np.full(n, np.nan)
    for r in rows:
        v = key(r)
        if v is not None and 0 <= r["frame"] < n:  # several tracks on a frame: the largest
            out[r["frame"]] = v if np.isnan(out[r["frame"]]) else max(out[r["frame"]], v)
    return out


def _plot(img: np.ndarray, top: int, h: int, ys: np.ndarray, colour, y_max: float, x) -> None:
    pts = [(x(f), int(round(top + h - min(v, y_max) / y_max * h))) for f, v in enumerate(ys) if np.isfinite(v)]
    # a gap in the series (no flow yet, no face) breaks the line
    run: list[tuple[int, int]] = []
    last_f = -2
    for (px, py), f in zip(pts, [f for f, v in enumerate(ys) if np.isfinite(v)], strict=True):
        if f != last_f + 1 and len(run) > 1:
            cv2.polylines(img, [np.array(run, np.int32)], False, colour, 1, cv2.LINE_AA)
            run = []
        elif f != last_f + 1:
            run = []
        run.append((px, py))
        last_f = f
    if len(run) > 1:
        cv2.polylines(img, [np.array(run, np.int32)], False, colour, 1, cv2.LINE_AA)


def _text(img: np.ndarray, s: str, x: int, y: int, colour=WHITE, scale: float = 0.42) -> int:
    cv2.putText(img, s, (x, y), FONT, scale, colour, 1, cv2.LINE_AA)
    return x + cv2.getTextSize(s, FONT, scale, 1)[0][0]


def timeline_png(name: str, rows: list[dict[str, Any]], events: list[dict[str, Any]], fps: float, n_frames: int,
                 k_on: float, path: Path, width: int = 1280) -> None:
    """ROI motion (per ROI pair, the largest of its ROIs) and the spotting score over time (the largest over
    the tracks at each frame), each event a span in its kind's colour with its
    number and label, then the strip's event bar and a legend."""
    from edge.analyze import _roi_names

    span = max(n_frames - 1, 1)

    def x(f: float) -> int:
        return int(round(LEFT + f / span * (width - LEFT - RIGHT)))

    tid = _main_track(rows)
    mine = rows  # every track: a face tracked again under a new id keeps one curve
    groups: dict[str, list[str]] = {}
    for roi in _roi_names():
        groups.setdefault(roi_group(roi), []).append(roi)
    motion = {g: _series(mine, lambda r, rs=rs: max((r[f"motion_{q}"] for q in rs if r.get(f"motion_{q}") is not None),
                                                    default=None), n_frames)
              for g, rs in groups.items()}
    score = _series(mine, lambda r: r.get("score"), n_frames)
    head, mh, gap, sh = 46, 190, 26, 150
    img = np.full((head + mh + gap + sh + 8, width, 3), 20, np.uint8)
    tracks = len({r["track_id"] for r in rows})
    _text(img, f"{name}: {n_frames} frames at {fps:.3g} fps, {len(events)} event(s); "
               f"largest over {tracks} track(s)" if tid is not None else f"{name}: no face tracked", 8, 20,
          scale=0.5)
    panels = []
    for top, h, title in ((head, mh, "ROI motion, crop px"), (head + mh + gap, sh, "spotting score, noise units")):
        cv2.rectangle(img, (LEFT, top), (width - RIGHT, top + h), (45, 45, 45), -1)
        _text(img, title, LEFT + 4, top - 6, GREY)
        panels.append((top, h))
    for m, ev in zip(marks(events), events, strict=True):
        for top, h in panels:
            x0, x1 = x(m.onset), max(x(m.offset), x(m.onset) + 2)
            overlay = img.copy()
            cv2.rectangle(overlay, (x0, top), (x1, top + h), kind_colour(m.kind), -1)
            cv2.addWeighted(overlay, 0.35, img, 0.65, 0, img)
        _text(img, _label(ev, m.number), x(m.onset) + 3, panels[0][0] + 14)
    m_vals = np.concatenate([v[np.isfinite(v)] for v in motion.values()] + [np.zeros(1)])
    m_max = max(float(np.percentile(m_vals, 99.5)) * 1.1, 0.2)
    for g, ys in motion.items():
        _plot(img, panels[0][0], panels[0][1], ys, ROI_GROUPS[g], m_max, x)
    s_vals = score[np.isfinite(score)]
    s_max = max(float(np.percentile(s_vals, 99.5)) * 1.1 if s_vals.size else 0.0, 1.5 * k_on)
    top, h = panels[1]
    y_on = int(round(top + h - k_on / s_max * h))
    for xx in range(LEFT, width - RIGHT, 12):
        cv2.line(img, (xx, y_on), (min(xx + 6, width - RIGHT), y_on), K_ON_COLOUR, 1)
    _plot(img, top, h, score, WHITE, s_max, x)
    for (top, h), y_max in zip(panels, (m_max, s_max), strict=True):
        _text(img, f"{y_max:.2g}", 6, top + 12, GREY)
        _text(img, "0", 6, top + h, GREY)
    bar = timeline(width, n_frames, fps, marks(events), [])
    legend = np.full((34, width, 3), 20, np.uint8)
    xx = _text(legend, "ROI pairs:", 8, 22) + 8
    for g, colour in ROI_GROUPS.items():
        cv2.line(legend, (xx, 17), (xx + 18, 17), colour, 2)
        xx = _text(legend, g, xx + 22, 22) + 12
    cv2.line(legend, (xx, 17), (xx + 18, 17), WHITE, 2)
    xx = _text(legend, "score", xx + 22, 22) + 12
    cv2.line(legend, (xx, 17), (xx + 6, 17), K_ON_COLOUR, 1)
    cv2.line(legend, (xx + 12, 17), (xx + 18, 17), K_ON_COLOUR, 1)
    xx = _text(legend, f"onset threshold k_on = {k_on:g}", xx + 22, 22) + 16
    for kind, colour in KIND_COLOURS.items():
        cv2.rectangle(legend, (xx, 9), (xx + 14, 22), colour, -1)
        xx = _text(legend, kind, xx + 18, 22) + 12
    if not cv2.imwrite(str(path), np.vstack([img, bar, legend])):
        raise FacesleuthError(f"cannot write {path}")


def write_outputs(result, out_dir: Path, part: Path | None, rows: list[dict[str, Any]]) -> None:
    """Every output but summary.md (which also reports the time these took)."""
    from edge.analyze import frame_columns

    write_events(result.events, out_dir)
    write_frames(rows, frame_columns(), out_dir / "frames.csv")
    if part is not None:
        annotate_video(part, result.events, result.fps, out_dir / "annotated.avi")
    timeline_png(result.path.name, rows, result.events, result.fps, result.n_frames, result.k_on,
                 out_dir / "timeline.png")


def write_summary(result, out_dir: Path) -> None:
    ev = result.events
    lines = [f"# {result.path.name}", "",
             f"- video: `{result.path}`, {result.n_frames} frames at {result.fps:.3g} fps "
             f"({result.n_frames / result.fps:.1f} s), {result.tracks} face track(s)",
             f"- analysed in {result.wall_s:.1f} s ({result.n_frames / max(result.wall_s, 1e-9):.1f} frames/s) by the "
             "nodes of configs/video.yaml" + (f" with {', '.join(f'`{o}`' for o in result.params)}" if result.params
                                              else ""),
             f"- events: {len(ev)}" + (" (" + ", ".join(f"{n} {k}" for k, n in Counter(
                 str(e.get("label")) for e in ev).most_common()) + ")" if ev else ""), ""]
    if ev:
        lines += ["| # | kind | label | confidence | onset s | apex s | offset s | frames | track | ROIs |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for i, e in enumerate(ev, 1):
            v = e["video"]
            lines.append(f"| {i} | {e.get('kind')} | {e.get('label')} | {e.get('confidence')} | {v['onset_s']:.2f} | "
                         f"{v['apex_s']:.2f} | {v['offset_s']:.2f} | {e['onset']['frame']}-{e['offset']['frame']} | "
                         f"{e.get('track_id')} | {' '.join(e.get('rois', []))} |")
        lines.append("")
    lines += ["Files: `events.csv` and `events.jsonl` (every event field), `events.db` (the event log: "
              "`facesleuth events query events.db`), `frames.csv` (per frame and track), `annotated.avi`, "
              "`timeline.png`. Columns: docs/analyze.md.", ""]
    tmp = _atomic(out_dir / "summary.md")
    tmp.write_text("\n".join(lines), encoding="utf-8")
    os.replace(tmp, out_dir / "summary.md")
